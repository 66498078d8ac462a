"""PNG of a OneCycle dry run: LR per optimizer step, with warm-up end, peak and floor."""

from __future__ import annotations

from pathlib import Path

from tune_eegpt.training.onecycle import ScheduleDryRun


def plot_schedule(run: ScheduleDryRun, path: str | Path, title: str = "OneCycleLR") -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = range(run.total_steps)
    fig, ax = plt.subplots(figsize=(8, 3.6), dpi=120)
    ax.plot(steps, run.lrs, lw=1.6, color="tab:blue", label="LR used by the step")
    ax.axvline(run.warmup_end_step, color="tab:orange", ls="--", lw=1, label="end of warm-up")
    ax.axhline(run.peak_lr, color="grey", ls=":", lw=1)
    ax.axhline(run.final_lr, color="grey", ls=":", lw=1)
    for epoch_start in range(run.steps_per_epoch, run.total_steps, run.steps_per_epoch):
        ax.axvline(epoch_start, color="0.85", lw=0.6, zorder=0)
    ax.set_yscale("log")
    ax.set_xlabel(f"global_step (optimizer steps; {run.steps_per_epoch} per epoch)")
    ax.set_ylabel("learning rate")
    ax.set_title(
        f"{title}: peak {run.peak_lr:.3g} at step {run.peak_step}, "
        f"floor {run.final_lr:.3g}, {run.total_steps} steps",
        fontsize=9,
    )
    ax.legend(fontsize=8, loc="lower center")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
