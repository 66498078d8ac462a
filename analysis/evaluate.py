"""Final evaluation: the winner, scored once on the test split (TUAB eval), at window and
recording level, with 95% bootstrap intervals over recordings.

This is the only place the test split is read. The result is written to
``test_evaluation.json``/``.csv``; a second evaluation of the same out folder is refused
unless asked for explicitly, so that the test set does not turn into a validation set.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm import tqdm

from analysis.confirm import SUMMARY_CSV
from analysis.export import configuration_of, run_config_for
from analysis.load import Experiment
from analysis.selection import rank_configurations
from tune_eegpt.config import RunConfig
from tune_eegpt.shell_command import module_command
from tune_eegpt.training.metrics import binary_metrics, recording_level

EVALUATION_JSON, EVALUATION_CSV = "test_evaluation.json", "test_evaluation.csv"
METRICS = ("auroc", "bal_acc", "pr_auc")


def bootstrap_intervals(
    y: np.ndarray,
    prob: np.ndarray,
    recording_ids: np.ndarray,
    resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
    progress: bool = False,
) -> pd.DataFrame:
    """Point estimates and percentile bootstrap intervals of AUROC, balanced accuracy and
    PR-AUC, at window level and recording level (mean probability over a recording's
    windows). Each resample draws recordings with replacement (windows of one recording
    are not independent) and keeps all their windows. Resamples with one class only are
    skipped and counted. Columns: level, metric, estimate, ci_low, ci_high, resamples_used,
    n_recordings, n_windows."""
    y = np.asarray(y).astype(int)
    prob = np.asarray(prob, dtype=np.float64)
    recording_ids = np.asarray(recording_ids)
    rec_ids, rec_y, rec_p = recording_level(y, prob, recording_ids)
    # windows of each recording, in the order of rec_ids
    position = {r: i for i, r in enumerate(rec_ids)}
    rec_index = np.fromiter(
        (position[r] for r in recording_ids), dtype=np.int64, count=len(recording_ids)
    )
    order = np.argsort(rec_index, kind="stable")
    bounds = np.searchsorted(rec_index[order], np.arange(len(rec_ids) + 1))
    windows_of = [order[bounds[i] : bounds[i + 1]] for i in range(len(rec_ids))]

    point = {"window": binary_metrics(y, prob), "recording": binary_metrics(rec_y, rec_p)}
    draws: dict[str, dict[str, list[float]]] = {
        lv: {m: [] for m in METRICS} for lv in ("window", "recording")
    }
    rng = np.random.default_rng(seed)
    for _ in tqdm(range(resamples), desc="bootstrap", unit="resample", disable=not progress):
        pick = rng.integers(0, len(rec_ids), size=len(rec_ids))
        rows = np.concatenate([windows_of[i] for i in pick])
        for lv, values in (
            ("window", binary_metrics(y[rows], prob[rows])),
            ("recording", binary_metrics(rec_y[pick], rec_p[pick])),
        ):
            for m in METRICS:
                draws[lv][m].append(values[m])
    alpha = (1 - level) / 2
    out = []
    for lv in ("window", "recording"):
        for m in METRICS:
            values = np.asarray(draws[lv][m], dtype=np.float64)
            values = values[np.isfinite(values)]
            lo, hi = np.quantile(values, [alpha, 1 - alpha]) if len(values) else (np.nan, np.nan)
            out.append(
                {
                    "level": lv,
                    "metric": m,
                    "estimate": point[lv][m],
                    "ci_low": float(lo),
                    "ci_high": float(hi),
                    "resamples_used": len(values),
                    "n_recordings": len(rec_ids),
                    "n_windows": len(y),
                }
            )
    return pd.DataFrame(out)


def winner_configuration(
    experiment: Experiment, out_dir: Path, allow_unconfirmed: bool = False
) -> tuple[dict[str, Any], str]:
    """(hyperparameters, how it was chosen): the best confirmed configuration of
    ``confirmation.csv`` in ``out_dir``; with ``allow_unconfirmed``, the best one even
    when none was confirmed (or the search's best when confirm never ran)."""
    params = experiment.params
    summary_path = out_dir / SUMMARY_CSV
    if summary_path.is_file():
        summary = pd.read_csv(summary_path)
        confirmed = summary[summary["confirmed"].astype(bool)]
        if len(confirmed):
            return configuration_of(confirmed.iloc[0], params), "confirmed over seeds"
        if allow_unconfirmed:
            return configuration_of(summary.iloc[0], params), "best over seeds, NOT confirmed"
        raise ValueError(
            f"{summary_path}: no configuration was confirmed (mean val_auroc >= threshold); "
            "nothing to evaluate. Pass --allow-unconfirmed to score the best one anyway."
        )
    if not allow_unconfirmed:
        raise FileNotFoundError(
            f"{summary_path} not found: run "
            f"`{module_command('analysis', 'confirm', str(experiment.path))}` first, or pass "
            "--allow-unconfirmed to score the search's best configuration"
        )
    ranked = rank_configurations(experiment.trials, params)
    ranked = ranked[ranked["end_state"] != "diverged"]
    if ranked.empty:
        raise ValueError(f"{experiment.path}: no scored trial to evaluate")
    return configuration_of(ranked.iloc[0], params), "search's best, NOT confirmed"


def evaluate_winner(
    experiment: Experiment,
    out_dir: str | Path,
    restore_checkpoint: bool = False,
    allow_unconfirmed: bool = False,
    resamples: int = 1000,
    seed: int = 0,
    again: bool = False,
    progress: bool = True,
) -> tuple[pd.DataFrame, list[str]]:
    """Trains the winner for its whole schedule (or restores the search's best checkpoint
    of it), scores it on the test split once, writes and returns the intervals. With
    ``progress``, bars on stderr for the training epochs and the bootstrap."""
    from tune_eegpt.pipeline import build_trainer, open_window_cache, prepare_data, split_sources

    out = Path(out_dir)
    if (out / EVALUATION_JSON).exists() and not again:
        raise FileExistsError(
            f"{out / EVALUATION_JSON} exists: the test split has been scored already. The "
            "test set is used once; pass --again only if you know why"
        )
    config, chosen = winner_configuration(experiment, out, allow_unconfirmed)
    cfg = run_config_for(experiment, config)
    prepared = prepare_data(cfg, progress=progress)
    trainer = build_trainer(cfg, prepared, log_dir=out / "evaluate_run")
    try:
        how = _train_or_restore(experiment, trainer, cfg, config, restore_checkpoint, progress)
        cache = open_window_cache(prepared.window_cache, cfg.data.split_seed, cfg.data.val_fraction)
        test = split_sources(prepared, cache, "test")
        if len(test) == 0:
            raise ValueError(f"the test split of {prepared.window_cache} is empty")
        y, prob = trainer.predict(test)
        recordings = getattr(test, "recording_ids", None)
        if recordings is None:
            raise ValueError("the test split carries no recording ids: no recording level")
        frame = bootstrap_intervals(
            y, prob, np.asarray(recordings), resamples, seed, progress=progress
        )
    finally:
        trainer.close()
    frame.insert(0, "chosen", chosen)
    out.mkdir(parents=True, exist_ok=True)
    frame.to_csv(out / EVALUATION_CSV, index=False)
    record = {
        "configuration": config,
        "chosen": chosen,
        "model": how,
        "resamples": resamples,
        "bootstrap_seed": seed,
        "results": frame.drop(columns=["chosen"]).to_dict(orient="records"),
    }
    (out / EVALUATION_JSON).write_text(json.dumps(record, indent=2, default=str))
    lines = [
        f"test split (TUAB eval), scored once: {', '.join(f'{k}={v}' for k, v in config.items())}",
        f"  ({chosen}; model: {how}; {int(frame['n_recordings'].iloc[0])} recordings, "
        f"{int(frame['n_windows'].iloc[0])} windows; 95% bootstrap over recordings, "
        f"{resamples} resamples)",
    ]
    for _, r in frame.iterrows():
        lines.append(
            f"  {r['level']:<9} {r['metric']:<8} {r['estimate']:.4f}  "
            f"[{r['ci_low']:.4f}, {r['ci_high']:.4f}]"
        )
    lines.append(f"written: {out / EVALUATION_CSV}, {out / EVALUATION_JSON}")
    return frame, lines


def _train_or_restore(
    experiment: Experiment,
    trainer: Any,
    cfg: RunConfig,
    config: dict[str, Any],
    restore: bool,
    progress: bool,
) -> str:
    if restore:
        trials = experiment.trials
        match = np.ones(len(trials), dtype=bool)
        for k, v in config.items():
            match &= (trials[k] == v).to_numpy()
        found = trials[match].dropna(subset=["best_checkpoint_file"])
        found = found.sort_values("best_val_auroc", ascending=False)
        if found.empty:
            raise FileNotFoundError(
                f"no kept checkpoint of the configuration {config} in {experiment.path}"
            )
        path = found["best_checkpoint_file"].iloc[0]
        if "://" in path and not path.startswith("file://"):
            raise ValueError(f"restore reads local checkpoints only; copy {path} here first")
        trainer.load_checkpoint(path.removeprefix("file://"))
        return f"restored {path}"
    with tqdm(
        total=cfg.train.epochs, desc="training the winner", unit="epoch", disable=not progress
    ) as bar:
        while not trainer.finished:
            metrics = trainer.train_epoch()
            bar.update(1)
            bar.set_postfix(val_auroc=f"{metrics.get('val_auroc', float('nan')):.4f}")
    return f"trained {cfg.train.epochs} epochs (seed {cfg.train.seed})"
