"""One cached-feature train epoch of the probe against its memory floor, with a breakdown.

    python benchmarks/probe_epoch.py --workdir /tmp/perf_probe \
        [--json benchmarks/results/probe_epoch.json]

On the default search's data (the synthetic corpus and small encoder of
``tune_eegpt/configs/synthetic_default.yaml``; caches under ``--workdir``, built if
missing), 1 torch thread, the default probe (hidden 16, dropout 0.5, batch 64, fp32):

- floor: a copy of the train split's feature bytes (rows x 8,192 B of float16) from one
  contiguous array to another, the least any epoch that reads every row once can cost;
- generic path: ``ProbeTrainer(..., fast_path=False)``, the autograd step (the code before
  the fused step), ``train_epoch`` without validation;
- fused path: ``ProbeTrainer`` as every run builds it (training/fused_probe.py);
- breakdown of the fused epoch: each stage run alone over one epoch's micro-batches, in
  microseconds per row; "loop and rest" is the measured epoch minus the stages.

Each figure is given as CPU time (``time.thread_time``, median), and as wall time, best
(min) and median, over ``--epochs`` epochs (the floor: over 20 copies; the stages: per
call). On a shared machine wall time counts the slices other processes take from this
one, and a 1 ms copy is preempted far less often than a 50 ms epoch; CPU time counts only
this thread's own work, so the headline ratio is CPU over CPU, taken in this run.
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
from tune_eegpt.training.dropout_bits import half_dropout_  # noqa: E402
from tune_eegpt.training.trainer import ProbeTrainer, epoch_permutation  # noqa: E402


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


def breakdown(trainer: ProbeTrainer, epochs: int) -> dict[str, tuple[float, float]]:
    """Each stage of the fused path, run alone: (best, median) seconds per call times its
    calls per epoch."""
    fused, t = trainer.fused, trainer.cfg.train
    n = len(trainer.train_data)
    rows_per_chunk = fused.chunk_batches * t.batch_size
    names = ["permutation", "gather", "dropout bits", "cast to float32"]
    names += ["forward + backward", "optimizer step"]
    calls: dict[str, list[float]] = {k: [] for k in names}
    per_epoch = dict.fromkeys(names, 0)

    def timed(name, fn, *args):
        clock = time.perf_counter()
        out = fn(*args)
        calls[name].append(time.perf_counter() - clock)
        per_epoch[name] += epoch == 0
        return out

    width, dtype = fused.rows.width, fused.rows.dtype
    z_buf = torch.empty(rows_per_chunk, width, dtype=dtype)  # reused, as in the trainer
    x = torch.empty(t.batch_size, width)
    for epoch in range(epochs):
        order = timed("permutation", epoch_permutation, trainer.sampler_seed, epoch, n)
        fused.start_epoch(order, epoch)
        for c, lo in enumerate(range(0, n, rows_per_chunk)):
            index = fused._order[lo : lo + rows_per_chunk]
            z = timed("gather", fused.rows.gather, index, z_buf[: len(index)])
            timed("dropout bits", half_dropout_, z, fused.seed, epoch, c)
            y = fused.rows.labels[index].view(-1, 1)
            for b in range(0, len(z), t.batch_size):
                zb, yb = z[b : b + t.batch_size], y[b : b + t.batch_size]
                xb = timed("cast to float32", x[: len(zb)].copy_, zb)
                loss = timed("forward + backward", fused._loss_and_grads, xb, yb, t.batch_size)
                timed("optimizer step", trainer._optimizer_step, float(loss))
    return {
        k: (min(v) * per_epoch[k], statistics.median(v) * per_epoch[k]) for k, v in calls.items()
    }


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
    fused = make_trainer(cfg, prepared, fast_path=True)
    assert fused.fused is not None, fused.fused_skipped_because
    n = len(fused.train_data)
    rows = fused.fused.rows
    row_bytes = rows.width * torch.empty(0, dtype=rows.dtype).element_size()
    runs = {
        "floor": floor_seconds(n, row_bytes),
        "generic": epoch_seconds(generic, args.epochs),
        "fused": epoch_seconds(fused, args.epochs),
    }
    best = {k: min(wall) for k, (wall, _) in runs.items()}
    median = {k: statistics.median(wall) for k, (wall, _) in runs.items()}
    cpu = {k: statistics.median(c) for k, (_, c) in runs.items()}
    stages = breakdown(make_trainer(cfg, prepared, fast_path=True), args.epochs - 1)

    mb = n * row_bytes / 1e6
    print(
        f"train rows {n}, {row_bytes} B each ({mb:.1f} MB), batch {cfg.train.batch_size}, "
        f"{fused.batches_per_epoch} steps, 1 thread; load average {os.getloadavg()[0]:.1f}"
    )
    print(
        f"{'':32} {'CPU ms':>8} {'x floor':>8} {'best ms':>9} {'x floor':>8} "
        f"{'median ms':>10} {'x floor':>8}"
    )
    labels = {
        "floor": f"memory floor (copy {mb:.1f} MB)",
        "generic": "generic path epoch (autograd)",
        "fused": "fused path epoch",
    }
    for key, label in labels.items():
        print(
            f"{label:32} {cpu[key] * 1e3:8.2f} {cpu[key] / cpu['floor']:8.1f} "
            f"{best[key] * 1e3:9.2f} {best[key] / best['floor']:8.1f} "
            f"{median[key] * 1e3:10.2f} {median[key] / median['floor']:8.1f}"
        )
    print(f"fused vs generic: {best['generic'] / best['fused']:.1f}x faster (best)")
    print(f"fused epoch by stage, each alone   {'best ms':>9} {'us/row':>7} {'median ms':>10}")
    for name, (lo, mid) in stages.items():
        print(f"  {name:32} {lo * 1e3:9.2f} {lo / n * 1e6:7.2f} {mid * 1e3:10.2f}")
    rest = best["fused"] - sum(lo for lo, _ in stages.values())
    print(f"  {'loop and rest (epoch - stages)':32} {rest * 1e3:9.2f} {rest / n * 1e6:7.2f}")
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
            "stages_best_median_s": stages,
        }
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
