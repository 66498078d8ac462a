"""The schedule an LR series followed, reconstructed: a one-cycle's parameters in
``torch.optim.lr_scheduler.OneCycleLR``'s terms, or the family of another schedule."""

from __future__ import annotations

from typing import Any

import numpy as np

TORCH_FINAL_DIV = 1e4  # OneCycleLR's default final_div_factor


def fit_schedule(x: np.ndarray, lr: np.ndarray) -> dict[str, Any]:
    """``x``: optimizer steps (strictly increasing), ``lr``: the LR logged at each."""
    steps_seen = int(x[-1]) + 1
    top, start, end = float(lr.max()), float(lr[0]), float(lr[-1])
    if np.allclose(lr, start, rtol=1e-9, atol=0):
        return {"family": "constant", "lr": start, "steps_seen": steps_seen}
    peak = int(np.argmax(lr))
    if peak == 0 or np.isclose(lr[0], top, rtol=1e-9):
        family = "step decay" if len(np.unique(lr)) <= max(3, len(lr) // 20) else "decay"
        return {"family": family, "start_lr": start, "end_lr": end, "steps_seen": steps_seen}
    if peak == len(lr) - 1:
        return {
            "family": "warm-up (the log ends while it rises)",
            "start_lr": start,
            "last_lr": end,
            "steps_seen": steps_seen,
        }
    p = int(x[peak])
    floor = min(end, start / TORCH_FINAL_DIV) if start > 0 else min(end, top / TORCH_FINAL_DIV)
    best: tuple[float, str, float] | None = None
    for strategy in ("cos", "linear"):
        estimate = _total_steps(x[peak + 1 :], lr[peak + 1 :], p, top, floor, strategy)
        if estimate is not None and (best is None or estimate[1] < best[0]):
            best = (estimate[1], strategy, estimate[0])
    if best is None:
        return {"family": "warm-up then decay", "max_lr": top, "steps_seen": steps_seen}
    spread, strategy, total = best
    total_steps = int(round(total))
    if abs(total_steps - steps_seen) <= 0.02 * total_steps:  # a complete run: its length
        total_steps = steps_seen
    complete = steps_seen >= 0.98 * total_steps
    return {
        "family": "one-cycle",
        "max_lr": top,
        "pct_start": (p + 1) / total_steps,
        "div_factor": top / start if start > 0 else float("inf"),
        "final_div_factor": (start / end if complete and end > 0 else None),
        "total_steps": total_steps,
        "anneal_strategy": strategy,
        "steps_seen": steps_seen,
        "fraction_seen": steps_seen / total_steps,
        "fit_spread": spread,
    }


def _total_steps(
    x: np.ndarray, lr: np.ndarray, peak: int, top: float, floor: float, strategy: str
) -> tuple[float, float] | None:
    """OneCycleLR anneals from step ``peak`` to step total_steps - 1: each point gives
    the total its position implies; returns (median, relative spread) of those."""
    span = top - floor
    if span <= 0 or len(x) == 0:
        return None
    level = np.clip((lr - floor) / span, 0.0, 1.0)
    done = np.arccos(2 * level - 1) / np.pi if strategy == "cos" else 1 - level
    use = (done > 0.02) & (done < 0.98)
    if use.sum() < 2:
        return None
    totals = peak + 1 + (x[use] - peak) / done[use]
    median = float(np.median(totals))
    return median, float(np.median(np.abs(totals - median)) / median)
