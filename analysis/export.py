"""A chosen configuration -> a full run config YAML, with the dry run of its schedule beside it."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pandas as pd

from analysis.load import Experiment
from tune_eegpt.config import RunConfig
from tune_eegpt.schedule import schedule_summary_lines
from tune_eegpt.training.onecycle import dry_run
from tune_eegpt.training.schedule_plot import plot_schedule


def base_config(experiment: Experiment) -> RunConfig:
    """The search's base run config (from tune_eegpt_search.json)."""
    raw = experiment.info.get("base_config")
    if raw is None:
        raise FileNotFoundError(
            f"{experiment.path} has no tune_eegpt_search.json with the base run config "
            "(the search writes it on local storage); it is needed to rebuild a trial's run"
        )
    return RunConfig.from_dict(raw, source=f"{experiment.path}: base_config")


def configuration_of(row: pd.Series | dict[str, Any], params: list[str]) -> dict[str, Any]:
    """The searched hyperparameters of a table row, as plain Python values."""
    values = {}
    for p in params:
        v = row[p]
        values[p] = v.item() if hasattr(v, "item") else v
    return values


def run_config_for(
    experiment: Experiment, config: dict[str, Any], seed: int | None = None
) -> RunConfig:
    """The full run config a trial with hyperparameters ``config`` ran (with ``seed``
    as ``train.seed`` if given): the base config with them put in."""
    overrides = dict(config)
    if seed is not None:
        overrides["seed"] = int(seed)
    return base_config(experiment).with_overrides(overrides, source="chosen configuration")


def train_windows(experiment: Experiment) -> int | None:
    """Training windows per epoch, read off the results (samples_seen / epoch)."""
    h = experiment.history.dropna(subset=["samples_seen", "epoch"])
    h = h[(h["epoch"] > 0) & (h["epoch"] == h["epoch"].round()) & (h["diverged"] != 1)]
    if h.empty:
        return None
    return int(round(float((h["samples_seen"] / h["epoch"]).median())))


def batches_per_epoch(cfg: RunConfig, n_train: int) -> int:
    return math.ceil(n_train / cfg.train.batch_size)


def export_config(
    cfg: RunConfig, out_dir: str | Path, name: str, n_train: int, note: str = ""
) -> dict[str, Path]:
    """Writes ``<name>.yaml`` (a full RunConfig that ``python -m tune_eegpt.train --config``
    runs as is), ``<name>_schedule.txt`` and ``<name>_schedule.png`` (its OneCycle dry run)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    batches = batches_per_epoch(cfg, n_train)
    run = dry_run(cfg.schedule, batches, cfg.train.accum_steps, cfg.train.epochs)
    header = "".join(f"# {line}\n" for line in note.splitlines())
    yaml_path = out / f"{name}.yaml"
    yaml_path.write_text(header + cfg.to_yaml())
    summary = out / f"{name}_schedule.txt"
    summary.write_text("\n".join(schedule_summary_lines(cfg, run, batches)) + "\n")
    plot = plot_schedule(run, out / f"{name}_schedule.png", title=f"{name}: OneCycleLR")
    return {"config": yaml_path, "schedule_summary": summary, "schedule_plot": plot}
