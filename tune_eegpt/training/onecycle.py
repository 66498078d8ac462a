"""The OneCycle learning-rate schedule: its length, its construction, and a dry run.

Contract (DESIGN.md, "Schedule"): torch's own ``OneCycleLR``, stepped right after every
real ``optimizer.step()`` and nowhere else, with

    steps_per_epoch = ceil(batches_per_epoch / accum_steps)   # last partial window counts
    total_steps     = steps_per_epoch * epochs

What OneCycleLR does: it warms up from ``max_lr / div_factor`` to ``max_lr`` over the
first ``pct_start * total_steps`` steps and anneals to ``max_lr / div_factor /
final_div_factor`` at the last step. What it does not do: it has no hold at the peak,
and it never goes below that floor.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from tune_eegpt.config import ConfigError, ScheduleConfig


def schedule_length(batches_per_epoch: int, accum_steps: int, epochs: int) -> tuple[int, int]:
    """(steps_per_epoch, total_steps), counted in optimizer steps."""
    if batches_per_epoch < 1:
        raise ValueError(f"batches_per_epoch={batches_per_epoch}: the training split is empty")
    steps_per_epoch = math.ceil(batches_per_epoch / accum_steps)
    return steps_per_epoch, steps_per_epoch * epochs


def check_warmup(pct_start: float, batches_per_epoch: int, accum_steps: int, epochs: int) -> None:
    """Refuses a schedule whose warm-up would end before its first optimizer step
    (``pct_start * total_steps <= 1``), where torch's OneCycleLR divides by zero."""
    _, total = schedule_length(batches_per_epoch, accum_steps, epochs)
    warmup_end = pct_start * total
    if warmup_end <= 1:
        raise ConfigError(
            f"schedule.pct_start={pct_start} with total_steps={total} "
            f"({batches_per_epoch} batches/epoch, accum_steps={accum_steps}, "
            f"epochs={epochs}) ends the warm-up at step {warmup_end:g} <= 1, "
            "before the first optimizer step; torch's OneCycleLR would divide by zero. "
            "Raise pct_start or epochs, or lower accum_steps or batch_size."
        )


def build_onecycle(
    optimizer: torch.optim.Optimizer, cfg: ScheduleConfig, total_steps: int
) -> torch.optim.lr_scheduler.OneCycleLR:
    """A fresh scheduler (``last_epoch=-1``); restore state with ``load_state_dict``."""
    return torch.optim.lr_scheduler.OneCycleLR(
        optimizer,
        max_lr=cfg.max_lr,
        total_steps=total_steps,
        pct_start=cfg.pct_start,
        anneal_strategy=cfg.anneal_strategy,
        cycle_momentum=cfg.cycle_momentum,
        base_momentum=cfg.base_momentum,
        max_momentum=cfg.max_momentum,
        div_factor=cfg.div_factor,
        final_div_factor=cfg.final_div_factor,
        three_phase=cfg.three_phase,
    )


@dataclass(frozen=True)
class ScheduleDryRun:
    """The LR each optimizer step uses: ``lrs[k]`` is the LR of step k (0-based)."""

    steps_per_epoch: int
    total_steps: int
    warmup_end_step: float  # torch's end of phase one: pct_start * total_steps - 1
    lrs: tuple[float, ...]

    @property
    def initial_lr(self) -> float:
        return self.lrs[0]

    @property
    def peak_lr(self) -> float:
        return max(self.lrs)

    @property
    def peak_step(self) -> int:
        return max(range(len(self.lrs)), key=self.lrs.__getitem__)

    @property
    def final_lr(self) -> float:
        return self.lrs[-1]

    def epoch_of(self, step: int) -> int:
        return step // self.steps_per_epoch

    def rows(self) -> list[tuple[int, int, float]]:
        return [(k, self.epoch_of(k), lr) for k, lr in enumerate(self.lrs)]


def dry_run(
    cfg: ScheduleConfig, batches_per_epoch: int, accum_steps: int, epochs: int
) -> ScheduleDryRun:
    """Steps torch's scheduler on a throwaway optimizer; trains nothing."""
    check_warmup(cfg.pct_start, batches_per_epoch, accum_steps, epochs)
    steps_per_epoch, total = schedule_length(batches_per_epoch, accum_steps, epochs)
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.AdamW([param], lr=cfg.max_lr)
    scheduler = build_onecycle(optimizer, cfg, total)
    lrs = []
    for _ in range(total):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()  # no gradients: a no-op, keeps torch's step-order check quiet
        scheduler.step()
    return ScheduleDryRun(steps_per_epoch, total, cfg.pct_start * total - 1, tuple(lrs))


def milestones(run: ScheduleDryRun) -> list[tuple[str, int]]:
    """Named steps worth printing: start, end of warm-up, peak, fractions, last."""
    last = run.total_steps - 1
    marks = [("first step", 0), ("peak", run.peak_step)]
    for frac in (0.25, 0.5, 0.75, 0.9):
        marks.append((f"{int(frac * 100)}% of steps", min(last, round(frac * last))))
    marks.append(("last step", last))
    return sorted(set(marks), key=lambda m: (m[1], m[0]))
