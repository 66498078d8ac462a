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
    if np.isclose(end, top, rtol=1e-9):  # the log ends at its top: still rising, or holding
        changes = np.flatnonzero(np.diff(lr[:peak]) != 0) + 1
        rungs = np.diff(np.concatenate([[0], changes, [peak]]))  # the climb's plateaus
        if len(lr) - peak > int(rungs.max()) + 1:  # held longer than any rung of the climb
            return {
                "family": "warm-up, then constant",
                "start_lr": start,
                "max_lr": top,
                "peak_step": int(x[peak]),
                "steps_seen": steps_seen,
            }
        return {
            "family": "warm-up (the log ends while it rises)",
            "start_lr": start,
            "last_lr": end,
            "steps_seen": steps_seen,
        }
    p = int(x[peak])
    default_floor = (start if start > 0 else top) / TORCH_FINAL_DIV
    if (top - end) < 0.1 * (top - default_floor):
        return {  # too little of the decay logged to tell how long the cycle is
            "family": "warm-up, then the start of a decay",
            "max_lr": top,
            "peak_step": p,
            "steps_seen": steps_seen,
        }
    best: dict[str, Any] | None = None
    for floor in sorted({min(end, default_floor), end}):  # the run ends at its floor, or not
        # OneCycleLR warms up with the shape it anneals with; HF Trainer's cosine warms
        # up linearly, then anneals with a cosine
        for strategy, warmup in (("cos", "cos"), ("linear", "linear"), ("cos", "linear")):
            estimate = _total_steps(x[peak + 1 :], lr[peak + 1 :], p, top, floor, strategy)
            if estimate is None:
                continue
            candidate = _onecycle(x, lr, p, top, start, estimate, strategy, warmup)
            candidate["fit_error"] = fit_error(candidate, x, lr)
            if best is None or candidate["fit_error"] < best["fit_error"]:
                best = candidate
    if best is None:
        return {"family": "warm-up then decay", "max_lr": top, "steps_seen": steps_seen}
    return best


def _onecycle(
    x: np.ndarray,
    lr: np.ndarray,
    p: int,
    top: float,
    start: float,
    estimate: tuple[float, float],
    strategy: str,
    warmup: str,
) -> dict[str, Any]:
    total, spread = estimate
    steps_seen = int(x[-1]) + 1
    total_steps = int(round(total))
    if spread > 1e-4 and abs(total_steps - steps_seen) <= 0.02 * total_steps:
        total_steps = steps_seen  # a loose fit of a complete run: the run's length
    complete = steps_seen >= 0.98 * total_steps
    last = np.flatnonzero(x == total_steps - 1)  # the cycle's last step, where logged
    end = float(lr[last[0]]) if len(last) else float(lr[-1])
    if x[0] > 0:  # the log starts after step 0: the start value, from the warm-up's shape
        w = x[0] / p if warmup == "linear" else (1 - np.cos(np.pi * x[0] / p)) / 2
        start = max(float((lr[0] - top * w) / (1 - w)), 0.0) if w < 1 else start
    return {
        "family": "one-cycle",
        "max_lr": top,
        "pct_start": (p + 1) / total_steps,
        "div_factor": top / start if start > 0 else float("inf"),
        "final_div_factor": (start / end if complete and end > 0 and start > 0 else None),
        "total_steps": total_steps,
        "anneal_strategy": strategy,
        "warmup_strategy": warmup,
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


def onecycle_lr(schedule: dict[str, Any], steps: np.ndarray) -> np.ndarray:
    """The LR ``torch.optim.lr_scheduler.OneCycleLR`` gives at ``steps`` for a
    reconstructed one-cycle (two phases), vectorised: a test holds it to torch's own."""
    top, total = schedule["max_lr"], schedule["total_steps"]
    start = top / schedule["div_factor"]
    final = start / (schedule["final_div_factor"] or TORCH_FINAL_DIV)
    peak = schedule["pct_start"] * total - 1
    s = np.asarray(steps, dtype=np.float64)
    warm = s <= peak
    done = np.where(warm, s / max(peak, 1e-12), (s - peak) / max(total - 1 - peak, 1e-12))
    lo, hi = np.where(warm, start, top), np.where(warm, top, final)
    cosine = hi + (lo - hi) / 2 * (np.cos(np.pi * done) + 1)
    linear = (hi - lo) * done + lo
    shape = np.where(
        warm,
        schedule.get("warmup_strategy", schedule["anneal_strategy"]),
        schedule["anneal_strategy"],
    )
    return np.where(shape == "cos", cosine, linear)


def fit_error(schedule: dict[str, Any], x: np.ndarray, lr: np.ndarray) -> float:
    """Mean relative distance of the logged LRs from the reconstructed one-cycle."""
    model = onecycle_lr(schedule, x)
    return float(np.mean(np.abs(model - lr) / np.maximum(np.abs(model), 1e-30)))


def fit_with_offset(x: np.ndarray, lr: np.ndarray) -> tuple[dict[str, Any], dict[int, float]]:
    """The schedule, and for a one-cycle the fit error of each reading of the log: the LR
    logged at step s is that of step s (0), of step s + 1 (+1) or of step s - 1 (-1)."""
    schedule = fit_schedule(x, lr)
    if schedule["family"] != "one-cycle":
        return schedule, {}
    errors = {0: schedule["fit_error"]}
    for shift in (1, -1):
        keep = x + shift >= 0
        if keep.sum() < 4:
            continue
        shifted = fit_schedule(x[keep] + shift, lr[keep])
        if shifted["family"] == "one-cycle":
            errors[shift] = shifted["fit_error"]
    return schedule, errors
