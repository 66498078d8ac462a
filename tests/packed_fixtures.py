"""Cached-feature problems for the packed engine (test helpers, not part of the package)."""

from __future__ import annotations

import os

import numpy as np
import torch

from tune_eegpt.config import RunConfig
from tune_eegpt.models.probe import LinearProbeHead
from tune_eegpt.training.batches import TensorBatches
from tune_eegpt.training.trainer import ProbeTrainer

SHAPE = (4, 4, 16)  # (patches, summary tokens, embed_dim): 256 values per row


def feature_data(n: int, seed: int = 0, signal: float = 0.06) -> TensorBatches:
    """float16 features (n, *SHAPE) whose class shifts a random direction by ``signal``
    per element: a probe reaches an AUROC near 0.85, not 1, so changes show."""
    g = torch.Generator().manual_seed(seed)
    y = (torch.rand(n, generator=g) < 0.5).float()
    direction = torch.randn(SHAPE, generator=torch.Generator().manual_seed(1234))
    x = torch.randn(n, *SHAPE, generator=g) + signal * direction * (2 * y - 1).view(-1, 1, 1, 1)
    return TensorBatches(x.half(), y, recording_ids=np.arange(n) // 4)


def probe_head(seed: int = 0, dropout: float = 0.5) -> LinearProbeHead:
    torch.manual_seed(seed)
    n, s, d = SHAPE
    return LinearProbeHead(n, d, num_summary=s, hidden=8, dropout=dropout)


# benchmarks/gpu_check.sh runs these tests on a GPU with TUNE_EEGPT_TEST_DEVICE=cuda
DEVICE = os.environ.get("TUNE_EEGPT_TEST_DEVICE", "cpu")


def probe_config(**overrides) -> RunConfig:
    base = {"device": DEVICE, "epochs": 4, "batch_size": 16, "max_lr": 3e-3, "encoder": "none"}
    base.update(overrides)
    return RunConfig().with_overrides(base)


def probe_trainer(
    n: int = 200,
    seed: int = 0,
    fast_path: bool = True,
    log_dir=None,
    n_val: int = 100,
    **overrides,
) -> ProbeTrainer:
    cfg = probe_config(seed=seed, **overrides)
    return ProbeTrainer(
        cfg,
        probe_head(seed),
        feature_data(n, seed=seed),
        feature_data(n_val, seed=10_000 + seed),
        log_dir=log_dir,
        fast_path=fast_path,
    )
