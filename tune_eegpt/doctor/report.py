"""Reads the inputs, runs every check, and says what it found, as text or one JSON object."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tune_eegpt.doctor.findings import (
    SEVERITIES,
    Finding,
    Hints,
    accumulation,
    examine_checkpoint,
    examine_series,
)
from tune_eegpt.doctor.inputs import CheckpointFacts, LrSeries, read_inputs
from tune_eegpt.shell_command import python_command


@dataclass
class Diagnosis:
    inputs: list[dict[str, Any]] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    schedules: list[dict[str, Any]] = field(default_factory=list)
    series: list[LrSeries] = field(default_factory=list, repr=False)

    @property
    def healthy(self) -> bool:
        return all(f.severity == "info" for f in self.findings)

    def to_dict(self) -> dict[str, Any]:
        return {
            "inputs": self.inputs,
            "findings": [f.to_dict() for f in self.findings],
            "schedule": self.schedules[0] if len(self.schedules) == 1 else self.schedules,
            "healthy": self.healthy,
        }

    def verdict(self) -> str:
        """One line: 'schedule: healthy' or the worst finding."""
        if self.healthy:
            return "schedule: healthy"
        worst = max(self.findings, key=lambda f: SEVERITIES.index(f.severity))
        more = len([f for f in self.findings if f.severity != "info"]) - 1
        return f"schedule: {worst.severity} {worst.code}" + (f" (+{more} more)" if more else "")

    def lines(self) -> list[str]:
        out = []
        for item in self.inputs:
            if item["kind"] == "hints":
                out.append(f"length (from the {item['source']}): {item['what']}")
            else:
                out.append(f"read {item['kind']} {item['source']}: {item['what']}")
        for schedule in self.schedules:
            out.append(f"  schedule seen in {schedule['source']}: {describe(schedule)}")
        for f in sorted(self.findings, key=lambda f: -SEVERITIES.index(f.severity)):
            out.append(f"{f.severity} {f.code}: {f.message}")
            out.append(f"  fix: {f.fix}")
        out.append(self.verdict())
        return out


def describe(schedule: dict[str, Any]) -> str:
    fields = [f"{k}={_short(v)}" for k, v in schedule.items() if k not in ("source", "family")]
    return f"{schedule['family']}: " + ", ".join(fields)


def _short(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def diagnose(
    paths: list[str],
    hints: Hints | None = None,
    lr_key: str | None = None,
    step_key: str | None = None,
    trusted: bool = False,
) -> Diagnosis:
    """Raises InputError (naming the file) before any check when an input is unreadable."""
    hints = hints or Hints()
    series, checkpoints = read_inputs(paths, lr_key, step_key, trusted)
    result = Diagnosis(series=series)
    told = "command line" if hints.expected_total() is not None else None
    totals = {c.run_total_steps for c in checkpoints if c.run_total_steps}
    if told is None and len(totals) == 1:  # the checkpoint records the run's length
        hints, told = Hints(steps_per_epoch=totals.pop(), epochs=1), "checkpoint's run length"
    if told is None:
        hints = _with_checkpoint_batches(hints, checkpoints)
        told = "--epochs, checkpoint's batches" if hints.expected_total() is not None else None
    for s in series:
        span = f"steps {s.steps.min()}..{s.steps.max()}" if len(s.steps) else "no steps"
        what = f"LR {s.lr_key!r}, {len(s.lrs)} points, {span}"
        if s.unmapped:
            what += f"; not used: {', '.join(map(str, s.unmapped[:8]))}"
        result.inputs.append({"kind": "log", "source": s.source, "what": what})
        found, schedule = examine_series(s, hints)
        result.findings += found
        if schedule:
            result.schedules.append({"source": s.source, **schedule})
    for c in checkpoints:
        what = (
            f"global_step {c.global_step}, epoch {c.epoch}, optimizer steps "
            f"{c.optimizer_steps}, scheduler {'state' if c.scheduler else 'none'}"
        )
        if c.batches_per_epoch:
            what += f", {c.batches_per_epoch} batches per epoch, accum {accumulation(c) or 1}"
        result.inputs.append({"kind": "checkpoint", "source": c.source, "what": what})
        result.findings += examine_checkpoint(c, hints)
    expected = hints.expected_total()
    if told is not None:
        result.inputs.append(
            {
                "kind": "hints",
                "source": told,
                "what": f"the run takes {expected} optimizer steps",
            }
        )
    return result


def _with_checkpoint_batches(hints: Hints, checkpoints: list[CheckpointFacts]) -> Hints:
    """--epochs alone is enough with a Lightning checkpoint: it counts the batches per
    epoch and, against the optimizer's steps, the accumulation."""
    if hints.epochs is None or hints.steps_per_epoch is not None:
        return hints
    known = {
        (c.batches_per_epoch, accumulation(c) or 1) for c in checkpoints if c.batches_per_epoch
    }
    if len(known) != 1:
        return hints
    batches, accum = known.pop()
    return Hints(batches, hints.epochs, hints.accum or accum)


def check_run(folder: str | Path) -> list[str]:
    """The doctor on one of our run folders: 'schedule: healthy', or the findings and the
    verdict; never raises (a run whose logs cannot be read says so)."""
    try:
        result = diagnose([str(folder)])
    except ValueError as exc:
        return [f"schedule: not checked ({exc})"]
    if result.healthy:
        return [result.verdict()]
    findings = [f"{f.severity} {f.code}: {f.message}" for f in result.findings]
    return findings + [result.verdict()]


def check_trials(experiment: str | Path) -> list[str]:
    """The doctor on every trial of one of our experiments (each trial's ``trainer/``
    folder: its steps.csv and checkpoints): one line, and one per trial with a finding."""
    folders = sorted(Path(experiment).glob("*/trainer"))
    if not folders:
        return []
    sick = []
    for folder in folders:
        try:
            result = diagnose([str(folder)])
        except ValueError as exc:
            sick.append(f"  {folder.parent.name}: not checked ({exc})")
            continue
        if not result.healthy:
            sick.append(f"  {folder.parent.name}: {result.verdict()}")
    head = f"schedule: healthy in {len(folders) - len(sick)} of {len(folders)} trials"
    return [
        head
        + (
            f" ({python_command()} -m tune_eegpt.doctor <trial>/trainer for details)"
            if sick
            else ""
        )
    ] + sick
