"""Small deterministic problems for trainer tests (test helpers, not part of the package)."""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from tune_eegpt.config import RunConfig
from tune_eegpt.training.batches import TensorBatches
from tune_eegpt.training.trainer import ProbeTrainer


def toy_data(n: int, dim: int = 6, seed: int = 0) -> TensorBatches:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, dim, generator=g)
    y = ((x[:, 0] + 0.5 * torch.randn(n, generator=g)) > 0).float()
    return TensorBatches(x, y, recording_ids=np.arange(n) // 5)


def toy_head(dim: int = 6, dropout: float = 0.0, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    layers = [nn.Dropout(dropout)] if dropout else []
    return nn.Sequential(*layers, nn.Linear(dim, 8), nn.Tanh(), nn.Linear(8, 1), nn.Flatten(0))


def toy_config(**overrides) -> RunConfig:
    base = {"device": "cpu", "epochs": 3, "batch_size": 8, "max_lr": 1e-2, "encoder": "none"}
    base.update(overrides)
    return RunConfig().with_overrides(base)


def toy_trainer(n: int = 50, log_dir=None, dropout: float = 0.0, **overrides) -> ProbeTrainer:
    cfg = toy_config(**overrides)
    return ProbeTrainer(
        cfg, toy_head(dropout=dropout), toy_data(n), toy_data(40, seed=1), log_dir=log_dir
    )


def onecycle_cos_lr(
    step: int,
    total: int,
    max_lr: float,
    pct_start: float,
    div_factor: float = 25.0,
    final_div_factor: float = 1e4,
) -> float:
    """The LR of optimizer step ``step`` (0-based) by OneCycle's published formula
    (two phases, cosine annealing), written independently of torch."""
    initial = max_lr / div_factor
    floor = initial / final_div_factor
    warmup_end = pct_start * total - 1
    if step <= warmup_end:
        start, end, pct = initial, max_lr, step / warmup_end
    else:
        start, end, pct = max_lr, floor, (step - warmup_end) / (total - 1 - warmup_end)
    return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1)


def record_lrs_used(trainer: ProbeTrainer) -> list[float]:
    """LRs the optimizer holds at the moment each optimizer.step() runs."""
    seen: list[float] = []
    trainer.optimizer.register_step_pre_hook(
        lambda opt, args, kwargs: seen.append(opt.param_groups[0]["lr"])
    )
    return seen
