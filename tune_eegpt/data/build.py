"""EDF tree -> window cache: index, key, build missing shards in parallel, write manifest.

Cache layout (``<out_dir>/<key>/``)::

    shards/<recording>.arrow           one Arrow IPC shard per usable recording
    shards/<recording>.rejected.json   why a recording could not be used
    rejected.csv                       the manifest of rejected input (every unusable file)
    recordings.csv                     the recordings that made it, with their statistics
    splits-seed<S>-val<F>.csv          subject -> train | val | test
    manifest.json                      written last: its presence marks the cache complete

Every file is written under a temporary name and renamed into place, so an interrupted
build leaves only complete shards behind, and the next build with the same key reuses them.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from tqdm import tqdm

from tune_eegpt.config import DataConfig
from tune_eegpt.data.preprocess import Rejection, read_recording
from tune_eegpt.data.settings import SCHEMA_VERSION, Preprocessing, cache_key
from tune_eegpt.data.shards import (
    REJECTION_SUFFIX,
    SHARD_SUFFIX,
    TEMP_MARK,
    atomic_write_bytes,
    atomic_write_json,
    read_shard_stats,
    write_shard,
)
from tune_eegpt.data.splits import (
    assign_subject_splits,
    read_splits,
    split_file_name,
    write_splits,
)
from tune_eegpt.data.summary import format_summary
from tune_eegpt.data.tuab_index import TuabIndex, index_tuab

MANIFEST = "manifest.json"
REJECTED = "rejected.csv"
RECORDINGS = "recordings.csv"
DUPLICATE = "duplicate recording name"
LABEL_NAMES = ("normal", "abnormal")


class EmptyCacheError(ValueError):
    """No recording produced a usable window."""


@dataclass
class BuildResult:
    path: Path  # the cache directory, <out_dir>/<key>
    key: str
    built: int  # recordings processed by this call
    reused: int  # recordings whose shard or rejection record was already there
    manifest: dict


def prepare_cache(
    cfg: DataConfig, data_root: str | Path, out_dir: str | Path, workers: int = 1
) -> Path:
    """Builds (or reuses) the window cache of ``data_root`` and returns its directory."""
    return build_window_cache(cfg, data_root, out_dir, workers=workers).path


def build_window_cache(
    cfg: DataConfig,
    data_root: str | Path,
    out_dir: str | Path,
    workers: int = 1,
    progress: bool = True,
    verbose: bool = True,
) -> BuildResult:
    """See the module docstring. ``workers`` > 1 reads EDF files in that many processes."""
    if workers < 1:
        raise ValueError(f"workers={workers} must be >= 1")
    settings = Preprocessing.from_config(cfg)
    index = index_tuab(data_root)
    if len(index) == 0:
        raise FileNotFoundError(
            f"no TUAB recordings under {index.root}: expected files like "
            "train/normal/01_tcp_ar/aaaaamye_s001_t000.edf ({train,eval}/{normal,abnormal}/"
            f"**/<subject>_s<NNN>_t<NNN>.edf); found {len(index.ignored)} other file(s)"
        )
    key = cache_key(settings, index.recordings)
    cache_dir = Path(out_dir).expanduser() / key
    manifest_path = cache_dir / MANIFEST
    if manifest_path.is_file():  # complete: reuse at once
        manifest = json.loads(manifest_path.read_text())
        ensure_split_file(cache_dir, cfg.split_seed, cfg.val_fraction)
        if verbose:
            print(f"window cache {cache_dir} is up to date; nothing to build")
        return BuildResult(cache_dir, key, 0, manifest["files"]["found"], manifest)

    shard_dir = cache_dir / "shards"
    shard_dir.mkdir(parents=True, exist_ok=True)
    for folder in (cache_dir, shard_dir):
        _remove_stale_temp_files(folder)
    recordings, duplicates = _drop_duplicate_names(index.recordings)
    todo = [
        row for row in recordings.to_dict("records")
        if not (shard_dir / f"{row['recording']}{SHARD_SUFFIX}").exists()
        and not (shard_dir / f"{row['recording']}{REJECTION_SUFFIX}").exists()
    ]  # fmt: skip
    started = time.perf_counter()
    _run_tasks(todo, settings, shard_dir, workers, progress)
    elapsed = time.perf_counter() - started

    manifest = _finish(cfg, settings, index, key, cache_dir, recordings, duplicates)
    manifest["build"] = {"built": len(todo), "seconds": round(elapsed, 2), "workers": workers}
    atomic_write_json(manifest_path, manifest)  # last: marks the cache complete
    if verbose:
        print(format_summary(manifest, cache_dir))
    return BuildResult(cache_dir, key, len(todo), len(recordings) - len(todo), manifest)


def ensure_split_file(cache_dir: Path, seed: int, val_fraction: float) -> Path:
    """Writes the subject split for ``seed``/``val_fraction`` beside the cache if absent."""
    path = cache_dir / split_file_name(seed, val_fraction)
    if not path.is_file():
        recordings = pd.read_csv(cache_dir / RECORDINGS, dtype={"subject": str})
        write_splits(assign_subject_splits(recordings, val_fraction, seed), path)
    return path


def _process_one(row: dict, settings: Preprocessing, shard_dir: Path) -> str:
    """Worker: one recording -> a shard or a rejection record on disk. Returns its status."""
    result = read_recording(row["path"], settings)
    if isinstance(result, Rejection):
        atomic_write_json(
            shard_dir / f"{row['recording']}{REJECTION_SUFFIX}",
            {"path": row["path"], "recording": row["recording"],
             "reason": result.reason, "detail": result.detail},
        )  # fmt: skip
        return result.reason
    stats = {
        "source_sfreq": result.source_sfreq,
        "duration_s": result.duration_s,
        "rejected_windows": result.rejected_windows,
        "path": row["path"],
    }
    write_shard(shard_dir / f"{row['recording']}{SHARD_SUFFIX}", result, row, stats)
    return "used"


def _run_tasks(
    todo: list[dict], settings: Preprocessing, shard_dir: Path, workers: int, progress: bool
) -> None:
    bar = tqdm(total=len(todo), desc="EDF -> windows", unit="file", disable=not progress)
    try:
        if workers == 1 or len(todo) <= 1:
            for row in todo:
                bar.set_postfix_str(row["recording"], refresh=False)
                _process_one(row, settings, shard_dir)
                bar.update()
            return
        # spawn: workers start clean, whatever threads the parent (torch, BLAS) has running
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(min(workers, len(todo)), mp_context=context) as pool:
            futures = [pool.submit(_process_one, row, settings, shard_dir) for row in todo]
            for future in as_completed(futures):
                future.result()  # a crash in a worker is a bug: let it surface
                bar.update()
    finally:
        bar.close()


def _finish(
    cfg: DataConfig,
    settings: Preprocessing,
    index: TuabIndex,
    key: str,
    cache_dir: Path,
    recordings: pd.DataFrame,
    duplicates: pd.DataFrame,
) -> dict:
    """Collects shard statistics and rejection records; writes the CSV files."""
    shard_dir = cache_dir / "shards"
    used_rows, rejected_rows = [], []
    for row in recordings.to_dict("records"):
        shard = shard_dir / f"{row['recording']}{SHARD_SUFFIX}"
        if shard.exists():
            stats = read_shard_stats(shard)
            used_rows.append(
                {**{k: row[k] for k in ("recording", "subject", "session", "token", "split",
                                        "label", "relpath")},
                 "windows": stats["shape"][0], "duration_s": stats["duration_s"],
                 "source_sfreq": stats["source_sfreq"],
                 **{f"dropped_{k}": v for k, v in stats["rejected_windows"].items()}}
            )  # fmt: skip
        else:
            record = json.loads((shard_dir / f"{row['recording']}{REJECTION_SUFFIX}").read_text())
            rejected_rows.append(record)
    for row in duplicates.to_dict("records"):
        rejected_rows.append({"path": row["path"], "recording": row["recording"],
                              "reason": DUPLICATE, "detail": "an earlier file has this name"})
    rejected = pd.DataFrame(rejected_rows, columns=["path", "recording", "reason", "detail"])
    atomic_write_bytes(cache_dir / REJECTED, rejected.to_csv(index=False).encode())
    if not used_rows:
        counts = rejected["reason"].value_counts().to_dict()
        raise EmptyCacheError(
            f"no usable windows in {index.root}: all {len(rejected)} recording(s) were "
            f"rejected ({', '.join(f'{r}: {n}' for r, n in counts.items())}); "
            f"see the manifest of rejected input {cache_dir / REJECTED}"
        )
    used = pd.DataFrame(used_rows)
    atomic_write_bytes(cache_dir / RECORDINGS, used.to_csv(index=False).encode())
    splits = read_splits(ensure_split_file(cache_dir, cfg.split_seed, cfg.val_fraction))
    with_split = used.merge(
        splits[["subject", "source_split", "split"]].rename(columns={"split": "fold"}),
        left_on=["subject", "split"], right_on=["subject", "source_split"], how="left",
    )
    by_fold = with_split.groupby(["fold", "label"])["windows"].sum()
    by_fold_subjects = with_split.groupby("fold")["subject"].nunique()

    dropped = {c.removeprefix("dropped_"): int(used[c].sum())
               for c in used.columns if c.startswith("dropped_")}  # fmt: skip
    windows_by = used.groupby(["split", "label"])["windows"].sum()
    both = set(used.loc[used.split == "train", "subject"]) & set(
        used.loc[used.split == "eval", "subject"]
    )
    return {
        "schema": SCHEMA_VERSION,
        "key": key,
        "data_root": str(index.root.resolve()),
        "settings": settings.to_dict(),
        "default_split": {"seed": cfg.split_seed, "val_fraction": cfg.val_fraction},
        "window_shape": [len(settings.channels), settings.window_samples],
        "windows": int(used["windows"].sum()),
        "shards": [
            {"recording": r, "rows": int(n)}
            for r, n in zip(used.recording, used.windows, strict=True)
        ],
        "files": {
            "found": len(index),
            "used": len(used),
            "rejected": rejected["reason"].value_counts().to_dict(),
            "ignored": len(index.ignored),
        },
        "ignored_examples": index.ignored[:20],
        "windows_by_source_split_label": {f"{s}/{LABEL_NAMES[lab]}": int(n)
                                          for (s, lab), n in windows_by.items()},  # fmt: skip
        "windows_by_split_label": {f"{s}/{LABEL_NAMES[lab]}": int(n)
                                   for (s, lab), n in by_fold.items()},  # fmt: skip
        "subjects_by_split": {s: int(n) for s, n in by_fold_subjects.items()},
        "dropped_windows": dropped,
        "hours_read": round(float(used["duration_s"].sum()) / 3600, 4),
        "hours_in_windows": round(int(used["windows"].sum()) * settings.window_s / 3600, 4),
        "subjects_in_train_and_eval": sorted(both),
    }


def _drop_duplicate_names(recordings: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    duplicated = recordings["recording"].duplicated(keep="first")
    return recordings[~duplicated].reset_index(drop=True), recordings[duplicated]


def _remove_stale_temp_files(folder: Path) -> None:
    """Deletes temp files left by writers that no longer run (an interrupted build)."""
    for path in folder.glob(f".*{TEMP_MARK}*"):
        pid = int(path.name.rsplit(TEMP_MARK, 1)[1].split("-")[0])
        if not _process_alive(pid):
            path.unlink(missing_ok=True)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError, ValueError):
        return False
    except PermissionError:
        return True
    return True
