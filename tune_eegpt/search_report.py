"""What the search prints at the end: the best trial, the threshold, how trials ended."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class TrialOutcome:
    trial_id: str
    config: dict[str, Any]
    best_val_auroc: float
    ended: str  # finished | stopped | diverged | error


def classify(last_result: dict[str, Any] | None, error: bool) -> str:
    if error or not last_result:
        return "error"
    if last_result.get("diverged"):
        return "diverged"
    if last_result.get("schedule_done"):
        return "finished"
    return "stopped"  # ended before its schedule did, without error: stopped by ASHA


def summary_lines(
    outcomes: list[TrialOutcome], threshold: float, wall_s: float, where: str, params: list[str]
) -> list[str]:
    counts = {
        k: sum(o.ended == k for o in outcomes) for k in ("finished", "stopped", "diverged", "error")
    }
    lines = [
        f"trials: {len(outcomes)}  finished {counts['finished']}, stopped by ASHA "
        f"{counts['stopped']}, diverged {counts['diverged']}, errored {counts['error']}",
    ]
    ranked = sorted(
        (o for o in outcomes if o.ended != "error"), key=lambda o: o.best_val_auroc, reverse=True
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
    return lines


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
