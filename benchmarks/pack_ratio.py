"""Per-trial-epoch cost of K trials trained in one pass, against K passes of one trial.

    python benchmarks/pack_ratio.py [--shape default|large|both] [--ks 1 4 16 64]
        [--rows N] [--threads 1] [--device cpu|cuda] [--json FILE]

Rows are written directly as a feature table (float16, a planted class signal), in the
shapes of the two probes: ``default`` (the default corpus's small encoder: 16 patches x
4 x 64, 8 KiB a row) and ``large`` (the large encoder: 16 x 4 x 512, 64 KiB a row, as
TUAB's 747k train rows are, 49 GB in all). For each K, K trainers with different max_lr,
pct_start and accum_steps are trained one epoch (no validation) twice, in the same
process and run: once as one pass of all K (training/train_loop.train_together) and once
as K passes of one; the figure is the ratio of the two (best of ``--repeats``). Trials
have the same seed (they share one read of the rows and one mask per micro-batch) or
different seeds (each reads and masks its own), reported separately.

The matmul floor beside each figure is the pass's GEMM FLOPs (the two products with each
head's collapsed map, and the per-head weight products) over this machine's GEMM rate,
measured here on the pass's own widest GEMM shape. Time grows linearly with the rows;
memory is the table plus K heads (a few hundred KB each), so the figure at ``--rows``
holds for TUAB's row count up to the table's own size.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tune_eegpt.config import RunConfig  # noqa: E402
from tune_eegpt.models.probe import LinearProbeHead  # noqa: E402
from tune_eegpt.training.batches import TensorBatches  # noqa: E402
from tune_eegpt.training.train_loop import train_together  # noqa: E402
from tune_eegpt.training.trainer import ProbeTrainer  # noqa: E402

SHAPES = {"default": (16, 4, 64), "large": (16, 4, 512)}
HIDDEN = 16
BATCH = 64


def feature_table(n: int, shape: tuple[int, ...], device: str) -> TensorBatches:
    g = torch.Generator().manual_seed(0)
    y = (torch.rand(n, generator=g) < 0.5).float()
    direction = torch.randn(shape, generator=torch.Generator().manual_seed(1))
    x = torch.empty((n, *shape), dtype=torch.float16)
    for lo in range(0, n, 4096):  # bounded float32 temporaries
        hi = min(lo + 4096, n)
        part = torch.randn((hi - lo, *shape), generator=g)
        x[lo:hi] = part + 0.05 * direction * (2 * y[lo:hi] - 1).view(-1, 1, 1, 1)
    return TensorBatches(x.to(device), y.to(device))


def trainers(data: TensorBatches, shape, k: int, same_seed: bool, device: str) -> list:
    rng = np.random.default_rng(k)
    out = []
    for i in range(k):
        seed = 0 if same_seed else i
        cfg = RunConfig().with_overrides(
            {
                "encoder": "none",
                "device": device,
                "epochs": 100,  # room for every repeat of the same epoch
                "batch_size": BATCH,
                "seed": seed,
                "max_lr": float(10 ** rng.uniform(-4, -2)),
                "pct_start": float(rng.uniform(0.1, 0.4)),
                "accum_steps": int(rng.choice([1, 2, 4])),
                "tensorboard": False,
            }
        )
        torch.manual_seed(seed)
        head = LinearProbeHead(shape[0], shape[2], num_summary=shape[1], hidden=HIDDEN)
        out.append(ProbeTrainer(cfg, head, data, None))
    return out


def timed_pass(group: list, sync) -> float:
    for t in group:  # the same epoch again each time: same work, fresh position
        t.epoch, t.batch_in_epoch = 0, 0
    start = time.perf_counter()
    train_together(group)
    sync()
    return time.perf_counter() - start


def gemm_rate(rows: int, width: int, k: int, device: str, sync) -> float:
    """FLOP/s of the pass's widest product, (B, F) x (F, K), on this machine."""
    a = torch.randn(rows, width, device=device)
    b = torch.randn(width, k, device=device)
    best = float("inf")
    for _ in range(20):
        start = time.perf_counter()
        torch.mm(a, b)
        sync()
        best = min(best, time.perf_counter() - start)
    return 2 * rows * width * k / best


def pass_flops(n_rows: int, shape, k: int) -> float:
    """GEMM FLOPs of one epoch of K heads: logits and Y (2 x 2BF per head and row), the
    collapsed map V = W2 W1 and the two weight gradients (3 x 2 N H S*D per head and
    micro-batch)."""
    n, s, d = shape
    width = n * s * d
    batches = -(-n_rows // BATCH)
    per_batch = 2 * 2 * BATCH * width * k + 3 * 2 * n * HIDDEN * s * d * k
    return batches * per_batch


def main() -> None:
    p = argparse.ArgumentParser(allow_abbrev=False)
    p.add_argument("--shape", choices=["default", "large", "both"], default="both")
    p.add_argument("--ks", type=int, nargs="+", default=[1, 4, 16, 64])
    p.add_argument("--rows", type=int, default=None, help="default: 4096 (default), 1024 (large)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    sync = torch.cuda.synchronize if args.device.startswith("cuda") else (lambda: None)
    figures = []
    for name in ["default", "large"] if args.shape == "both" else [args.shape]:
        shape = SHAPES[name]
        n_rows = args.rows or (4096 if name == "default" else 1024)
        data = feature_table(n_rows, shape, args.device)
        width = int(np.prod(shape))
        for same_seed in (True, False):
            for k in args.ks:
                group = trainers(data, shape, k, same_seed, args.device)
                together = min(timed_pass(group, sync) for _ in range(args.repeats))
                apart = min(sum(timed_pass([t], sync) for t in group) for _ in range(args.repeats))
                rate = gemm_rate(BATCH, width, k if same_seed else 1, args.device, sync)
                floor = pass_flops(n_rows, shape, k) / rate
                row = {
                    "shape": name,
                    "rows": n_rows,
                    "row_bytes": width * 2,
                    "seeds": "same" if same_seed else "different",
                    "k": k,
                    "pass_s": together,
                    "k_passes_s": apart,
                    "ratio": together / apart,
                    "per_trial_epoch_ms": 1e3 * together / k,
                    "per_step_ms_one_trial": 1e3 * apart / k / (-(-n_rows // BATCH)),
                    "matmul_floor_s": floor,
                    "gemm_gflops": rate / 1e9,
                }
                figures.append(row)
                print(
                    f"{name:7s} {row['seeds']:9s} K={k:3d}: one pass {together:7.3f} s, "
                    f"K passes {apart:7.3f} s, ratio {row['ratio']:.2f}; "
                    f"{row['per_trial_epoch_ms']:.1f} ms per trial-epoch; "
                    f"matmul floor {floor:.3f} s ({row['gemm_gflops']:.0f} GFLOP/s)",
                    flush=True,
                )
    meta = {"threads": args.threads, "device": args.device, "torch": torch.__version__}
    if args.json:
        args.json.write_text(json.dumps({"meta": meta, "figures": figures}, indent=2))


if __name__ == "__main__":
    main()
