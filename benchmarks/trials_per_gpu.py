"""How many probe trials share one GPU well: concurrent head trainings on cached features.

    python benchmarks/trials_per_gpu.py --device cuda --processes 1 2 4 8

With the encoder's outputs cached, a trial trains only the head, which leaves a GPU mostly
idle; fractional GPUs (``--gpus-per-trial 0.25``) put several trials on one. This runs
1, 2, 4, ... ProbeTrainers at once in separate processes (as Ray's trial actors would be),
each on the same memory-mapped feature cache of the large encoder's shape (16 x 4 x 512,
float16, random values), and prints the aggregate training throughput and each process's
peak GPU memory. Without Ray: the figure is the GPU's, not the scheduler's.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from tune_eegpt.config import RunConfig
from tune_eegpt.models.probe import LinearProbeHead
from tune_eegpt.training.batches import RowSubset
from tune_eegpt.training.features import FeatureBatches, build_feature_cache

FEATURE_SHAPE = (16, 4, 512)  # the large encoder on 4 s windows


class RandomFeatures(nn.Module):
    """Stands in for the encoder when writing the cache: random outputs of its shape."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.randn(len(x), *FEATURE_SHAPE)


class Labels:
    def __init__(self, n: int) -> None:
        self.n = n
        self.recording_ids = np.arange(n) // 200

    def __len__(self) -> int:
        return self.n

    def get_batch(self, indices: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.zeros(len(indices), 1), torch.from_numpy((indices % 2).astype(np.float32))


def one_trial(path: str, rows: int, epochs: int, device: str, precision: str, queue) -> None:
    features = FeatureBatches.open(path)
    train = RowSubset(features, np.arange(rows - 2000))
    val = RowSubset(features, np.arange(rows - 2000, rows))
    cfg = RunConfig().with_overrides(
        {
            "encoder": "none",
            "epochs": epochs,
            "device": device,
            "precision": precision,
            "threads": 1,
            "max_lr": 1e-3,
            "pct_start": 0.2,
            "tensorboard": False,
        }
    )
    torch.manual_seed(0)
    from tune_eegpt.training.trainer import ProbeTrainer

    trainer = ProbeTrainer(cfg, LinearProbeHead(16, 512), train, val)
    started = time.perf_counter()
    while not trainer.finished:
        trainer.train_epoch()
    took = time.perf_counter() - started
    peak = torch.cuda.max_memory_allocated() / 2**20 if device == "cuda" else 0.0
    queue.put({"seconds": took, "peak_mib": peak, "rows": len(train) * epochs})


def main() -> None:
    p = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--precision", default="bf16", choices=["fp32", "bf16"])
    p.add_argument("--rows", type=int, default=20000, help="windows in the feature cache")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--processes", type=int, nargs="+", default=[1, 2, 4, 8])
    p.add_argument("--json", help="also write the results here")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        path = build_feature_cache(
            RandomFeatures(), Labels(args.rows), tmp, key="bench", batch_size=1024, progress=False
        )
        size_gb = Path(path).stat().st_size / 1e9
        print(
            f"feature cache: {args.rows} rows, {size_gb:.2f} GB, "
            f"written in {time.perf_counter() - started:.1f} s"
        )
        ctx = mp.get_context("spawn")
        results = []
        for n in args.processes:
            queue = ctx.Queue()
            procs = [
                ctx.Process(
                    target=one_trial,
                    args=(str(path), args.rows, args.epochs, args.device, args.precision, queue),
                )
                for _ in range(n)
            ]
            started = time.perf_counter()
            for proc in procs:
                proc.start()
            done = [queue.get() for _ in procs]
            for proc in procs:
                proc.join()
            wall = time.perf_counter() - started
            rows = sum(d["rows"] for d in done)
            row = {
                "processes": n,
                "wall_s": round(wall, 2),
                "rows_per_s_total": round(rows / wall),
                "epoch_s_per_trial": round(max(d["seconds"] for d in done) / args.epochs, 2),
                "peak_gpu_mib_per_trial": round(max(d["peak_mib"] for d in done), 1),
            }
            results.append(row)
            print(json.dumps(row), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "results": results}, indent=2))


if __name__ == "__main__":
    main()
