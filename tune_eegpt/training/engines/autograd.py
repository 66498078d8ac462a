"""The autograd engine: the reference step for any head, precision, adapter or live encoder.

One trainer at a time: forward through (adapter, encoder,) head under autocast, backward
through autograd (fp16 with torch's GradScaler), ``torch.optim.AdamW.step``. Every other
engine is tested against this one.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from tune_eegpt.training.float8 import as_float32

if TYPE_CHECKING:
    from tune_eegpt.training.trainer import ProbeTrainer

NAME = "autograd"
PRIORITY = 0  # the fallback: applies to everything


def blocker(trainer: ProbeTrainer) -> str | None:
    return None


def pack_key(trainer: ProbeTrainer) -> tuple:
    return (NAME, id(trainer))  # never shares a pass


def build(trainers: Sequence[ProbeTrainer]) -> AutogradStep:
    if len(trainers) != 1:
        raise ValueError(f"the autograd engine trains one trainer at a time, got {len(trainers)}")
    return AutogradStep(trainers[0])


class AutogradStep:
    def __init__(self, trainer: ProbeTrainer) -> None:
        self.trainer = trainer
        self._order: np.ndarray | None = None
        self._window_loss: torch.Tensor | float = 0.0
        self._stepped = False
        trainer.optimizer.register_step_post_hook(lambda *_: setattr(self, "_stepped", True))

    def start_epoch(self, orders: Sequence[np.ndarray]) -> None:
        self._order = orders[0]
        self._window_loss = 0.0

    def micro_batch(self, b: int, window_samples: Sequence[int]) -> int:
        tr = self.trainer
        bs = tr.cfg.train.batch_size
        x, y = tr.train_data.get_batch(self._order[b * bs : (b + 1) * bs])
        x = as_float32(x.to(tr.device, non_blocking=True))  # float16/8 travel as such
        y = y.to(tr.device, non_blocking=True)
        dtype = tr.autocast_dtype
        with torch.autocast(tr.device.type, dtype=dtype, enabled=dtype is not None):
            logits = tr.forward(x)
        loss = (
            nn.functional.binary_cross_entropy_with_logits(logits.float(), y, reduction="sum")
            / window_samples[0]
        )
        if tr.scaler is not None:
            tr.scaler.scale(loss).backward()
        else:
            loss.backward()
        self._window_loss = self._window_loss + loss.detach()
        return len(y)

    def window_losses(self, heads: Sequence[int]) -> list[float]:
        loss = float(self._window_loss)  # a sync point, once per optimizer step
        self._window_loss = 0.0
        return [loss]

    def optimizer_step(self, heads: Sequence[int]) -> list[tuple[bool, float]]:
        tr = self.trainer
        optimizer = tr.optimizer
        if tr.scaler is not None:
            tr.scaler.unscale_(optimizer)
        params = [p for g in optimizer.param_groups for p in g["params"]]
        clip = tr.cfg.optim.grad_clip
        if clip:
            grad_norm = torch.nn.utils.clip_grad_norm_(params, clip)
        else:  # the norm is logged; a clip coefficient of 1.0 would change nothing
            grad_norm = torch.nn.utils.get_total_norm(
                [p.grad for p in params if p.grad is not None]
            )
        self._stepped = False  # set by the optimizer's post-step hook
        if tr.scaler is not None:
            tr.scaler.step(optimizer)  # skips optimizer.step() on inf/nan gradients
            tr.scaler.update()
        else:
            optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return [(self._stepped, float(grad_norm))]

    def predict_validation(self, heads: Sequence[int]) -> dict[int, tuple]:
        return {}  # the trainer predicts with its own modules

    def store(self) -> None:
        """The trainer's modules and optimizer are this engine's state: nothing to copy."""
