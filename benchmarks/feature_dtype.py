"""Validation AUROC of the default probe on float16 vs float8 (e4m3) cached features.

    python benchmarks/feature_dtype.py --workdir /tmp/perf_feature_dtype \
        [--seeds 10] [--max-lr 1e-3] [--json benchmarks/results/feature_dtype.json]

On the default search's data (the synthetic corpus and small encoder of
``tune_eegpt/configs/synthetic_default.yaml``, caches under ``--workdir``, built if
missing), the base run (max_lr 4e-4, pct_start 0.2, 10 epochs, batch 64, dropout 0.5) is
trained once per seed on each feature cache (``model.feature_dtype``), through the path
every run takes (the packed engine), 1 torch thread; ``--max-lr`` replaces the base
run's peak LR (e.g. the better-tuned 1e-3). A seed fixes the head's initial
weights, the epoch order and the dropout bits, so the two runs of a seed differ only in
the features' rounding: the difference is paired per seed.

Printed: the final and best validation AUROC (window level; and the final recording-level
AUROC) per dtype as mean and standard deviation over the seeds, the paired difference
(float8 - float16) with its standard deviation and standard error, the bytes per row and
file size of each cache, the features' largest magnitude and how many float8 values sit
at the +-448 saturation limit, float8's relative RMS rounding error against the float16
values, and the median CPU time of an epoch on each, train alone and train + validation
(validation casts float8 with torch's own cast, ~10x slower than the packed engine's).
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
from tune_eegpt.pipeline import build_trainer, open_features, prepare_data  # noqa: E402

DTYPES = ("float16", "float8_e4m3")


def default_config(workdir: Path) -> RunConfig:
    path = str(resources.files("tune_eegpt") / "configs" / "synthetic_default.yaml")
    return RunConfig.from_yaml(path).with_overrides(
        {"cache_dir": str(workdir / "cache"), "tensorboard": False, "threads": 1, "device": "cpu"},
        source="benchmark",
    )


def train_one(cfg: RunConfig, prepared) -> tuple[dict[str, float], float]:
    """Final metrics of a whole run, with its best val AUROC; median CPU s per epoch."""
    trainer = build_trainer(cfg, prepared)
    assert trainer.engine_name == "packed", trainer.engine_reason
    cpu = []
    while not trainer.finished:
        start = time.thread_time()
        metrics = trainer.train_epoch()
        cpu.append(time.thread_time() - start)
    return metrics, statistics.median(cpu)


def train_epoch_cpu(cfg: RunConfig, prepared, epochs: int = 10) -> float:
    """Median CPU seconds of a train epoch alone (no validation), seed 0."""
    trainer = build_trainer(cfg.with_overrides({"epochs": epochs}), prepared)
    trainer.val_data = None
    cpu = []
    while not trainer.finished:
        start = time.thread_time()
        trainer.train_epoch()
        cpu.append(time.thread_time() - start)
    return statistics.median(cpu)


def rounding(prepared: dict) -> dict[str, float]:
    """Largest |feature|, float8 values at +-448, and float8's relative RMS rounding error
    against the float16 values (whose own error against float32 is ~2e-4)."""
    f16 = open_features(prepared["float16"].feature_cache)
    f8 = open_features(prepared["float8_e4m3"].feature_cache)
    rows = np.arange(len(f16))
    a, _ = f16.get_batch(rows)
    b, _ = f8.get_batch(rows)
    a, bits = a.float(), b.view(torch.uint8)
    return {
        "max_abs_feature": float(a.abs().max()),
        "float8_values_at_448": int(((bits & 0x7F) == 0x7E).sum()),
        "float8_rel_rms_error_vs_float16": float((b.float() - a).norm() / a.norm()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/perf_feature_dtype"))
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--max-lr", type=float, help="default: the base config's (4e-4)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if args.seeds < 2:
        parser.error("--seeds must be >= 2 (a standard deviation needs two)")

    torch.set_num_threads(1)
    base = default_config(args.workdir)
    if args.max_lr is not None:
        base = base.with_overrides({"max_lr": args.max_lr}, source="--max-lr")
    cfgs = {d: base.with_overrides({"feature_dtype": d}, source="benchmark") for d in DTYPES}
    prepared = {d: prepare_data(cfg, workers=1, progress=False) for d, cfg in cfgs.items()}
    results: dict[str, dict[str, list[float]]] = {d: {} for d in DTYPES}
    for seed in range(args.seeds):
        for dtype, cfg in cfgs.items():
            metrics, epoch_cpu = train_one(cfg.with_overrides({"seed": seed}), prepared[dtype])
            values = {
                "val_auroc": metrics["val_auroc"],
                "best_val_auroc": metrics["best_val_auroc"],
                "val_rec_auroc": metrics["val_rec_auroc"],
                "epoch_cpu_s": epoch_cpu,
            }
            for key, value in values.items():
                results[dtype].setdefault(key, []).append(float(value))
        print(
            f"seed {seed}: val AUROC float16 {results['float16']['val_auroc'][-1]:.4f}, "
            f"float8 {results['float8_e4m3']['val_auroc'][-1]:.4f}",
            flush=True,
        )

    files = {}
    for dtype in DTYPES:
        features = open_features(prepared[dtype].feature_cache)
        width = int(np.prod(features.feature_shape))
        files[dtype] = {
            "bytes_per_row": width * features.dtype.itemsize,
            "file_bytes": Path(prepared[dtype].feature_cache).stat().st_size,
            "rows": len(features),
            "train_epoch_cpu_s": train_epoch_cpu(cfgs[dtype], prepared[dtype]),
        }
    stats = rounding(prepared)

    n = args.seeds
    print(
        f"\n{n} seeds, default probe and corpus, max_lr {base.schedule.max_lr:g}, packed engine, "
        f"1 thread; load average "
        f"{os.getloadavg()[0]:.1f}"
    )
    print(f"{'':26} {'float16':>17} {'float8_e4m3':>17} {'diff (8 - 16)':>24}")
    summary = {}
    for key in ("val_auroc", "best_val_auroc", "val_rec_auroc"):
        a = np.array(results["float16"][key])
        b = np.array(results["float8_e4m3"][key])
        d = b - a
        summary[key] = {
            "float16_mean": a.mean(),
            "float16_std": a.std(ddof=1),
            "float8_mean": b.mean(),
            "float8_std": b.std(ddof=1),
            "diff_mean": d.mean(),
            "diff_std": d.std(ddof=1),
            "diff_sem": d.std(ddof=1) / np.sqrt(n),
        }
        s = summary[key]
        print(
            f"{key:26} {s['float16_mean']:.4f} +- {s['float16_std']:.4f} "
            f"{s['float8_mean']:.4f} +- {s['float8_std']:.4f} "
            f"{s['diff_mean']:+.4f} +- {s['diff_std']:.4f} (se {s['diff_sem']:.4f})"
        )
    for dtype in DTYPES:
        f, cpu = files[dtype], statistics.median(results[dtype]["epoch_cpu_s"])
        print(
            f"{dtype:12} {f['bytes_per_row']:6d} B/row, file {f['file_bytes'] / 1e6:6.1f} MB "
            f"({f['rows']} rows); CPU ms per epoch: train {f['train_epoch_cpu_s'] * 1e3:5.1f}, "
            f"train + val {cpu * 1e3:5.1f} (medians)"
        )
    print(
        f"features: max |z| {stats['max_abs_feature']:.3f}; float8 values at +-448: "
        f"{stats['float8_values_at_448']}; float8 relative RMS rounding error vs float16: "
        f"{stats['float8_rel_rms_error_vs_float16']:.4f}"
    )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        out = {
            "seeds": n,
            "max_lr": base.schedule.max_lr,
            "load_average": os.getloadavg()[0],
            "summary": {k: {kk: float(vv) for kk, vv in v.items()} for k, v in summary.items()},
            "per_seed": results,
            "files": files,
            "rounding": stats,
        }
        args.json.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
