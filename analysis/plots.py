"""PNG plots of a search: each function takes frames, writes one file and returns its path."""

from __future__ import annotations

from pathlib import Path

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from analysis.selection import rung_survival  # noqa: E402

STATE_COLORS = {
    "finished": "tab:blue",
    "stopped": "tab:orange",
    "diverged": "tab:red",
    "crashed": "black",
    "running": "tab:green",
}
LOG_SCALE_PARAMS = {"max_lr", "weight_decay", "div_factor", "final_div_factor"}


def plot_metric_vs_params(
    trials: pd.DataFrame, params: list[str], threshold: float, path: str | Path
) -> Path:
    """Best val_auroc of each trial against each searched hyperparameter, coloured by how
    the trial ended, with the threshold drawn."""
    params = [p for p in params if p in trials] or ["trial_id"]
    fig, axes = plt.subplots(
        1, len(params), figsize=(4.2 * len(params), 3.8), dpi=110, sharey=True, squeeze=False
    )
    for ax, p in zip(axes[0], params, strict=True):
        for state, color in STATE_COLORS.items():
            sub = trials[trials["end_state"] == state]
            if sub.empty:
                continue
            ax.scatter(
                sub[p],
                sub["best_val_auroc"],
                c=color,
                label=state,
                s=28,
                edgecolors="white",
                linewidths=0.5,
            )
        values = pd.to_numeric(trials[p], errors="coerce").dropna()
        if p in LOG_SCALE_PARAMS and len(values) and (values > 0).all():
            ax.set_xscale("log")
            ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        elif len(values) and (values == values.round()).all():
            ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
        ax.axhline(threshold, color="tab:green", ls="--", lw=1)
        ax.set_xlabel(p + (" (log)" if ax.get_xscale() == "log" else ""))
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("best val_auroc")
    axes[0][0].annotate(
        f"threshold {threshold}",
        (0.02, threshold),
        xycoords=("axes fraction", "data"),
        color="tab:green",
        fontsize=8,
        va="bottom",
    )
    axes[0][-1].legend(fontsize=8, loc="lower right")
    fig.suptitle("val_auroc against the searched hyperparameters", fontsize=10)
    return _save(fig, path)


def plot_learning_curves(
    history: pd.DataFrame,
    trial_ids: list[str],
    threshold: float,
    path: str | Path,
    steps: pd.DataFrame | None = None,
) -> Path:
    """val_auroc of some trials against global_step and against epoch; with their
    per-step training loss when the trainer's step logs are given."""
    panels = 3 if steps is not None and len(steps) else 2
    fig, axes = plt.subplots(1, panels, figsize=(4.6 * panels, 3.8), dpi=110)
    for i, trial_id in enumerate(trial_ids):
        h = history[history["trial_id"] == trial_id]
        color = plt.cm.tab10(i % 10)
        axes[0].plot(
            h["global_step"], h["val_auroc"], marker="o", ms=3, color=color, label=trial_id
        )
        axes[1].plot(h["epoch"], h["val_auroc"], marker="o", ms=3, color=color)
        if panels == 3:
            s = steps[steps["trial_id"] == trial_id]
            if len(s):
                window = max(1, len(s) // 50)
                axes[2].plot(
                    s["global_step"],
                    s["loss"].rolling(window, min_periods=1).mean(),
                    color=color,
                    lw=1,
                )
    for ax, xlabel in zip(axes[:2], ["global_step (optimizer steps)", "epoch"], strict=True):
        ax.axhline(threshold, color="tab:green", ls="--", lw=1)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("val_auroc")
        ax.grid(alpha=0.3)
    if panels == 3:
        axes[2].set_xlabel("global_step")
        axes[2].set_ylabel("training loss (smoothed)")
        axes[2].grid(alpha=0.3)
    axes[0].legend(fontsize=7, title="trial", title_fontsize=7)
    fig.suptitle(f"learning curves of the top {len(trial_ids)} trials", fontsize=10)
    return _save(fig, path)


def plot_rung_survival(
    trials: pd.DataFrame,
    path: str | Path,
    epochs: int | None = None,
    rungs: list[int] | None = None,
) -> Path:
    """Trials still training at each epoch (a step plot), with ASHA's rungs marked."""
    survival = rung_survival(trials, epochs)
    fig, ax = plt.subplots(figsize=(6, 3.6), dpi=110)
    ax.step(survival["epoch"], survival["trials"], where="post", color="tab:blue", lw=1.6)
    ax.bar(survival["epoch"], survival["trials"], width=0.6, alpha=0.25, color="tab:blue")
    for e, n in zip(survival["epoch"], survival["trials"], strict=True):
        ax.annotate(str(n), (e, n), ha="center", va="bottom", fontsize=8)
    for r in rungs or []:
        ax.axvline(r, color="tab:orange", ls="--", lw=1)
    ax.set_xlabel("epoch reached" + (" (dashed: ASHA rungs)" if rungs else ""))
    ax.set_ylabel("trials")
    ax.set_ylim(0, max(1, len(trials)) * 1.15)
    ax.set_xticks(np.asarray(survival["epoch"]))
    ax.set_title(f"trials that reached each epoch ({len(trials)} started)", fontsize=10)
    return _save(fig, path)


def _save(fig: plt.Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
