"""A search at TUAB's row count on this machine: packing on against off, in one run.

    python benchmarks/tuab_scale_search.py --workdir /tmp/tuab_scale \
        [--train-windows 934000] [--num-samples 64] [--epochs 20] [--packs 16 1] \
        [--max-concurrent 16] [--json benchmarks/results/tuab_scale_search.json]

TUAB's train folder (2,717 recordings, 2,130 patients, ~1,038 h: ~934k windows of 4 s, of
which the subject-level 20 % validation split leaves ~747k train rows) and eval folder
(276 recordings, 253 patients, ~93k windows) are laid out as a TUAB tree of empty
placeholder ``.edf`` files, and their caches are written directly, in the product's own
formats, where ``python -m tune_eegpt.search`` looks for them:

- the window cache through the real builder (``data.build.build_window_cache``) with a
  task runner that writes each recording's shard with a one-sample placeholder window
  per row (the trainer reads only the rows' labels and subjects when features are cached;
  TUAB's real windows would be ~40 GB that nothing here reads);
- the feature cache of the small encoder (16 x 4 x 64 float16, 8 KiB a row: ~8.4 GB for
  1.03M rows) under the name and metadata the search expects for that encoder, with a
  planted class signal (each row: unit Gaussian noise plus ``--effect`` times a fixed
  direction, signed by its recording's label).

Then the same search (the paper space, TPE, ASHA, ``--num-samples`` trials of
``--epochs`` epochs, ``--max-concurrent`` at once) runs through the CLI once per
``--packs`` value, and the figures are its wall time, its phases, the trial-epochs run and
their cost, and the memory peak: the machine's used memory (MemTotal - MemAvailable) above
its level before the search, and the page cache the mapped features occupy.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from default_search import experiment_figures, parse_phases  # noqa: E402

from tune_eegpt.config import RunConfig  # noqa: E402
from tune_eegpt.data.build import build_window_cache  # noqa: E402
from tune_eegpt.data.preprocess import RecordingWindows  # noqa: E402
from tune_eegpt.data.shards import write_shard  # noqa: E402
from tune_eegpt.pipeline import expected_feature_file, open_window_cache  # noqa: E402
from tune_eegpt.training.features import _record_batch, _schema  # noqa: E402

# TUAB v3.0.x (../shared/reference/EEGPT_AND_TUAB.md): recordings, patients, hours
FOLDERS = {"train": (2717, 2130, 1038.0), "eval": (276, 253, 103.0)}
WINDOW_S = 4.0


def tuab_tree(root: Path, train_windows: int) -> dict[str, int]:
    """Empty TUAB-named files; returns recording -> its window count (TUAB's folder
    proportions, lengths drawn around the folder's mean)."""
    rng = np.random.default_rng(0)
    scale = train_windows / (FOLDERS["train"][2] * 3600 / WINDOW_S)
    windows: dict[str, int] = {}
    for folder, (recordings, patients, hours) in FOLDERS.items():
        mean = hours * 3600 / WINDOW_S * scale / recordings
        counts = np.maximum(1, rng.uniform(0.5, 1.5, recordings) * mean).astype(int)
        for i, n in enumerate(counts):
            label = "abnormal" if i % 2 else "normal"
            subject = f"{folder[:2]}{i % patients:06d}"
            name = f"{subject}_s{i // patients + 1:03d}_t000"
            path = root / folder / label / "01_tcp_ar" / f"{name}.edf"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch()
            windows[name] = int(n)
    return windows


def placeholder_runner(windows: dict[str, int], n_channels: int):
    """A task runner for ``build_window_cache``: each recording's shard, one sample a row."""

    def run(todo: list[dict], settings, shard_dir: str, progress: bool) -> None:
        for row in todo:
            n = windows[row["recording"]]
            result = RecordingWindows(
                windows=np.zeros((n, n_channels, 1), np.float16),
                window_index=np.arange(n),
                start_s=np.arange(n) * WINDOW_S,
                source_sfreq=256.0,
                duration_s=n * WINDOW_S,
            )
            stats = {
                "source_sfreq": 256.0,
                "duration_s": n * WINDOW_S,
                "rejected_windows": {},
                "path": row["path"],
                "written_by": "benchmark placeholder",
            }
            write_shard(Path(shard_dir) / f"{row['recording']}.arrow", result, row, stats)

    return run


def write_features(path: Path, labels: np.ndarray, key: str, encoder_hash: str, effect: float):
    """The feature file ``prepare_features`` would write, with a planted signal instead."""
    import torch

    shape = (16, 4, 64)
    direction = torch.randn(shape, generator=torch.Generator().manual_seed(1)).numpy()
    g = torch.Generator().manual_seed(0)
    schema = _schema(shape, encoder_hash, key, "float16", len(labels), None)
    tmp = path.with_name(path.name + ".partial")
    path.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with pa.OSFile(str(tmp), "wb") as sink, pa.ipc.new_file(sink, schema) as writer:
        for lo in range(0, len(labels), 16384):
            y = labels[lo : lo + 16384].astype(np.float32)
            x = torch.randn((len(y), *shape), generator=g).numpy()
            x += effect * direction * (2 * y - 1).reshape(-1, 1, 1, 1)
            writer.write_batch(_record_batch(schema, x.astype(np.float16), y, None))
    tmp.rename(path)
    print(
        f"features: {len(labels)} rows, {path.stat().st_size / 1e9:.1f} GB in "
        f"{time.perf_counter() - started:.0f} s -> {path}",
        flush=True,
    )


def prepare(workdir: Path, train_windows: int, effect: float) -> Path:
    """The caches and the search's base config; returns the config's path."""
    config = workdir / "tuab_scale.yaml"
    base = yaml.safe_load((ROOT / "tune_eegpt/configs/synthetic_default.yaml").read_text())
    base["data"].update(data_root=str(workdir / "edf"), cache_dir=str(workdir / "cache"))
    base["log"] = {"tensorboard": False}
    config.write_text(yaml.safe_dump(base))
    cfg = RunConfig.from_yaml(config)
    windows = tuab_tree(workdir / "edf", train_windows)
    started = time.perf_counter()
    built = build_window_cache(
        cfg.data,
        workdir / "edf",
        workdir / "cache" / "windows",
        runner=placeholder_runner(windows, len(cfg.data.channels)),
        progress=False,
        verbose=False,
    )
    cache = open_window_cache(str(built.path), cfg.data.split_seed, cfg.data.val_fraction)
    counts = cache.meta["split"].value_counts().to_dict()
    print(f"window cache: {len(cache)} rows {counts} in {time.perf_counter() - started:.0f} s")
    target = Path(expected_feature_file(cfg, cache.key, cache.channels))
    if not target.is_file():
        encoder_hash = target.name.split("-enc")[1].split("-")[0]
        labels = cache.meta["label"].to_numpy()
        write_features(
            target, labels, cache.key, _full_hash(cfg, cache.channels, encoder_hash), effect
        )
    return config


def _full_hash(cfg: RunConfig, channels: list[str], prefix: str) -> str:
    from tune_eegpt.pipeline import load_encoder
    from tune_eegpt.training.features import encoder_weights_hash

    full = encoder_weights_hash(load_encoder(cfg, tuple(channels)))
    assert full.startswith(prefix)
    return full


class MemoryPeak:
    """Samples /proc/meminfo twice a second: the peak of used memory above the start, and
    of the page cache."""

    def __init__(self) -> None:
        self.start = self._read()
        self.peak_used = 0.0
        self.peak_cached = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    @staticmethod
    def _read() -> dict[str, float]:
        fields = {}
        for line in Path("/proc/meminfo").read_text().splitlines():
            name, value = line.split(":")
            fields[name] = float(value.split()[0]) * 1024
        return {"used": fields["MemTotal"] - fields["MemAvailable"], "cached": fields["Cached"]}

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            now = self._read()
            self.peak_used = max(self.peak_used, now["used"] - self.start["used"])
            self.peak_cached = max(self.peak_cached, now["cached"])

    def stop(self) -> dict[str, float]:
        self._stop.set()
        self._thread.join()
        return {"peak_used_gb": self.peak_used / 1e9, "peak_page_cache_gb": self.peak_cached / 1e9}


def run_search(config: Path, workdir: Path, pack: int, args: argparse.Namespace) -> dict[str, Any]:
    storage = workdir / f"runs-pack{pack}"
    cmd = [
        sys.executable,
        "-m",
        "tune_eegpt.search",
        "--config",
        str(config),
        "--storage",
        str(storage),
        "--name",
        f"tuab-scale-pack{pack}",
        "--num-samples",
        str(args.num_samples),
        "--epochs",
        str(args.epochs),
        "--max-concurrent",
        str(args.max_concurrent),
        "--pack",
        str(pack),
    ]
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled"}
    print("$ " + " ".join(cmd), flush=True)
    memory = MemoryPeak()
    started = time.perf_counter()
    log = (workdir / f"search-pack{pack}.log").open("w")
    proc = subprocess.run(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=log, text=True)
    wall = time.perf_counter() - started
    peaks = memory.stop()
    (workdir / f"search-pack{pack}.out").write_text(proc.stdout)
    if proc.returncode not in (0, 1):  # 1: no trial reached the threshold
        raise RuntimeError(f"pack {pack}: exit {proc.returncode}\n{proc.stdout[-3000:]}")
    summary = [line for line in proc.stdout.splitlines() if line.startswith(("engine", "best"))]
    figures = {
        "pack": pack,
        "wall_s": wall,
        "exit": proc.returncode,
        "phases_s": parse_phases(proc.stdout),
        **peaks,
        **experiment_figures(storage),
        "summary": summary,
    }
    figures["s_per_trial_epoch"] = figures["phases_s"].get("trials", wall) / figures["epochs"]
    print(json.dumps(figures, indent=1), flush=True)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/tuab_scale"))
    parser.add_argument("--train-windows", type=int, default=934_000)
    parser.add_argument("--effect", type=float, default=0.02)
    parser.add_argument("--num-samples", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--max-concurrent", type=int, default=16)
    parser.add_argument("--packs", type=int, nargs="+", default=[16, 1])
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    config = prepare(args.workdir, args.train_windows, args.effect)
    runs = [run_search(config, args.workdir, pack, args) for pack in args.packs]
    for r in runs:
        print(
            f"--pack {r['pack']}: {r['wall_s']:.0f} s wall, trials phase "
            f"{r['phases_s'].get('trials', float('nan')):.0f} s, {r['trials']} trials, "
            f"{r['epochs']} trial-epochs, {r['s_per_trial_epoch']:.2f} s per trial-epoch, "
            f"peak used +{r['peak_used_gb']:.1f} GB (page cache {r['peak_page_cache_gb']:.1f} GB)"
        )
    if len(runs) == 2:
        a, b = runs
        print(
            f"speed-up per trial-epoch, --pack {a['pack']} over --pack {b['pack']}: "
            f"{b['s_per_trial_epoch'] / a['s_per_trial_epoch']:.2f}x; wall "
            f"{b['wall_s'] / a['wall_s']:.2f}x"
        )
    if args.json:
        settings = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
        args.json.write_text(json.dumps({"args": settings, "runs": runs}, indent=1))


if __name__ == "__main__":
    main()
