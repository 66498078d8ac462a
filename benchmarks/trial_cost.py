"""What one search trial costs: a probe epoch on cached features vs. with the live encoder,
and the trial's start-up (trial start -> first optimizer step), reused and fresh actor.

    python benchmarks/trial_cost.py --workdir /tmp/perf_cost \
        [--json benchmarks/results/trial_cost.json]

Runs on the default search's own data: the synthetic corpus of
``tune_eegpt/configs/synthetic_default.yaml`` (window cache under ``--workdir``, built if
missing) and the real ``ProbeTrainer`` built by ``tune_eegpt.pipeline.build_trainer``.

1. Epoch cost, small and large encoder, with the default probe (hidden 16, batch 64):
   - cached: a full ``train_epoch`` (optimizer steps + validation) on the feature cache.
     Small: the real feature cache (``prepare_data``). Large: a feature file of the large
     encoder's shape filled with random values (encoding the corpus with the large encoder
     on a CPU takes long; the head's cost does not depend on the values).
   - live: the same trainer with the frozen encoder in front (``feature_cache=None``),
     timed over ``--live-steps`` optimizer steps and scaled to the epoch's steps, plus one
     validation pass timed over ``--live-steps`` batches and scaled likewise.
2. Start-up, through a real Ray Tune search (``tune_eegpt.search.run_search``, the paper
   space, ``--startup-trials`` trials, max_concurrent 1, reuse_actors=True): ``startup_s``
   of each trial (seconds from ``setup``/``reset_config`` to the first optimizer step).
   The first trial runs in a fresh actor; the later ones in the reused actor. The fresh
   actor's full start-up adds the process start and imports, measured as the wall time
   of ``python -c "import trainables, tune_eegpt.pipeline"`` (median of 3).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tune_eegpt.config import RunConfig  # noqa: E402
from tune_eegpt.models.eegpt import eegpt_encoder  # noqa: E402
from tune_eegpt.pipeline import (  # noqa: E402
    PreparedData,
    build_trainer,
    open_window_cache,
    prepare_data,
)
from tune_eegpt.training.features import build_feature_cache  # noqa: E402


def default_config(workdir: Path, **overrides: Any) -> RunConfig:
    path = str(resources.files("tune_eegpt") / "configs" / "synthetic_default.yaml")
    cfg = RunConfig.from_yaml(path)
    return cfg.with_overrides(
        {"cache_dir": str(workdir / "cache"), "tensorboard": False, "threads": 1, **overrides},
        source="benchmark",
    )


class RandomFeatures(nn.Module):
    """Stands in for an encoder when writing a feature file of its shape quickly."""

    def __init__(self, shape: tuple[int, ...]) -> None:
        super().__init__()
        self.shape = shape
        self.tag = nn.Parameter(torch.tensor(float(sum(shape))))  # distinct cache key

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.randn(len(x), *self.shape)


def random_feature_cache(cfg: RunConfig, prepared: PreparedData, size: str, out: Path) -> str:
    cache = open_window_cache(prepared.window_cache, cfg.data.split_seed, cfg.data.val_fraction)
    enc = eegpt_encoder(size, list(cache.channels))
    n_samples = round(cfg.data.window_s * cfg.data.sfreq)
    shape = (enc.num_patches(n_samples), enc.num_summary_tokens, enc.embed_dim)
    from tune_eegpt.data.window_cache import WindowSplit

    windows = WindowSplit("all", cache.windows, cache.meta, cache.channels, cache.sfreq)
    path = build_feature_cache(
        RandomFeatures(shape), windows, out, key=f"random-{size}", batch_size=256, progress=False
    )
    return str(path)


def cached_epoch(cfg: RunConfig, prepared: PreparedData, repeats: int) -> dict[str, float]:
    """Median wall time of a full epoch (train steps + validation) on cached features."""
    times = []
    for _ in range(repeats + 1):  # the first builds and warms up
        trainer = build_trainer(cfg, prepared)
        started = time.perf_counter()
        trainer.train_epoch()
        times.append(time.perf_counter() - started)
        trainer.close()
    return {
        "epoch_s": statistics.median(times[1:]),
        "steps": trainer.steps_per_epoch,
        "train_rows": len(trainer.train_data),
        "val_rows": len(trainer.val_data),
    }


def live_epoch(cfg: RunConfig, prepared: PreparedData, steps: int) -> dict[str, float]:
    """An epoch with the live encoder, from ``steps`` timed steps and batches, scaled up."""
    live = PreparedData(prepared.window_cache, None)
    trainer = build_trainer(cfg, live)
    trainer.train_epoch(stop_at_step=1)  # warm-up
    started = time.perf_counter()
    trainer.train_epoch(stop_at_step=1 + steps)
    step_s = (time.perf_counter() - started) / steps
    val = trainer.val_data
    bs = cfg.train.batch_size
    started = time.perf_counter()
    with torch.no_grad():
        for i in range(steps):
            x, _ = val.get_batch(np.arange(i * bs, min((i + 1) * bs, len(val))) % len(val))
            trainer.forward(x)
    val_batch_s = (time.perf_counter() - started) / steps
    trainer.close()
    train_s = step_s * trainer.steps_per_epoch
    val_s = val_batch_s * math.ceil(len(val) / bs)
    return {
        "epoch_s": train_s + val_s,
        "train_s": train_s,
        "val_s": val_s,
        "encoder_windows_per_s": bs / val_batch_s,
    }


def import_seconds(repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        subprocess.run(
            [sys.executable, "-c", "import trainables, tune_eegpt.pipeline"], check=True, cwd=ROOT
        )
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def startup_through_ray(workdir: Path, trials: int) -> dict[str, Any]:
    from search_spaces import load_space
    from tune_eegpt import search

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    storage = workdir / "runs"
    args = search.build_parser().parse_args(
        [
            "--num-samples",
            str(trials),
            "--max-concurrent",
            "1",
            "--storage",
            str(storage),
            "--cache-dir",
            str(workdir / "cache"),
            "--name",
            f"startup-{int(time.time())}",
        ]
    )
    space = load_space("paper")
    cfg = search.base_run_config(args).with_overrides(space.fixed)
    search.run_search(args, cfg, space)
    rows = []
    for result in (storage / args.name).glob("*/result.json"):
        lines = [json.loads(line) for line in result.read_text().splitlines() if line]
        first = next((r for r in lines if not math.isnan(r.get("startup_s", math.nan))), None)
        if first is not None:
            rows.append((first["timestamp"], first["trial_id"], first["startup_s"], first["pid"]))
    rows.sort()
    pids = [r[3] for r in rows]
    fresh = [r[2] for i, r in enumerate(rows) if r[3] not in pids[:i]]
    reused = [r[2] for i, r in enumerate(rows) if r[3] in pids[:i]]
    return {
        "trials": len(rows),
        "fresh_startup_s": fresh,
        "reused_startup_s": reused,
        "actors": len(set(pids)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/perf_cost"))
    parser.add_argument("--live-steps", type=int, default=3, help="timed live steps per size")
    parser.add_argument("--repeats", type=int, default=3, help="timed cached epochs")
    parser.add_argument("--startup-trials", type=int, default=6)
    parser.add_argument("--sizes", nargs="+", default=["small", "large"])
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args()
    torch.set_num_threads(1)
    report: dict[str, Any] = {
        "machine": f"{os.cpu_count()} CPU cores, torch {torch.__version__}",
        "threads": 1,
    }

    base = default_config(args.workdir)
    started = time.perf_counter()
    prepared = prepare_data(base, workers=2, progress=False)
    print(f"data prepared in {time.perf_counter() - started:.1f} s: {prepared}", flush=True)
    for size in args.sizes:
        cfg = default_config(args.workdir, encoder=size)
        if size == "small":
            cached_data = prepared
        else:
            feats = random_feature_cache(cfg, prepared, size, args.workdir / "random-features")
            cached_data = PreparedData(prepared.window_cache, feats)
        cached = cached_epoch(cfg, cached_data, args.repeats)
        live = live_epoch(cfg, prepared, args.live_steps)
        ratio = live["epoch_s"] / cached["epoch_s"]
        report[size] = {"cached": cached, "live": live, "live_over_cached": ratio}
        print(
            f"{size}: epoch of {cached['train_rows']} train + {cached['val_rows']} val windows "
            f"({cached['steps']} steps): cached {cached['epoch_s']:.2f} s, live "
            f"{live['epoch_s']:.1f} s (encoder {live['encoder_windows_per_s']:.0f} windows/s)"
            f" -> cached is {ratio:.0f}x cheaper",
            flush=True,
        )

    imports = import_seconds()
    report["import_s"] = imports
    print(f"fresh process: python -c 'import trainables, tune_eegpt.pipeline': {imports:.2f} s")
    if args.startup_trials > 0:
        startup = startup_through_ray(args.workdir, args.startup_trials)
        report["startup"] = startup
        reused = startup["reused_startup_s"]
        fresh = startup["fresh_startup_s"]
        if reused:
            print(
                f"start-up, reused actor: median {statistics.median(reused):.3f} s, max "
                f"{max(reused):.3f} s over {len(reused)} trials"
            )
        if fresh:
            f = statistics.median(fresh)
            print(
                f"start-up, fresh actor: setup {f:.2f} s (+ imports {imports:.2f} s = "
                f"{f + imports:.2f} s, before Ray's own actor start)"
            )
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
