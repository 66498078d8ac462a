"""What the Optuna journal costs the search's driver, per trial: the searcher's whole
traffic for a trial (suggest, one report per epoch, the end) with the study in memory
(Ray's default) and in ``optuna.journal`` (the search's), the same TPE sampler and seeds.

    .venv/bin/python benchmarks/optuna_journal_cost.py [--trials 16 64 256] [--epochs 10]
        [--json benchmarks/results/optuna_journal_cost.json]

Prints, per trial count: milliseconds per trial in memory and with the journal, the
difference, and the journal's size per trial. No Ray cluster, no training: the numbers are
the driver's Optuna work alone (a trial-epoch of the default search takes ~1 s).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import optuna

from search_spaces import load_space
from tune_eegpt.optuna_journal import JOURNAL, journal_storage
from tune_eegpt.optuna_searcher import PrunedAwareOptunaSearch

optuna.logging.set_verbosity(optuna.logging.WARNING)


def run(trials: int, epochs: int, folder: Path | None) -> float:
    """Seconds for ``trials`` trials' searcher traffic; a journal in ``folder`` if given."""
    storage = journal_storage(str(folder)) if folder is not None else None
    searcher = PrunedAwareOptunaSearch(
        space=load_space("paper").params,
        metric="val_auroc",
        mode="max",
        sampler=optuna.samplers.TPESampler(seed=0, n_startup_trials=10),
        storage=storage,
        study_name="cost" if storage is not None else None,
    )
    started = time.perf_counter()
    for i in range(trials):
        trial_id = f"t{i}"
        searcher.suggest(trial_id)
        stop = epochs if i % 3 == 0 else 2  # two of three stopped at the first rung
        for epoch in range(1, stop + 1):
            result = {"epoch": float(epoch), "val_auroc": 0.5 + 0.04 * epoch - 0.001 * i}
            searcher.on_trial_result(trial_id, result)
        last = {**result, "diverged": 0, "schedule_done": int(stop == epochs)}
        searcher.on_trial_complete(trial_id, last)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument("--trials", type=int, nargs="+", default=[16, 64, 256])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    rows = []
    for n in args.trials:
        memory = run(n, args.epochs, None)
        with tempfile.TemporaryDirectory() as tmp:
            journal = run(n, args.epochs, Path(tmp))
            size = (Path(tmp) / JOURNAL).stat().st_size
        row = {
            "trials": n,
            "memory_ms_per_trial": round(1e3 * memory / n, 2),
            "journal_ms_per_trial": round(1e3 * journal / n, 2),
            "journal_cost_ms_per_trial": round(1e3 * (journal - memory) / n, 2),
            "journal_kb_per_trial": round(size / n / 1e3, 2),
        }
        rows.append(row)
        print(
            f"{n:>5} trials: {row['memory_ms_per_trial']:.2f} ms/trial in memory, "
            f"{row['journal_ms_per_trial']:.2f} with the journal "
            f"(+{row['journal_cost_ms_per_trial']:.2f}), {row['journal_kb_per_trial']:.2f} kB/trial"
        )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
