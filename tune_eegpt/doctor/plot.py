"""``--plot``: the LR each log recorded against the one-cycle it reconstructed (the schedule
a correct run of that length follows), with the resume points the checks found."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tune_eegpt.doctor.findings import timeline
from tune_eegpt.doctor.inputs import LrSeries
from tune_eegpt.doctor.report import Diagnosis
from tune_eegpt.doctor.schedule_fit import onecycle_lr


def plot_diagnosis(result: Diagnosis, series: list[LrSeries], path: str | Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(series) or 1, 1, figsize=(9, 3.2 * max(len(series), 1)))
    axes = np.atleast_1d(axes)
    schedules = {s["source"]: s for s in result.schedules}
    for ax, s in zip(axes, series, strict=False):
        x, lr, reset = timeline(s)
        ax.plot(x, lr, lw=1.2, label=f"logged {s.lr_key}")
        schedule = schedules.get(s.source, {})
        if schedule.get("family") == "one-cycle":
            steps = np.arange(schedule["total_steps"])
            ax.plot(steps, onecycle_lr(schedule, steps), "--", lw=1, label="one-cycle fitted")
        marks = [f.evidence.get("step") for f in result.findings if s.source in f.message]
        if reset is not None:
            marks.append(int(x[reset["row"]]))
        for m in {m for m in marks if isinstance(m, int)}:
            ax.axvline(m, color="red", lw=0.8, ls=":", label="resume")
        ax.set_title(Path(s.source).name, fontsize=9)
        ax.set_xlabel("optimizer step")
        ax.set_ylabel("learning rate")
        ax.legend(fontsize=8)
    fig.suptitle(result.verdict(), fontsize=10)
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
