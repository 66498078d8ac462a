"""One cached-feature train epoch of the probe against its memory floor.

    python benchmarks/probe_epoch.py --workdir /tmp/perf_probe \
        [--json benchmarks/results/probe_epoch.json]

On the default search's data (the synthetic corpus and small encoder of
``tune_eegpt/configs/synthetic_default.yaml``; caches under ``--workdir``, built if
missing), 1 torch thread, the default probe (hidden 16, dropout 0.5, batch 64, fp32):

- floor: a copy of the train split's feature bytes (rows x 8,192 B of float16) from one
  contiguous array to another, the least any epoch that reads every row once can cost;
- autograd engine: ``ProbeTrainer(..., fast_path=False)``, the reference step,
  ``train_epoch`` without validation;
- packed engine: ``ProbeTrainer`` as every run builds it (training/engines/packed.py), a
  pass of one trial; its CPU time per optimizer step is printed too.

Each figure is given as CPU time (``time.thread_time``, median), and as wall time, best
(min) and median, over ``--epochs`` epochs (the floor: over 20 copies). On a shared
machine wall time counts the slices other processes take from this one, and a 1 ms copy is
preempted far less often than a 50 ms epoch; CPU time counts only this thread's own work,
so the headline ratio is CPU over CPU, taken in this run.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from importlib import resources
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tune_eegpt.config import RunConfig  # noqa: E402
from tune_eegpt.models.probe import build_probe  # noqa: E402
from tune_eegpt.pipeline import (  # noqa: E402
    open_features,
    open_window_cache,
    prepare_data,
    split_sources,
)
from tune_eegpt.training.trainer import ProbeTrainer  # noqa: E402


def default_config(workdir: Path, epochs: int) -> RunConfig:
    path = str(resources.files("tune_eegpt") / "configs" / "synthetic_default.yaml")
    return RunConfig.from_yaml(path).with_overrides(
        {
            "cache_dir": str(workdir / "cache"),
            "tensorboard": False,
            "threads": 1,
            "device": "cpu",
            "epochs": epochs,
        },
        source="benchmark",
    )


def make_trainer(cfg: RunConfig, prepared, fast_path: bool) -> ProbeTrainer:
    cache = open_window_cache(prepared.window_cache, cfg.data.split_seed, cfg.data.val_fraction)
    train = split_sources(prepared, cache, "train")
    n_patches, _, embed_dim = open_features(prepared.feature_cache).feature_shape
    torch.manual_seed(cfg.train.seed)
    _, head = build_probe(cfg.probe, len(cache.channels), n_patches, embed_dim)
    return ProbeTrainer(cfg, head, train, None, fast_path=fast_path)


def epoch_seconds(trainer: ProbeTrainer, epochs: int) -> tuple[list[float], list[float]]:
    """(wall, CPU) seconds of each train epoch."""
    wall, cpu = [], []
    for _ in range(epochs):
        start, start_cpu = time.perf_counter(), time.thread_time()
        trainer.train_epoch()
        wall.append(time.perf_counter() - start)
        cpu.append(time.thread_time() - start_cpu)
    return wall, cpu


def floor_seconds(
    n_rows: int, row_bytes: int, repeats: int = 20
) -> tuple[list[float], list[float]]:
    """(wall, CPU) seconds of copying the split's bytes, contiguous to contiguous."""
    src = np.random.default_rng(0).integers(0, 255, n_rows * row_bytes, dtype=np.uint8)
    dst = np.empty_like(src)
    wall, cpu = [], []
    for _ in range(repeats + 1):
        start, start_cpu = time.perf_counter(), time.thread_time()
        np.copyto(dst, src)
        wall.append(time.perf_counter() - start)
        cpu.append(time.thread_time() - start_cpu)
    return wall[1:], cpu[1:]


def main() -> None:
    parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/perf_probe"))
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    cfg = default_config(args.workdir, args.epochs)
    torch.set_num_threads(1)
    prepared = prepare_data(cfg, workers=1, progress=False)
    generic = make_trainer(cfg, prepared, fast_path=False)
    packed = make_trainer(cfg, prepared, fast_path=True)
    assert packed.engine_name == "packed", packed.engine_reason
    n = len(packed.train_data)
    rows = packed.train_rows
    row_bytes = rows.width * torch.empty(0, dtype=rows.dtype).element_size()
    runs = {
        "floor": floor_seconds(n, row_bytes),
        "generic": epoch_seconds(generic, args.epochs),
        "packed": epoch_seconds(packed, args.epochs),
    }
    best = {k: min(wall) for k, (wall, _) in runs.items()}
    median = {k: statistics.median(wall) for k, (wall, _) in runs.items()}
    cpu = {k: statistics.median(c) for k, (_, c) in runs.items()}

    mb = n * row_bytes / 1e6
    print(
        f"train rows {n}, {row_bytes} B each ({mb:.1f} MB), batch {cfg.train.batch_size}, "
        f"{packed.batches_per_epoch} steps, 1 thread; load average {os.getloadavg()[0]:.1f}"
    )
    print(
        f"{'':32} {'CPU ms':>8} {'x floor':>8} {'best ms':>9} {'x floor':>8} "
        f"{'median ms':>10} {'x floor':>8}"
    )
    labels = {
        "floor": f"memory floor (copy {mb:.1f} MB)",
        "generic": "autograd engine epoch",
        "packed": "packed engine epoch (K=1)",
    }
    for key, label in labels.items():
        print(
            f"{label:32} {cpu[key] * 1e3:8.2f} {cpu[key] / cpu['floor']:8.1f} "
            f"{best[key] * 1e3:9.2f} {best[key] / best['floor']:8.1f} "
            f"{median[key] * 1e3:10.2f} {median[key] / median['floor']:8.1f}"
        )
    print(f"packed vs autograd: {best['generic'] / best['packed']:.1f}x faster (best)")
    steps = packed.batches_per_epoch
    print(f"packed engine, one trial: {cpu['packed'] / steps * 1e3:.3f} ms CPU per step")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        result = {
            "train_rows": n,
            "row_bytes": row_bytes,
            "batch_size": cfg.train.batch_size,
            "load_average": os.getloadavg()[0],
            "cpu_median_s": cpu,
            "cpu_over_floor": {k: v / cpu["floor"] for k, v in cpu.items()},
            "best_s": best,
            "median_s": median,
            "best_over_floor": {k: v / best["floor"] for k, v in best.items()},
        }
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
