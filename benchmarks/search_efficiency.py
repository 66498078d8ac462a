"""Search efficiency: ASHA + TPE against random search and a grid, through real Ray Tune.

    python benchmarks/search_efficiency.py --workdir /tmp/perf_eff \
        [--seeds 0 1 2] [--json benchmarks/results/search_efficiency.json] \
        [--plot benchmarks/results/search_efficiency.png]

All three run the default search's base run (synthetic corpus, small encoder, cached
features, 10 epochs, batch 64) on one local Ray (2 CPUs), ``--max-concurrent`` trials
at a time, actors reused:

- ``asha_tpe``: the product's search, ``tune_eegpt.search.run_search`` with the ``paper``
  space (max_lr loguniform [1e-5, 1e-1], pct_start uniform [0.05, 0.5], accum_steps
  {1, 2, 4, 8}), Optuna TPE (seeded), ASHA on epochs (grace 2, reduction 3),
  ``--num-samples`` trials; one run per seed.
- ``random``: the same space sampled at random by Tune, FIFO (no early stopping),
  ``--num-samples`` trials; one run per seed.
- ``grid``: max_lr at 8 log-spaced values in [1e-5, 1e-1] x pct_start {0.1, 0.3, 0.5} x
  accum_steps {1, 4}: 48 trials, FIFO; run once (it has no randomness to seed).

Every per-epoch result is recorded by a Tune callback when the driver receives it, so
rows are ordered by completion time and every epoch any trial trained counts. The target
is the grid's best val_auroc - ``--tolerance``; for each run: epochs consumed and wall time
(from the start of ``Tuner.fit``) until its best-so-far val_auroc first reaches the target.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")

GRID = {
    "max_lr": [float(v) for v in np.logspace(-5, -1, 8)],
    "pct_start": [0.1, 0.3, 0.5],
    "accum_steps": [1, 4],
}


def recorder_class():
    from ray.tune import Callback

    class EpochRecorder(Callback):
        """Each result as the driver receives it: (seconds since fit started, trial, row)."""

        def __init__(self) -> None:
            self.rows: list[dict[str, Any]] = []
            self.started = time.perf_counter()

        def setup(self, **info: Any) -> None:
            self.started = time.perf_counter()

        def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
            self.rows.append(
                {
                    "t": time.perf_counter() - self.started,
                    "trial": trial.trial_id,
                    "epoch": float(result.get("epoch", np.nan)),
                    "val_auroc": float(result.get("val_auroc", np.nan)),
                    "config": {k: trial.config.get(k) for k in GRID},
                }
            )

    return EpochRecorder


def product_args(args: argparse.Namespace, seed: int, name: str) -> argparse.Namespace:
    from tune_eegpt import search

    return search.build_parser().parse_args(
        [
            "--num-samples",
            str(args.num_samples),
            "--max-concurrent",
            str(args.max_concurrent),
            "--seed",
            str(seed),
            "--storage",
            str(args.workdir / "runs"),
            "--name",
            name,
            "--cache-dir",
            str(args.workdir / "cache"),
            "--epochs",
            str(args.epochs),
            "--space",
            "paper",
        ]
    )


def run_asha_tpe(args: argparse.Namespace, seed: int) -> list[dict]:
    from tune_eegpt import search

    targs = product_args(args, seed, f"asha_tpe-{seed}-{int(time.time())}")
    cfg, space = search.resolve(targs)
    recorder = recorder_class()()
    search.run_search(targs, cfg, space, callbacks=[recorder])
    return recorder.rows


def run_plain(args: argparse.Namespace, kind: str, seed: int) -> list[dict]:
    """Random search or the grid: Tune's BasicVariantGenerator, FIFO, no early stopping."""
    import random

    from ray import tune

    from trainables import ProbeTrainable
    from tune_eegpt import search
    from tune_eegpt.pipeline import prepare_data

    targs = product_args(args, seed, f"{kind}-{seed}-{int(time.time())}")
    cfg, _ = search.resolve(targs)  # the paper space's fixed values: batch_size 64
    prepared = prepare_data(cfg, workers=2, progress=False)
    trainable = tune.with_resources(
        tune.with_parameters(
            ProbeTrainable, base_config=cfg.to_dict(), prepared=prepared.to_dict()
        ),
        {"cpu": 1},
    )
    if kind == "grid":
        space = {k: tune.grid_search(v) for k, v in GRID.items()}
        samples = 1
    else:
        space = {
            "max_lr": tune.loguniform(1e-5, 1e-1),
            "pct_start": tune.uniform(0.05, 0.5),
            "accum_steps": tune.choice([1, 2, 4, 8]),
        }
        samples = args.num_samples
    random.seed(seed)
    np.random.seed(seed)
    recorder = recorder_class()()
    tuner = tune.Tuner(
        trainable,
        param_space={**space, "batch_size": 64},
        tune_config=tune.TuneConfig(
            metric="val_auroc",
            mode="max",
            num_samples=samples,
            reuse_actors=True,
            search_alg=tune.search.BasicVariantGenerator(
                max_concurrent=args.max_concurrent, random_state=seed
            ),
        ),
        run_config=tune.RunConfig(
            name=targs.name,
            storage_path=str(args.workdir / "runs"),
            callbacks=[recorder],
            checkpoint_config=tune.CheckpointConfig(checkpoint_frequency=1, num_to_keep=1),
            verbose=0,
        ),
    )
    tuner.fit()
    return recorder.rows


def first_reach(rows: list[dict], target: float) -> dict[str, Any]:
    """Epochs consumed and wall time until the best-so-far val_auroc reaches ``target``."""
    best = -np.inf
    for i, row in enumerate(sorted(rows, key=lambda r: r["t"])):
        if np.isfinite(row["val_auroc"]):
            best = max(best, row["val_auroc"])
        if best >= target:
            return {"epochs": i + 1, "wall_s": row["t"], "reached": True}
    return {"epochs": None, "wall_s": None, "reached": False}


def curve(rows: list[dict]) -> tuple[list[int], list[float]]:
    rows = sorted(rows, key=lambda r: r["t"])
    vals = [r["val_auroc"] if np.isfinite(r["val_auroc"]) else -np.inf for r in rows]
    return list(range(1, len(rows) + 1)), list(np.maximum.accumulate(vals)) if vals else []


def plot(runs: dict[str, list[dict]], target: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = {"asha_tpe": "tab:blue", "random": "tab:orange", "grid": "tab:gray"}
    fig, ax = plt.subplots(figsize=(8, 5))
    for name, rows in runs.items():
        kind = name.split("-")[0]
        x, y = curve(rows)
        ax.step(
            x,
            y,
            where="post",
            color=colors[kind],
            alpha=0.8,
            label=kind if name.endswith("-0") or kind == "grid" else None,
        )
    ax.axhline(target, ls="--", color="k", lw=1, label=f"grid best - tolerance ({target:.4f})")
    ax.set_xscale("log")
    ax.set_xlabel("epochs consumed (all trials, in completion order)")
    ax.set_ylabel("best-so-far val_auroc")
    lows = [v for rows in runs.values() for v in curve(rows)[1] if np.isfinite(v)]
    if lows:
        ax.set_ylim(max(0.45, min(lows) - 0.01), max(lows) + 0.01)
    ax.legend(loc="lower right")
    ax.set_title("Search efficiency on the synthetic corpus (cached features, 2 CPUs)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/perf_eff"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--num-samples", type=int, default=16, help="trials of TPE and random")
    parser.add_argument("--max-concurrent", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--tolerance", type=float, default=0.005)
    parser.add_argument("--skip-grid", action="store_true", help="debugging: no grid")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--plot", type=Path)
    args = parser.parse_args()
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    import ray

    started = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, configure_logging=False)
    runs: dict[str, list[dict]] = {}
    try:
        if not args.skip_grid:
            runs["grid"] = run_plain(args, "grid", 0)
        for seed in args.seeds:
            runs[f"asha_tpe-{seed}"] = run_asha_tpe(args, seed)
            runs[f"random-{seed}"] = run_plain(args, "random", seed)
    finally:
        ray.shutdown()
    total_s = time.perf_counter() - started

    pool = runs["grid"] if "grid" in runs else [r for rows in runs.values() for r in rows]
    grid_best = max(r["val_auroc"] for r in pool if np.isfinite(r["val_auroc"]))
    target = grid_best - args.tolerance
    grid_epochs = len(runs.get("grid", []))
    summary: dict[str, Any] = {
        "grid_best_val_auroc": grid_best,
        "target": target,
        "grid_epochs_total": grid_epochs,
        "runs": {},
    }
    print(f"grid best val_auroc {grid_best:.4f} over {grid_epochs} epochs; target {target:.4f}")
    for name, rows in runs.items():
        reach = first_reach(rows, target)
        best = max((r["val_auroc"] for r in rows if np.isfinite(r["val_auroc"])), default=np.nan)
        trials = len({r["trial"] for r in rows})
        summary["runs"][name] = {
            "epochs_total": len(rows),
            "trials": trials,
            "wall_s_total": max((r["t"] for r in rows), default=0.0),
            "best_val_auroc": best,
            **reach,
        }
        print(
            f"{name:12s} trials {trials:3d}, epochs {len(rows):4d}, best {best:.4f}; "
            f"reaches target after "
            + (
                f"{reach['epochs']} epochs, {reach['wall_s']:.0f} s"
                if reach["reached"]
                else "never"
            )
        )
    for kind in ("asha_tpe", "random", "grid"):
        stats = [v for k, v in summary["runs"].items() if k.split("-")[0] == kind]
        if not stats:
            continue
        hit = [s for s in stats if s["reached"]]
        agg = {
            "runs": len(stats),
            "reached": len(hit),
            "median_epochs_to_target": statistics.median([s["epochs"] for s in hit])
            if hit
            else None,
            "median_wall_s_to_target": statistics.median([s["wall_s"] for s in hit])
            if hit
            else None,
            "mean_epochs_total": statistics.mean([s["epochs_total"] for s in stats]),
        }
        summary[kind] = agg
        print(
            f"{kind}: reached {len(hit)}/{len(stats)}; median epochs to target "
            f"{agg['median_epochs_to_target']}, median wall "
            f"{agg['median_wall_s_to_target'] and round(agg['median_wall_s_to_target'])} s; "
            f"mean epochs per search {agg['mean_epochs_total']:.0f}"
        )
    if "grid" in summary and "asha_tpe" in summary and summary["asha_tpe"]["reached"]:
        asha = summary["asha_tpe"]["median_epochs_to_target"]
        in_order = summary["grid"]["median_epochs_to_target"] or grid_epochs
        summary["asha_over_grid_total"] = asha / grid_epochs
        summary["asha_over_grid_in_order"] = asha / in_order
        print(
            f"ASHA+TPE epochs to target / the grid's {grid_epochs} epochs (all of which it "
            f"needs to know its best): {asha / grid_epochs:.2f} (target <= 0.33); / the "
            f"grid's epochs until it first reached the target in its own order "
            f"({in_order}): {asha / in_order:.2f}"
        )
    print(f"benchmark wall time {total_s:.0f} s")
    summary["benchmark_wall_s"] = total_s
    summary["rows"] = runs
    if args.json:
        args.json.write_text(json.dumps(summary, indent=1, default=float))
    if args.plot:
        plot(runs, target, args.plot)


if __name__ == "__main__":
    main()
