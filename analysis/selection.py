"""Which configurations reach the threshold: ranking and the terminal table."""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

# Columns the table shows after the searched hyperparameters.
TABLE_COLUMNS = (
    "best_val_auroc",
    "best_epoch",
    "val_bal_acc_at_best",
    "val_pr_auc_at_best",
    "last_val_auroc",
    "epochs_run",
    "end_state",
    "trial_id",
)


def rank_configurations(trials: pd.DataFrame, params: list[str]) -> pd.DataFrame:
    """One row per distinct configuration (its best trial), best ``best_val_auroc`` first.

    Diverged trials rank below every other (their schedule is unusable whatever AUROC an
    early epoch had); trials with no score at all are left out. ``n_trials`` counts the
    trials that ran the configuration."""
    scored = trials.dropna(subset=["best_val_auroc"]).copy()
    if scored.empty:
        return scored.assign(n_trials=pd.Series(dtype="int64"))
    key = scored[params].astype(str).agg("|".join, axis=1) if params else scored["trial_id"]
    scored["_key"] = key
    scored["_usable"] = scored["end_state"] != "diverged"
    scored = scored.sort_values(["_usable", "best_val_auroc"], ascending=[False, False])
    counts = scored.groupby("_key")["trial_id"].count()
    best = scored.drop_duplicates("_key", keep="first").copy()
    best["n_trials"] = best["_key"].map(counts).astype("int64")
    best = best.drop(columns=["_key", "_usable"]).reset_index(drop=True)
    best.insert(0, "rank", range(1, len(best) + 1))
    return best


def select_configurations(
    trials: pd.DataFrame, params: list[str], threshold: float
) -> pd.DataFrame:
    """The configurations whose best ``val_auroc`` reaches ``threshold`` (diverged ones
    excluded), ranked."""
    ranked = rank_configurations(trials, params)
    keep = (ranked["best_val_auroc"] >= threshold) & (ranked["end_state"] != "diverged")
    return ranked[keep].reset_index(drop=True)


def format_table(frame: pd.DataFrame, params: list[str], max_rows: int = 20) -> str:
    """A plain-text table of ranked configurations for the terminal."""
    columns = [c for c in ["rank", *params, *TABLE_COLUMNS, "n_trials"] if c in frame]
    shown = frame[columns].head(max_rows).copy()
    for c in shown.columns:
        shown[c] = shown[c].map(_fmt)
    text = shown.to_string(index=False)
    if len(frame) > max_rows:
        text += f"\n... {len(frame) - max_rows} more"
    return text


def selection_lines(
    trials: pd.DataFrame, params: list[str], threshold: float, closest: int = 3
) -> list[str]:
    """What the report prints: the end states, the qualifying configurations as a table,
    or, when none qualifies, an honest statement and the closest ones."""
    counts = trials["end_state"].value_counts()
    states = ", ".join(f"{counts[s]} {s}" for s in counts.index)
    lines = [f"trials: {len(trials)} ({states})"]
    ranked = rank_configurations(trials, params)
    selected = select_configurations(trials, params, threshold)
    if len(selected):
        lines += [
            f"{len(selected)} configuration(s) reach val_auroc >= {threshold} "
            f"(of {len(ranked)} distinct configurations):",
            format_table(selected, params),
        ]
    else:
        best = ranked["best_val_auroc"].max() if len(ranked) else float("nan")
        gap = threshold - best if math.isfinite(best) else float("nan")
        lines += [
            f"NO configuration reaches val_auroc >= {threshold}: the best reached "
            f"{_fmt(best)}, {_fmt(gap)} short. The {min(closest, len(ranked))} closest:",
            format_table(ranked.head(closest), params) if len(ranked) else "(no scored trial)",
        ]
    return lines


def rung_survival(trials: pd.DataFrame, epochs: int | None = None) -> pd.DataFrame:
    """How many trials reached each epoch (ASHA's rungs are in epochs): epoch, trials."""
    reached = trials["epochs_run"].fillna(0).astype(float)
    last = int(epochs or max(1.0, reached.max()))
    epochs_ = range(1, last + 1)
    return pd.DataFrame({"epoch": epochs_, "trials": [int((reached >= e).sum()) for e in epochs_]})


def asha_rungs(epochs: int, grace_period: int, reduction_factor: int) -> list[int]:
    """ASHA's milestones in epochs: grace_period * reduction_factor**k below max_t."""
    rungs, t = [], grace_period
    while t < epochs:
        rungs.append(t)
        t *= reduction_factor
    return rungs


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "-"
        if value.is_integer() and abs(value) < 1e6:
            return str(int(value))
        return f"{value:.4g}"
    return str(value)
