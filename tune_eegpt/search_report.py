"""What the search prints at the end: the best trial, the threshold, how trials ended."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tune_eegpt.end_state import END_STATES, EndState
from tune_eegpt.shell_command import module_command

# How the summary names each end state; a trial still running when the search stopped
# was interrupted.
ENDED_AS = {
    "finished": "finished",
    "stopped": "stopped by ASHA",
    "diverged": "diverged",
    "crashed": "crashed",
    "running": "interrupted",
}


@dataclass
class TrialOutcome:
    trial_id: str
    config: dict[str, Any]
    best_val_auroc: float
    ended: EndState


def search_summary_lines(
    outcomes: list[TrialOutcome],
    threshold: float,
    wall_s: float,
    where: str,
    params: list[str],
    interrupted: bool = False,
) -> list[str]:
    counts = ", ".join(
        f"{ENDED_AS[state]} {sum(o.ended == state for o in outcomes)}"
        for state in END_STATES
        if state != "running" or interrupted
    )
    lines = [f"trials: {len(outcomes)}  {counts}"]
    ranked = sorted(
        (o for o in outcomes if o.ended != "crashed" and o.best_val_auroc == o.best_val_auroc),
        key=lambda o: o.best_val_auroc,
        reverse=True,
    )
    if ranked:
        best = ranked[0]
        verdict = "clears" if best.best_val_auroc >= threshold else "does NOT clear"
        shown = ", ".join(f"{k}={_fmt(best.config.get(k))}" for k in params)
        lines += [
            f"best trial: {best.trial_id}  val_auroc {best.best_val_auroc:.4f} "
            f"({verdict} the threshold {threshold})",
            f"best configuration: {shown}",
            f"configurations reaching {threshold}: "
            f"{sum(o.best_val_auroc >= threshold for o in ranked)} of {len(outcomes)}",
        ]
    lines += [f"wall time: {wall_s:.1f} s", f"results: {where}"]
    if not interrupted:
        lines.append(f"next: {module_command('analysis', 'report', where)}")
    return lines


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
