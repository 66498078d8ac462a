"""The schedule defects, each a check over one LR series or one checkpoint.

Every finding has a stable code, a severity, one sentence of what was seen where and one
of the fix. Healthy schedules (per-step one-cycle with or without accumulation, warm-up and
cosine, StepLR or ReduceLROnPlateau stepped per epoch by design, an LR of 0 at step 0 of a
linear warm-up) give none above ``info``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from tune_eegpt.doctor.inputs import CheckpointFacts, LrSeries
from tune_eegpt.doctor.schedule_fit import fit_schedule, fit_with_offset

SEVERITIES = ("info", "warning", "error")
_SAME = 1e-7  # relative: two logged LRs this close are one value (float32 logging)


@dataclass
class Finding:
    code: str
    severity: str
    message: str
    fix: str
    evidence: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Hints:
    """What the user says the run is: optimizer steps follow from them."""

    steps_per_epoch: int | None = None
    epochs: int | None = None
    accum: int | None = None

    def expected_total(self) -> int | None:
        if self.steps_per_epoch is None or self.epochs is None:
            return None
        return self.epochs * -(-self.steps_per_epoch // (self.accum or 1))


def examine_series(series: LrSeries, hints: Hints) -> tuple[list[Finding], dict[str, Any]]:
    """Findings for one LR series, and the schedule it followed."""
    found: list[Finding] = []
    src = series.source
    if series.stepped_past is not None:
        stepped, total = series.stepped_past
        found.append(
            Finding(
                "total_steps_mismatch",
                "error",
                f"{src}: OneCycleLR raised 'Tried to step {stepped} times' with total_steps "
                f"{total}: the run takes more optimizer steps than the schedule holds",
                "set total_steps to epochs * ceil(batches_per_epoch / accum_steps), the optimizer "
                "steps the run takes, and step the scheduler once per optimizer step",
                {"stepped": stepped, "total_steps": total},
            )
        )
    if len(series.lrs) == 0:
        return found, {}
    x, lr, reset = timeline(series)
    if reset is not None:
        found.append(
            Finding(
                "step_counter_reset",
                "error",
                f"{src}: the logged step goes back from {reset['from']} to {reset['to']} at row "
                f"{reset['row']} with other LR values than before: a resume reset the step counter",
                "save global_step in the checkpoint and restore it on resume (log against it)",
                reset,
            )
        )
    schedule, errors = fit_with_offset(x, lr)
    offset = _offset(src, errors)
    if offset is not None:
        found.append(offset)
        if offset.evidence["offset"] == -1:  # numbered from 1: read it as numbered from 0
            x = x - 1
            schedule = fit_schedule(x, lr)
    if len(x) >= 3 and schedule["family"] == "constant":
        found.append(
            Finding(
                "lr_constant",
                "warning",
                f"{src}: the LR is {lr[0]:.3g} at all {len(x)} logged steps "
                f"({int(x[0])}..{int(x[-1])})",
                "if a schedule was meant, check that the scheduler is built, attached to this "
                "optimizer and stepped",
                {"lr": float(lr[0]), "points": len(x)},
            )
        )
        return found, schedule
    per_epoch = _per_epoch(src, x, lr, series.epochs)
    found += per_epoch
    restart = _restart(x, lr)
    if restart is not None:
        found.append(
            Finding(
                "schedule_restarted",
                "error",
                f"{src}: at step {restart['step']} the LR jumps from {restart['before']:.3g} "
                f"back to {restart['after']:.3g}, its value at the start, while the steps go "
                "on: the scheduler was rebuilt on resume",
                "restore the scheduler's state_dict (and the optimizer's) from the checkpoint "
                "instead of building a new scheduler",
                restart,
            )
        )
        before = x < restart["step"]  # the cycle the run followed until it was rebuilt
        if before.sum() >= 4:
            schedule = {
                **fit_with_offset(x[before], lr[before])[0],
                "restarted_at": restart["step"],
            }
        return found, schedule  # its length is the restart's doing, not total_steps'
    if not any(f.code == "per_epoch_stepping" for f in per_epoch):
        found += _length(src, schedule, hints)  # else its length is per-epoch stepping's doing
    return found, schedule


def timeline(series: LrSeries) -> tuple[np.ndarray, np.ndarray, dict[str, Any] | None]:
    """(optimizer steps, LRs) in the order the run took them: repeats of a step with the
    same LR (Lightning logs a step once per micro-batch) dropped; after a counter reset,
    the later segment placed after the earlier one."""
    seen: dict[int, float] = {}
    xs, lrs, reset, offset, last = [], [], None, 0, None
    for row, (step, value) in enumerate(
        zip(series.steps.tolist(), series.lrs.tolist(), strict=True)
    ):
        if last is not None and step <= last:
            if step in seen and _same(seen[step], value) and offset == 0:
                continue  # the same step logged again: not a defect
            if step < last and reset is None:
                reset = {"row": row, "from": last, "to": step}
            if step < last:
                offset = xs[-1] + 1 - step
        seen[step] = value
        xs.append(step + offset)
        lrs.append(value)
        last = step
    return np.array(xs, dtype=np.int64), np.array(lrs), reset


def _offset(src: str, errors: dict[int, float]) -> Finding | None:
    """The log fits the one-cycle exactly once read one step off, and not as logged."""
    if len(errors) < 2:
        return None
    best = min(errors, key=errors.get)
    if best == 0 or errors[best] > 1e-4 or errors[0] < max(10 * errors[best], 1e-5):
        return None
    evidence = {"offset": best, "fit_error": errors}
    if best == -1:  # the LR the step used, against a step counter that starts at 1
        return Finding(
            "logged_lr_offset",
            "info",
            f"{src}: the logged steps count optimizer steps from 1 (the LR logged at step s is "
            f"the one the s-th step used: the schedule fits to {errors[best]:.1e} so read, "
            f"{errors[0]:.1e} as a count from 0), as Hugging Face Trainer logs",
            "nothing to fix: the LR logged is the one each step used",
            evidence,
        )
    return Finding(
        "logged_lr_offset",
        "warning",
        f"{src}: the logged LR at each step is the LR of the next optimizer step (the "
        f"one-cycle fits to {errors[best]:.1e} read one step off, {errors[0]:.1e} as logged)",
        "log the LR the step used: read optimizer.param_groups[0]['lr'] before "
        "scheduler.step(), or get_last_lr() before stepping",
        evidence,
    )


def _same(a: float, b: float) -> bool:
    return abs(a - b) <= _SAME * max(abs(a), abs(b), 1e-30)


def _plateaus(lr: np.ndarray) -> list[tuple[int, int]]:
    """(first index, length) of each run of one LR value (neighbours the same)."""
    if len(lr) == 0:
        return []
    scale = np.maximum(np.maximum(np.abs(lr[1:]), np.abs(lr[:-1])), 1e-30)
    starts = np.concatenate([[0], np.flatnonzero(np.abs(np.diff(lr)) > _SAME * scale) + 1])
    lengths = np.diff(np.append(starts, len(lr)))
    return list(zip(starts.tolist(), lengths.tolist(), strict=True))


def _per_epoch(src: str, x: np.ndarray, lr: np.ndarray, epochs: np.ndarray | None) -> list[Finding]:
    runs = _plateaus(lr)
    lengths = np.array([n for _, n in runs])
    if len(runs) < 3 or np.median(lengths) < 3:
        return []
    levels = np.array([lr[i] for i, _ in runs])
    rises, falls = np.any(np.diff(levels) > 0), np.any(np.diff(levels) < 0)
    span = [int(x[i + n - 1] - x[i] + 1) for i, n in runs]
    evidence = {
        "plateaus": len(runs),
        "median_plateau_steps": int(np.median(span)),
        "longest_share": float(max(span) / (x[-1] - x[0] + 1)),
        "levels": [float(v) for v in levels[:12]],
    }
    if epochs is not None:
        changes = [i for i, _ in runs[1:]]
        evidence["changes_at_epoch_boundaries"] = bool(
            all(epochs[i] != epochs[i - 1] for i in changes)
        )
    if rises and falls:
        return [
            Finding(
                "per_epoch_stepping",
                "error",
                f"{src}: the LR holds one value for {evidence['median_plateau_steps']} steps at a "
                f"time ({len(runs)} plateaus, the longest {evidence['longest_share']:.0%} of the "
                "run) and moves only between them, along a warm-up and decay: a per-step schedule "
                "is stepped once per epoch",
                "call scheduler.step() after every optimizer.step() (Lightning: "
                "'interval': 'step' in the lr_scheduler dict)",
                evidence,
            )
        ]
    if rises:
        return [_rising(src, runs, levels, evidence)]
    ratios = levels[1:] / levels[:-1]
    if np.allclose(ratios, ratios[0], rtol=0.01):
        return [
            Finding(
                "stepped_per_epoch",
                "info",
                f"{src}: the LR falls by a factor {ratios[0]:.3g} between plateaus of "
                f"~{evidence['median_plateau_steps']} steps (StepLR, ExponentialLR or "
                "ReduceLROnPlateau "
                "stepped per epoch, as they are meant to be)",
                "nothing to fix",
                evidence,
            )
        ]
    return [
        Finding(
            "stepped_per_epoch",
            "info",
            f"{src}: the LR decays in {len(runs)} plateaus of ~{evidence['median_plateau_steps']} "
            "steps: a decay stepped once per epoch; if it was meant per step, step it per step",
            "nothing to fix if per-epoch decay is what was meant",
            evidence,
        )
    ]


def _rising(
    src: str, runs: list[tuple[int, int]], levels: np.ndarray, evidence: dict[str, Any]
) -> Finding:
    """The LR only climbs, one plateau at a time. Plateaus of one length up to the last
    step: a per-step warm-up (a OneCycleLR whose total_steps counts optimizer steps)
    stepped once per epoch, so the run never leaves it. A last plateau longer than the
    others: a warm-up meant in epochs that then holds, which is healthy."""
    lengths = [n for _, n in runs]
    regular = max(lengths[:-1]) - min(lengths[:-1]) <= 1 and lengths[-1] <= max(lengths[:-1]) + 1
    n, steps = len(runs), evidence["median_plateau_steps"]
    if not regular:
        return Finding(
            "stepped_per_epoch",
            "info",
            f"{src}: the LR climbs in {n} plateaus of ~{steps} steps, then holds: a warm-up "
            "stepped once per epoch",
            "nothing to fix if a warm-up in epochs is what was meant",
            evidence,
        )
    return Finding(
        "per_epoch_stepping",
        "error",
        f"{src}: the LR climbs in {n} plateaus of {steps} steps, moving only between them, and "
        f"is still rising at the last step ({levels[0]:.3g} to {levels[-1]:.3g}): a per-step "
        "warm-up stepped once per epoch never reaches its peak",
        "call scheduler.step() after every optimizer.step() (Lightning: 'interval': 'step' in "
        "the lr_scheduler dict)",
        evidence,
    )


def _restart(x: np.ndarray, lr: np.ndarray) -> dict[str, Any] | None:
    start, span = lr[0], float(lr.max() - lr.min())
    if span <= 0:
        return None
    left = np.flatnonzero(np.abs(lr - start) > 0.3 * span)
    if len(left) == 0:
        return None
    for i in range(int(left[0]) + 1, len(lr)):
        if abs(lr[i] - start) < 0.05 * span and abs(lr[i - 1] - start) > 0.3 * span:
            return {"step": int(x[i]), "before": float(lr[i - 1]), "after": float(lr[i])}
    return None


def _length(src: str, schedule: dict[str, Any], hints: Hints) -> list[Finding]:
    expected = hints.expected_total()
    if schedule.get("family", "").startswith("warm-up ("):
        seen = schedule["steps_seen"]
        complete = expected is not None and seen >= 0.98 * expected
        if expected is not None and not complete:
            return []  # stopped before the warm-up ended: nothing to say about its length
        return [
            Finding(
                "total_steps_mismatch",
                "error" if complete else "warning",
                f"{src}: the LR still rises at the last logged step ({seen}): the schedule's "
                "warm-up is longer than the run"
                + (f" of {expected} optimizer steps" if complete else ", or the run stopped early"),
                "set total_steps to the optimizer steps the run takes: epochs * "
                "ceil(batches_per_epoch / accum_steps)",
                {"steps_seen": seen, "expected": expected},
            )
        ]
    if schedule.get("family") != "one-cycle":
        return []
    total, seen = schedule["total_steps"], schedule["steps_seen"]
    if expected is not None:
        # one step over: a schedule that reaches 0 one step after the last (HF Trainer's)
        if abs(total - expected) <= max(1, 0.02 * expected):
            return []  # the cycle the run's length implies; a log that ends early just stopped
        return [
            Finding(
                "total_steps_mismatch",
                "error",
                f"{src}: the one-cycle it followed is {total} steps long, but the run takes "
                f"{expected} optimizer steps ({hints.epochs} epochs x ceil({hints.steps_per_epoch} "
                f"/ {hints.accum or 1}))",
                f"set total_steps={expected}: epochs * ceil(batches_per_epoch / accum_steps)",
                {"total_steps": total, "expected": expected},
            )
        ]
    if schedule["fraction_seen"] < 0.9:
        share = schedule["fraction_seen"]
        k = round(1 / share)
        accum = (
            f" (about 1/{k}: total_steps counted micro-batches with accum {k}?)"
            if (k >= 2 and abs(1 / share - k) < 0.05 * k)
            else ""
        )
        return [
            Finding(
                "total_steps_mismatch",
                "warning",
                f"{src}: the log ends at step {seen} of the {total}-step cycle it follows, "
                f"{share:.0%} of the way{accum}, with the LR still at {schedule['max_lr']:.3g}'s "
                "decay; or the run stopped early",
                "set total_steps to the optimizer steps the run takes: epochs * "
                "ceil(batches_per_epoch / accum_steps)",
                {"total_steps": total, "steps_seen": seen, "fraction_seen": share},
            )
        ]
    return []


def examine_checkpoint(ckpt: CheckpointFacts, hints: Hints) -> list[Finding]:
    src, found = ckpt.source, []
    if ckpt.global_step is None and ckpt.optimizer_steps is None:
        found.append(
            Finding(
                "missing_global_step",
                "error",
                f"{src}: no step counter (no global_step, no optimizer step state): a resume "
                "cannot "
                "put the schedule back where it was",
                "save global_step (and the optimizer's state_dict) in every checkpoint",
            )
        )
    if ckpt.scheduler is None:
        found.append(
            Finding(
                "missing_global_step",
                "error",
                f"{src}: no scheduler state: a resume rebuilds the schedule from its first step",
                "save scheduler.state_dict() in every checkpoint and load it on resume",
            )
        )
        return found
    scheduler_steps = ckpt.scheduler.get("last_epoch")
    steps = ckpt.optimizer_steps if ckpt.optimizer_steps is not None else ckpt.global_step
    # only a per-step schedule (OneCycleLR keeps total_steps) is wrong when stepped per epoch
    per_step = "total_steps" in ckpt.scheduler
    if per_step and isinstance(scheduler_steps, int) and steps and steps > scheduler_steps:
        ratio = steps / max(scheduler_steps, 1)
        evidence = {"scheduler_steps": scheduler_steps, "optimizer_steps": steps}
        if ratio >= 2 and abs(ratio - round(ratio)) <= 0.02 * ratio:
            found.append(
                Finding(
                    "per_epoch_stepping",
                    "error",
                    f"{src}: the scheduler was stepped {scheduler_steps} times for {steps} "
                    f"optimizer steps ({ratio:.0f} per scheduler step: once per epoch)",
                    "call scheduler.step() after every optimizer.step() (Lightning: "
                    "'interval': 'step')",
                    evidence,
                )
            )
        else:
            found.append(
                Finding(
                    "schedule_restarted",
                    "error",
                    f"{src}: the scheduler was stepped {scheduler_steps} times, the optimizer "
                    f"{steps}: the scheduler was rebuilt at about step {steps - scheduler_steps}",
                    "restore the scheduler's state_dict from the checkpoint on resume",
                    evidence,
                )
            )
    total, expected = ckpt.scheduler.get("total_steps"), hints.expected_total()
    accum = accumulation(ckpt)
    if isinstance(total, int) and expected is None and accum and ckpt.batches_per_epoch:
        blind = _batch_counted_total(src, total, ckpt, accum)
        found += [blind] if blind else []
    if isinstance(total, int) and expected is not None and total != expected:
        found.append(
            Finding(
                "total_steps_mismatch",
                "error",
                f"{src}: the scheduler's total_steps is {total}, but the run takes {expected} "
                "optimizer steps",
                f"set total_steps={expected}: epochs * ceil(batches_per_epoch / accum_steps)",
                {"total_steps": total, "expected": expected},
            )
        )
    return found


def accumulation(ckpt: CheckpointFacts) -> int | None:
    """Gradient accumulation, where the checkpoint counts batches as well as optimizer
    steps (Lightning's loop state): batches per optimizer step, when that is 2 or more."""
    if not ckpt.batches_seen or not ckpt.optimizer_steps:
        return None
    ratio = ckpt.batches_seen / ckpt.optimizer_steps
    k = round(ratio)  # an epoch's last, partial window still steps: the ratio is a bit less
    return k if k >= 2 and abs(ratio - k) <= 0.1 * k else None


def _batch_counted_total(src: str, total: int, ckpt: CheckpointFacts, accum: int) -> Finding | None:
    """total_steps is a whole number E of epochs counted in batches, while the optimizer
    steps once per ``accum`` batches: a run of E epochs ends 1/accum of the way. A warning
    when the checkpoint is at the end of epoch E (the last one of such a run), info before;
    nothing once the run is past E epochs (then E was not its length)."""
    batches = ckpt.batches_per_epoch or 0
    if not batches or total % batches:
        return None
    epochs, per_epoch = total // batches, -(-batches // accum)
    done = (ckpt.batches_seen or 0) / batches
    if done > epochs:
        return None
    return Finding(
        "total_steps_mismatch",
        "warning" if done == epochs else "info",
        f"{src}: total_steps is {total}, {epochs} epochs of {batches} batches, but the "
        f"optimizer steps once per {accum} batches ({per_epoch} steps per epoch): a "
        f"{epochs}-epoch run ends 1/{accum} of the way through its cycle"
        + (" (this checkpoint is at its end)" if done == epochs else ""),
        f"if the run is {epochs} epochs, set total_steps={epochs * per_epoch}: epochs * "
        "ceil(batches_per_epoch / accum_steps) (Lightning: "
        "self.trainer.estimated_stepping_batches)",
        {"total_steps": total, "batches_per_epoch": batches, "accum": accum, "epochs": epochs},
    )
