"""Confirmation over seeds: the top-k configurations, each trained with several seeds for
its whole schedule through Ray Tune (no early stopping), mean +- std per configuration.

Seeds are fresh: ``base seed + 1 ... base seed + S``, none of them the seed the search
used, so a configuration that won by a lucky initialisation is not confirmed by it again.
"""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd

from analysis.export import base_config, configuration_of, export_config, train_windows
from analysis.load import Experiment
from analysis.selection import rank_configurations, select_configurations

RUNS_CSV, SUMMARY_CSV = "confirmation_runs.csv", "confirmation.csv"


def candidates(experiment: Experiment, threshold: float, top_k: int) -> tuple[pd.DataFrame, bool]:
    """(the top-k configurations to confirm, whether they reached the threshold). When none
    reached it, the k closest are confirmed instead, and the flag says so."""
    selected = select_configurations(experiment.trials, experiment.params, threshold)
    if len(selected):
        return selected.head(top_k).reset_index(drop=True), True
    ranked = rank_configurations(experiment.trials, experiment.params)
    ranked = ranked[ranked["end_state"] != "diverged"]
    return ranked.head(top_k).reset_index(drop=True), False


def confirmation_seeds(experiment: Experiment, seeds: int) -> list[int]:
    base_seed = base_config(experiment).train.seed
    return [base_seed + 1 + i for i in range(seeds)]


def summarize_confirmation(runs: pd.DataFrame, params: list[str], threshold: float) -> pd.DataFrame:
    """Per configuration: mean and (sample) std over seeds of the final val_auroc and
    val_bal_acc, and of the best val_auroc; confirmed when the mean final val_auroc
    reaches the threshold. Best mean first."""
    ok = runs[runs["diverged"] == 0]
    grouped = runs.groupby("candidate", sort=True)
    summary = grouped[params].first() if params else pd.DataFrame(index=grouped.size().index)
    summary["source_trial"] = grouped["source_trial"].first()
    summary["seeds"] = grouped["seed"].count()
    summary["diverged_seeds"] = grouped["diverged"].sum().astype(int)
    for metric in ("val_auroc", "val_bal_acc", "best_val_auroc"):
        stats = runs.groupby("candidate")[metric].agg(["mean", "std"])
        summary[f"{metric}_mean"], summary[f"{metric}_std"] = stats["mean"], stats["std"]
    summary["confirmed"] = (summary["val_auroc_mean"] >= threshold) & (
        summary["diverged_seeds"] == 0
    )
    summary["threshold"] = threshold
    summary["complete_seeds"] = ok.groupby("candidate")["seed"].count().reindex(summary.index)
    summary = summary.reset_index().sort_values("val_auroc_mean", ascending=False)
    return summary.reset_index(drop=True)


def confirmation_lines(summary: pd.DataFrame, params: list[str], threshold: float) -> list[str]:
    lines = [f"confirmation over seeds (final epoch; threshold {threshold}):"]
    for _, r in summary.iterrows():
        shown = ", ".join(f"{p}={_fmt(r[p])}" for p in params)
        verdict = "CONFIRMED" if r["confirmed"] else "not confirmed"
        lines.append(
            f"  {shown}: val_auroc {r['val_auroc_mean']:.4f} +- {_nan0(r['val_auroc_std']):.4f}, "
            f"val_bal_acc {r['val_bal_acc_mean']:.4f} +- {_nan0(r['val_bal_acc_std']):.4f} "
            f"over {int(r['seeds'])} seeds  [{verdict}]"
        )
    n = int(summary["confirmed"].sum())
    lines.append(
        f"{n} of {len(summary)} configuration(s) confirmed"
        if n
        else f"none of {len(summary)} configuration(s) holds a mean val_auroc >= {threshold} "
        "over seeds"
    )
    return lines


def run_confirmation(
    experiment: Experiment,
    out_dir: str | Path,
    threshold: float | None = None,
    top_k: int = 3,
    seeds: int = 5,
    cpus_per_trial: float = 1.0,
    gpus_per_trial: float = 0.0,
    max_concurrent: int | None = None,
    address: str | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    """Runs the grid (configuration x seed) with Ray Tune; returns (per-run frame, summary,
    lines to print) and writes both frames (CSV and Parquet) and, when a configuration is
    confirmed, ``winner.yaml`` with its schedule dry run into ``out_dir``."""
    threshold = experiment.threshold if threshold is None else threshold
    if top_k < 1 or seeds < 1:
        raise ValueError(f"top_k={top_k} and seeds={seeds} must both be >= 1")
    params = experiment.params
    chosen, reached = candidates(experiment, threshold, top_k)
    if chosen.empty:
        raise ValueError(f"{experiment.path}: no scored, non-diverged trial to confirm")
    lines = []
    if not reached:
        lines.append(
            f"no configuration reached {threshold} in the search; confirming the "
            f"{len(chosen)} closest instead"
        )
    seed_list = confirmation_seeds(experiment, seeds)
    configs = [configuration_of(r, params) for _, r in chosen.iterrows()]
    results = _tune_grid(
        experiment,
        configs,
        seed_list,
        Path(out_dir),
        cpus_per_trial,
        gpus_per_trial,
        max_concurrent,
        address,
    )
    rows = []
    for candidate, seed, last, best, error, path in results:
        rows.append(
            {
                "candidate": candidate,
                **configs[candidate],
                "seed": seed,
                "source_trial": chosen.loc[candidate, "trial_id"],
                "val_auroc": last.get("val_auroc", float("nan")),
                "val_bal_acc": last.get("val_bal_acc", float("nan")),
                "val_pr_auc": last.get("val_pr_auc", float("nan")),
                "best_val_auroc": best,
                "epochs": last.get("epoch", float("nan")),
                "diverged": int(bool(last.get("diverged", 0))),
                "errored": int(error),
                "trial_path": path,
            }
        )
    runs = pd.DataFrame(rows).sort_values(["candidate", "seed"]).reset_index(drop=True)
    summary = summarize_confirmation(runs, params, threshold)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    runs.to_csv(out / RUNS_CSV, index=False)
    runs.to_parquet(out / RUNS_CSV.replace(".csv", ".parquet"), index=False)
    summary.to_csv(out / SUMMARY_CSV, index=False)
    summary.to_parquet(out / SUMMARY_CSV.replace(".csv", ".parquet"), index=False)
    lines += confirmation_lines(summary, params, threshold)
    confirmed = summary[summary["confirmed"]]
    n_train = train_windows(experiment)
    if len(confirmed) and n_train:
        win = confirmed.iloc[0]
        cfg = base_config(experiment).with_overrides(configuration_of(win, params))
        note = (
            f"Confirmed winner of {experiment.path}: val_auroc {win['val_auroc_mean']:.4f} +- "
            f"{_nan0(win['val_auroc_std']):.4f} over {int(win['seeds'])} seeds "
            f"(threshold {threshold})"
        )
        written = export_config(cfg, out, "winner", n_train, note)
        lines.append(f"winner exported: {written['config']}")
    lines.append(f"written: {out / SUMMARY_CSV}, {out / RUNS_CSV}")
    return runs, summary, lines


def _tune_grid(
    experiment: Experiment,
    configs: list[dict[str, Any]],
    seeds: list[int],
    out: Path,
    cpus: float,
    gpus: float,
    max_concurrent: int | None,
    address: str | None,
) -> list[tuple[int, int, dict[str, Any], float, bool, str]]:
    """One Tune trial per (configuration, seed), FIFO, each for the whole schedule."""
    from tune_eegpt.search import quiet_third_party_notices

    quiet_third_party_notices()
    import ray
    from ray import tune

    from analysis.confirm_progress import GridProgress
    from analysis.confirm_trainable import ConfirmationTrainable
    from tune_eegpt.atomic_storage import atomic_local_filesystem
    from tune_eegpt.pipeline import prepare_data

    cfg = base_config(experiment)
    prepared = prepare_data(cfg, progress=False)
    started_ray = False
    if not ray.is_initialized():
        if address:
            ray.init(address=address)
        else:
            ray.init(num_cpus=os.cpu_count(), include_dashboard=False, configure_logging=False)
        started_ray = True
    try:
        trainable = tune.with_resources(
            tune.with_parameters(
                ConfirmationTrainable,
                base_config=cfg.to_dict(),
                prepared=prepared.to_dict(),
                candidates=configs,
            ),
            {"cpu": cpus, "gpu": gpus},
        )
        tuner = tune.Tuner(
            trainable,
            param_space={
                "candidate": tune.grid_search(list(range(len(configs)))),
                "seed": tune.grid_search(seeds),
            },
            tune_config=tune.TuneConfig(
                metric="val_auroc",
                mode="max",
                reuse_actors=True,
                max_concurrent_trials=max_concurrent,
            ),
            run_config=tune.RunConfig(
                name=f"confirm-{datetime.now():%Y%m%d-%H%M%S}",
                storage_path=str(out.resolve() / "confirm_runs"),
                storage_filesystem=atomic_local_filesystem(),  # whole files on a full disk
                checkpoint_config=tune.CheckpointConfig(
                    checkpoint_at_end=True,
                    num_to_keep=1,
                    checkpoint_score_attribute="val_auroc",
                    checkpoint_score_order="max",
                ),
                failure_config=tune.FailureConfig(max_failures=2),
                callbacks=[GridProgress(len(configs) * len(seeds), cfg.train.epochs)],
                verbose=0,
            ),
        )
        grid = tuner.fit()
        results = []
        for result in grid:
            history = result.metrics_dataframe
            best = (
                float(history["val_auroc"].max())
                if history is not None and "val_auroc" in history
                else float("nan")
            )
            config = result.config or {}
            results.append(
                (
                    int(config["candidate"]),
                    int(config["seed"]),
                    result.metrics or {},
                    best,
                    result.error is not None,
                    result.path,
                )
            )
        return results
    finally:
        if started_ray:
            ray.shutdown()


def _nan0(value: float) -> float:
    return 0.0 if value != value else float(value)


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
