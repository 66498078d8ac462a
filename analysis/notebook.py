"""``python -m analysis notebook EXPERIMENT``: runs ``analysis/trials.ipynb`` headless on one
experiment and writes the executed copy (outputs and plots inline) beside the experiment's
other analysis files, never into the source tree."""

from __future__ import annotations

import os
from pathlib import Path

from tune_eegpt.atomic_write import atomic_write_text

NOTEBOOK = Path(__file__).with_name("trials.ipynb")
EXECUTED = "trials.ipynb"


class NotebookFailed(RuntimeError):
    """A cell raised; the executed copy up to that cell has been written."""


def run_notebook(
    experiment: str, out: Path, threshold: float | None = None, timeout_s: int = 3600
) -> Path:
    """Executes the notebook with ``experiment`` as its EXPERIMENT, ``out`` as its output
    folder and ``threshold`` (None: the search's); returns the executed copy's path
    (``out/trials.ipynb``). Raises NotebookFailed naming the error of the cell that failed
    (the copy up to there is written all the same)."""
    try:
        import nbclient
        import nbformat
    except ImportError as exc:
        raise NotebookFailed(
            f"running the notebook needs the dev extra ({exc.name} is not installed): "
            "bash scripts/setup.sh, or .venv/bin/pip install -e '.[dev]'"
        ) from None
    nb = nbformat.read(NOTEBOOK, as_version=4)
    out.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "TUNE_EEGPT_EXPERIMENT": experiment,
        "TUNE_EEGPT_ANALYSIS_OUT": str(out.resolve()),
        "TUNE_EEGPT_THRESHOLD": "" if threshold is None else repr(threshold),
    }
    client = nbclient.NotebookClient(
        nb,
        timeout=timeout_s,
        kernel_name="python3",
        resources={"metadata": {"path": str(NOTEBOOK.parent)}},
    )
    executed = out / EXECUTED
    try:
        client.execute(env=env)
    except nbclient.exceptions.CellExecutionError as exc:
        atomic_write_text(executed, nbformat.writes(nb))
        raise NotebookFailed(
            f"the notebook stopped at a cell that raised {exc.ename}: {exc.evalue} "
            f"(the executed copy up to there: {executed})"
        ) from None
    atomic_write_text(executed, nbformat.writes(nb))
    return executed
