"""The training loop: one epoch of one trainer, or of several trainers in one pass.

Every run goes through ``train_together``: a single trainer (``ProbeTrainer.train_epoch``)
is a pass of one. The loop walks the epoch's micro-batches; each trainer's accumulation
window ends on its own cadence, and where it ends the three things that make a schedule
right happen together, for that trainer only: its optimizer step, its scheduler step,
its ``global_step += 1``. The scheduler moves nowhere else. How a micro-batch and an
optimizer step are computed is the engine's business (training/engines/).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tune_eegpt.training.trainer import ProbeTrainer


class Diverged(RuntimeError):
    """The training loss became NaN or infinite."""


def window_end(b: int, accum_steps: int, batches: int) -> int:
    """The micro-batch after the last of ``b``'s accumulation window."""
    return min((b // accum_steps + 1) * accum_steps, batches)


def window_samples(b: int, accum_steps: int, batch_size: int, n: int, batches: int) -> int:
    """The sample count of ``b``'s window: a short last window weighs each of its samples
    like a full one (the loss is a mean over the window's samples)."""
    start = (b // accum_steps) * accum_steps
    return min(window_end(b, accum_steps, batches) * batch_size, n) - start * batch_size


def train_together(
    trainers: Sequence[ProbeTrainer],
    stop_at_step: int | None = None,
    on_step: Callable[[ProbeTrainer], None] | None = None,
) -> list[dict[str, float] | Diverged]:
    """Runs the rest of the current epoch of every trainer in one pass; returns each
    trainer's epoch metrics, or the Diverged error that ended it. The trainers must share
    a pack key (training/engines/); ``stop_at_step`` stops a pass of one trainer after
    that many optimizer steps (metrics of the steps so far, no validation)."""
    first = trainers[0]
    module = first.engine
    keys = {module.pack_key(t) for t in trainers}
    if len(keys) != 1 or any(t.engine is not module for t in trainers):
        raise ValueError(
            f"these {len(trainers)} trainers cannot share a pass: {sorted(map(str, keys))}"
        )
    if stop_at_step is not None and len(trainers) != 1:
        raise ValueError("stop_at_step applies to a pass of one trainer")
    for t in trainers:
        if t.finished:
            raise RuntimeError("training has already finished: nothing left to train")
    engine = module.build(trainers)
    engine.start_epoch([t.epoch_order() for t in trainers])
    for t in trainers:
        t.set_train_mode(True)
    n, bs, batches = len(first.train_data), first.cfg.train.batch_size, first.batches_per_epoch
    accum = [t.cfg.train.accum_steps for t in trainers]
    outcome: list[dict[str, float] | Diverged | None] = [None] * len(trainers)
    live = list(range(len(trainers)))  # heads still training in this pass
    b = first.batch_in_epoch
    while b < batches and live:
        sizes = [window_samples(b, a, bs, n, batches) for a in accum]
        rows = engine.micro_batch(b, sizes)
        b += 1
        ending = []
        for i in live:
            trainers[i].samples_seen += rows
            trainers[i].batch_in_epoch = b
            if b == window_end(b - 1, accum[i], batches):
                ending.append(i)
        if not ending:
            continue
        losses = dict(zip(ending, engine.window_losses(ending), strict=True))
        for i in [i for i in ending if not math.isfinite(losses[i])]:
            outcome[i] = trainers[i].diverge(losses[i])
            live.remove(i)
            ending.remove(i)
        if not ending:
            continue
        lrs = {i: trainers[i].current_lr() for i in ending}  # the LR each step uses
        for i, (stepped, grad_norm) in zip(ending, engine.optimizer_step(ending), strict=True):
            if not stepped:
                continue  # fp16's GradScaler skipped it: neither the schedule nor the count moves
            t = trainers[i]
            t.scheduler.step()
            t.global_step += 1
            t.record_step(t.global_step - 1, lrs[i], losses[i], grad_norm)
            if on_step is not None:
                on_step(t)
            every = t.cfg.train.checkpoint_every_steps
            if every and t.global_step % every == 0 and t.log_dir is not None:
                engine.store()
                t.save_checkpoint(t.log_dir / "checkpoints")
        if stop_at_step is not None and first.global_step >= stop_at_step:
            break
    validated = [i for i in live if b == batches and trainers[i].val_data is not None]
    predicted = engine.predict_validation(validated) if validated else {}
    engine.store()
    for i in live:
        outcome[i] = trainers[i].end_pass(b, predicted.get(i))
    return outcome
