"""Encoder throughput and the cost of one probe epoch: cached features vs. live encoder.

    python benchmarks/encoder_throughput.py                         # CPU, fp32, batch 64
    python benchmarks/encoder_throughput.py --device cuda --dtype bf16 --batch-size 256

1. Encoder windows/second (inference mode, 19 x 1024 windows) for each size.
2. One probe epoch of ``--epoch-windows`` windows at batch ``--probe-batch-size``:
   - cached: the head (forward + backward + AdamW step) reading float16 features from a
     memory-mapped feature cache written by ``build_feature_cache`` (filled with random
     values of the right shape; the timing does not depend on them);
   - live: the frozen encoder's forward in front of the same head step (no adapter);
   - live + adapter: channel adapter -> encoder forward and backward -> head step.
   Cached epochs are timed in full; live epochs from ``--live-steps`` steps, scaled up.

Last results: CPU, torch 2.13, fp32, batch 64, 19 x 1024 windows, 4,096 windows/epoch, on
2 cores shared with other jobs (load ~3.5, so treat them as rough; under such contention
one thread beats two for the small ops of the head). Live epochs scaled up from 2 steps.

    threads  encoder  windows/s   probe epoch: cached    live      live + adapter
    2        large        5.4                  5.6 s     867 s     1,865 s
    1        large        3.2                  4.4 s       -           -
    2        small      176                    3.4 s      26 s        62 s
    1        small      199                    0.64 s     15 s        40 s

No GPU figures yet: run with --device cuda --dtype bf16 --batch-size 256 (and fp32).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import tempfile
import time
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from tune_eegpt.config import STANDARD_10_20
from tune_eegpt.models.eegpt import ENCODER_SIZES, EEGPTEncoder, eegpt_encoder
from tune_eegpt.models.probe import ChannelAdapter, LinearProbeHead
from tune_eegpt.training.features import FeatureBatches, build_feature_cache

CHANNELS = list(STANDARD_10_20)


class RandomWindows:
    """A BatchSource of random microvolt-scale windows, made on demand (no memory)."""

    def __init__(self, n: int, n_channels: int, n_samples: int) -> None:
        self.n, self.shape = n, (n_channels, n_samples)

    def __len__(self) -> int:
        return self.n

    def get_batch(self, indices: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        g = torch.Generator().manual_seed(int(indices[0]))
        x = torch.randn(len(indices), *self.shape, generator=g) * 50
        return x, (torch.as_tensor(indices) % 2).float()


class RandomFeatures(nn.Module):
    """Stands in for the encoder when writing a feature file of the right shape quickly."""

    def __init__(self, encoder: EEGPTEncoder, n_samples: int) -> None:
        super().__init__()
        self.shape = (encoder.num_patches(n_samples), encoder.num_summary_tokens, encoder.embed_dim)
        self.tag = nn.Parameter(torch.tensor(float(encoder.embed_dim)))  # distinct cache key

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.randn(len(x), *self.shape)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def autocast(device: torch.device, dtype: str) -> contextlib.AbstractContextManager:
    if dtype == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def timed(fn: Callable[[], None], device: torch.device, repeats: int) -> float:
    """Median seconds of ``repeats`` calls of ``fn``."""
    times = []
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def encoder_throughput(enc: EEGPTEncoder, args: argparse.Namespace, device: torch.device) -> float:
    x = torch.randn(args.batch_size, len(CHANNELS), args.samples, device=device) * 50

    def run(batch: torch.Tensor = x) -> None:
        with torch.inference_mode(), autocast(device, args.dtype):
            enc(batch)

    run(x[: min(8, len(x))])  # warm-up on a small batch
    return args.batch_size / timed(run, device, args.repeats)


def probe_epoch(enc: EEGPTEncoder, args: argparse.Namespace, device: torch.device) -> dict:
    n_patches = enc.num_patches(args.samples)
    steps = math.ceil(args.epoch_windows / args.probe_batch_size)
    bs = args.probe_batch_size
    head = LinearProbeHead(n_patches, enc.embed_dim).to(device)
    adapter = ChannelAdapter(len(CHANNELS), len(CHANNELS)).to(device)
    opt = torch.optim.AdamW(list(head.parameters()) + list(adapter.parameters()), lr=1e-4)
    y = (torch.arange(bs, device=device) % 2).float()

    def head_step(z: torch.Tensor, yy: torch.Tensor) -> None:
        with autocast(device, args.dtype):
            loss = nn.functional.binary_cross_entropy_with_logits(head(z), yy)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    with tempfile.TemporaryDirectory() as tmp:
        path = build_feature_cache(
            RandomFeatures(enc, args.samples),
            RandomWindows(args.epoch_windows, 19, 64),
            tmp,
            "bench",
            batch_size=512,
            progress=False,
        )
        feats = FeatureBatches.open(path)
        order = np.random.default_rng(0).permutation(len(feats))

        def cached_epoch() -> None:
            for i in range(steps):
                z, yy = feats.get_batch(order[i * bs : (i + 1) * bs])
                head_step(z.to(device, non_blocking=True).float(), yy.to(device))

        cached_epoch()  # warm-up (page cache, allocator)
        cached = timed(cached_epoch, device, 1)

    x = torch.randn(bs, len(CHANNELS), args.samples, device=device) * 50

    def live_step() -> None:
        with torch.no_grad(), autocast(device, args.dtype):
            z = enc(x)
        head_step(z.float(), y)

    def adapter_step() -> None:
        with autocast(device, args.dtype):
            z = enc(adapter(x))  # grads flow through the frozen encoder to the adapter
        head_step(z.float(), y)

    results = {"steps": steps, "cached_s": cached}
    for name, step in (("live_s", live_step), ("adapter_s", adapter_step)):
        if args.live_steps > 0:
            results[name] = steps * timed(step, device, args.live_steps)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--sizes", nargs="+", default=["large", "small"], choices=ENCODER_SIZES)
    parser.add_argument("--samples", type=int, default=1024, help="window length in samples")
    parser.add_argument("--repeats", type=int, default=3, help="timed encoder batches")
    parser.add_argument("--epoch-windows", type=int, default=4096)
    parser.add_argument("--probe-batch-size", type=int, default=64)
    parser.add_argument(
        "--live-steps", type=int, default=2, help="timed steps of the live modes (0: skip them)"
    )
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--json", default=None, help="also write the results to this file")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    report: dict = {
        "device": str(device),
        "dtype": args.dtype,
        "batch_size": args.batch_size,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }
    if device.type == "cuda":
        report["gpu"] = torch.cuda.get_device_name(device)
    print(json.dumps(report))
    for size in args.sizes:
        enc = eegpt_encoder(size, CHANNELS).eval().requires_grad_(False).to(device)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        wps = encoder_throughput(enc, args, device)
        peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else 0.0
        print(f"{size}: encoder {wps:.1f} windows/s, peak GPU memory {peak:.0f} MiB", flush=True)
        epoch = probe_epoch(enc, args, device)
        print(
            f"{size}: probe epoch of {args.epoch_windows} windows ({epoch['steps']} steps): "
            + ", ".join(f"{k[:-2]} {v:.2f} s" for k, v in epoch.items() if k.endswith("_s")),
            flush=True,
        )
        report[size] = {"encoder_windows_per_s": wps, "encoder_peak_mib": peak, **epoch}
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)


if __name__ == "__main__":
    main()
