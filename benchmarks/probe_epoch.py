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

Every figure is the median over ``--epochs`` epochs (the floor: over 20 copies). Wall
times on a shared machine move with its load; the ratios are taken inside one run.
"""

from __future__ import annotations

import argparse
import json
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


def epoch_seconds(trainer: ProbeTrainer, epochs: int) -> list[float]:
    times = []
    for _ in range(epochs):
        start = time.perf_counter()
        trainer.train_epoch()
        times.append(time.perf_counter() - start)
    return times


def floor_seconds(n_rows: int, row_bytes: int, repeats: int = 20) -> float:
    src = np.random.default_rng(0).integers(0, 255, n_rows * row_bytes, dtype=np.uint8)
    dst = np.empty_like(src)
    times = []
    for _ in range(repeats + 1):
        start = time.perf_counter()
        np.copyto(dst, src)
        times.append(time.perf_counter() - start)
    return statistics.median(times[1:])


def breakdown(trainer: ProbeTrainer, epochs: int) -> dict[str, float]:
    """Seconds per epoch of each stage of the fused path, each run alone."""
    fused, t = trainer.fused, trainer.cfg.train
    n = len(trainer.train_data)
    rows_per_chunk = fused.chunk_batches * t.batch_size
    stages: dict[str, list[float]] = {k: [] for k in ("permutation", "gather", "dropout")}
    stages.update({"cast to float32": [], "forward + backward": [], "optimizer step": []})
    for epoch in range(epochs):
        clock = time.perf_counter()
        order = epoch_permutation(trainer.sampler_seed, epoch, n)
        fused.start_epoch(order, epoch)
        stages["permutation"].append(time.perf_counter() - clock)
        gather = drop = cast = 0.0
        chunks = []
        for c, lo in enumerate(range(0, n, rows_per_chunk)):
            index = fused._order[lo : lo + rows_per_chunk]
            clock = time.perf_counter()
            z = fused.rows.gather(index)
            gather += time.perf_counter() - clock
            clock = time.perf_counter()
            half_dropout_(z, fused.seed, epoch, c)
            drop += time.perf_counter() - clock
            clock = time.perf_counter()
            x = z.float()
            cast += time.perf_counter() - clock
            chunks.append((x, fused.rows.labels[index]))
        stages["gather"].append(gather)
        stages["dropout"].append(drop)
        stages["cast to float32"].append(cast)
        math_s = step_s = 0.0
        for x_chunk, y_chunk in chunks:
            for lo in range(0, len(x_chunk), t.batch_size):
                clock = time.perf_counter()
                loss = fused._loss_and_grads(
                    x_chunk[lo : lo + t.batch_size], y_chunk[lo : lo + t.batch_size], t.batch_size
                )
                math_s += time.perf_counter() - clock
                clock = time.perf_counter()
                trainer._optimizer_step(loss.item())
                step_s += time.perf_counter() - clock
        stages["forward + backward"].append(math_s)
        stages["optimizer step"].append(step_s)
    return {k: statistics.median(v) for k, v in stages.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
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
    row_bytes = fused.fused.rows.width * torch.empty(0, dtype=fused.fused.rows.dtype).element_size()
    floor = floor_seconds(n, row_bytes)
    generic_s = statistics.median(epoch_seconds(generic, args.epochs))
    fused_s = statistics.median(epoch_seconds(fused, args.epochs))
    stages = breakdown(make_trainer(cfg, prepared, fast_path=True), args.epochs - 1)
    stages["loop and rest"] = max(fused_s - sum(stages.values()), 0.0)

    mb = n * row_bytes / 1e6
    print(
        f"train rows {n}, {row_bytes} B each ({mb:.1f} MB float16), batch "
        f"{cfg.train.batch_size}, {fused.batches_per_epoch} steps, 1 thread"
    )
    print(f"memory floor (copy {mb:.1f} MB) {floor * 1e3:8.2f} ms  ({mb / 1e3 / floor:.1f} GB/s)")
    print(f"generic path epoch    {generic_s * 1e3:8.2f} ms  = {generic_s / floor:6.1f}x floor")
    print(
        f"fused path epoch      {fused_s * 1e3:8.2f} ms  = {fused_s / floor:6.1f}x floor"
        f"  ({generic_s / fused_s:.1f}x faster)"
    )
    print("fused epoch, stage by stage     ms/epoch   us/row")
    for name, seconds in stages.items():
        print(f"  {name:<26} {seconds * 1e3:9.2f} {seconds / n * 1e6:8.2f}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(
            json.dumps(
                {
                    "train_rows": n,
                    "row_bytes": row_bytes,
                    "batch_size": cfg.train.batch_size,
                    "floor_s": floor,
                    "generic_epoch_s": generic_s,
                    "fused_epoch_s": fused_s,
                    "generic_over_floor": generic_s / floor,
                    "fused_over_floor": fused_s / floor,
                    "stages_s": stages,
                },
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
