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
``out_dir`` may be a local folder, a shared mount, or a pyarrow-filesystem URI (storage.py).

Who decodes is the caller's choice (``runner``): by default a process pool on this machine;
``tune_eegpt.prepare_on_ray`` passes one that runs each recording as a Ray task on any node
of a cluster. Either way a shard is written once, by one task, and records who wrote it
(``written_by`` in its metadata).
"""

from __future__ import annotations

import io
import json
import multiprocessing
import os
import socket
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from tqdm import tqdm

from tune_eegpt.checksum import crc32_of_stream, fingerprint, problem
from tune_eegpt.config import DataConfig
from tune_eegpt.data.preprocess import Rejection, read_recording
from tune_eegpt.data.settings import SCHEMA_VERSION, Preprocessing, cache_key
from tune_eegpt.data.shards import (
    METADATA_KEY,
    REJECTION_SUFFIX,
    SHARD_SUFFIX,
    TEMP_MARK,
    write_shard,
)
from tune_eegpt.data.splits import (
    assign_subject_splits,
    read_splits,
    split_file_name,
    write_splits,
)
from tune_eegpt.data.storage import Location
from tune_eegpt.data.summary import format_summary
from tune_eegpt.data.tuab_index import TuabIndex, index_tuab

MANIFEST = "manifest.json"
REJECTED = "rejected.csv"
RECORDINGS = "recordings.csv"
DUPLICATE = "duplicate recording name"
LABEL_NAMES = ("normal", "abnormal")


class EmptyCacheError(ValueError):
    """No recording produced a usable window."""


# runner(todo rows, settings, shard folder (a path or URI), progress): decodes every row
# with ``process_recording`` (anywhere, in any order), returning when all are on storage
TaskRunner = Callable[[list[dict], Preprocessing, str, bool], None]


@dataclass
class BuildResult:
    path: Path | str  # the cache directory, <out_dir>/<key> (a str when it is a URI)
    key: str
    built: int  # recordings processed by this call
    reused: int  # recordings whose shard or rejection record was already there
    manifest: dict


def prepare_cache(
    cfg: DataConfig, data_root: str | Path, out_dir: str | Path, workers: int = 1
) -> Path | str:
    """Builds (or reuses) the window cache of ``data_root`` and returns its directory."""
    return build_window_cache(cfg, data_root, out_dir, workers=workers).path


def build_window_cache(
    cfg: DataConfig,
    data_root: str | Path,
    out_dir: str | Path,
    workers: int = 1,
    progress: bool = True,
    verbose: bool = True,
    runner: TaskRunner | None = None,
    verify: bool = False,
) -> BuildResult:
    """See the module docstring. ``workers`` > 1 reads EDF files in that many processes
    (ignored when a ``runner`` is given). A complete cache is reused after a size check of
    every shard (``verify``: a CRC-32 check of every byte); a damaged or missing shard is
    decoded again from its recording, nothing else."""
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
    cache = Location(out_dir).child(key)
    shown = cache.path if cache.is_local else str(cache)
    if cache.child(MANIFEST).exists():  # complete: reuse at once, unless a shard is damaged
        manifest = json.loads(cache.child(MANIFEST).read_bytes())
        damaged = damaged_shards(cache, manifest, full=verify)
        if not damaged:
            _ensure_split(cache, cfg.split_seed, cfg.val_fraction)
            if verbose:
                checked = "checksums verified" if verify else "sizes checked"
                print(f"window cache {shown} is up to date ({checked}); nothing to build")
            return BuildResult(shown, key, 0, manifest["files"]["found"], manifest)
        for recording, shard, why in damaged:  # decoded again below, the rest reused
            print(f"window cache: shard {shard} is damaged ({why}); decoding {recording} again")
            shard.remove()
        cache.child(MANIFEST).remove()

    shards = cache.child("shards")
    shards.make_dir()
    if cache.is_local:
        for folder in (cache.path, shards.path):
            _remove_stale_temp_files(folder)
    recordings, duplicates = _drop_duplicate_names(index.recordings)
    done = shards.names()
    todo = [
        row
        for row in recordings.to_dict("records")
        if f"{row['recording']}{SHARD_SUFFIX}" not in done
        and f"{row['recording']}{REJECTION_SUFFIX}" not in done
    ]
    started = time.perf_counter()
    (runner or _local_runner(workers))(todo, settings, str(shards), progress)
    elapsed = time.perf_counter() - started

    manifest = _finish(cfg, settings, index, key, cache, recordings, duplicates)
    how = workers if runner is None else getattr(runner, "label", "tasks")
    manifest["build"] = {"built": len(todo), "seconds": round(elapsed, 2), "workers": how}
    cache.child(MANIFEST).write_bytes(_json_bytes(manifest))  # last: marks the cache complete
    if verbose:
        print(format_summary(manifest, shown))
    return BuildResult(shown, key, len(todo), len(recordings) - len(todo), manifest)


def ensure_split_file(cache_dir: Path, seed: int, val_fraction: float) -> Path:
    """Writes the subject split for ``seed``/``val_fraction`` beside the cache if absent."""
    path = cache_dir / split_file_name(seed, val_fraction)
    if not path.is_file():
        recordings = pd.read_csv(cache_dir / RECORDINGS, dtype={"subject": str})
        write_splits(assign_subject_splits(recordings, val_fraction, seed), path)
    return path


def _ensure_split(cache: Location, seed: int, val_fraction: float) -> None:
    if cache.is_local:
        ensure_split_file(cache.path, seed, val_fraction)
        return
    split = cache.child(split_file_name(seed, val_fraction))
    if not split.exists():
        recordings = pd.read_csv(
            io.BytesIO(cache.child(RECORDINGS).read_bytes()), dtype={"subject": str}
        )
        splits = assign_subject_splits(recordings, val_fraction, seed)
        split.write_bytes(splits.to_csv(index=False).encode())


def default_writer() -> str:
    """Who wrote a shard, when no scheduler names the node: host and process."""
    return f"{socket.gethostname()}:{os.getpid()}"


def process_recording(
    row: dict, settings: Preprocessing, shard_dir: str, writer: str | None = None
) -> dict:
    """One recording -> a shard or a rejection record in ``shard_dir`` (a folder or a URI),
    each written atomically. Returns {"status": "used" or the rejection reason, "windows"}."""
    writer = writer or default_writer()
    target = Location(shard_dir)
    result = read_recording(row["path"], settings)
    if isinstance(result, Rejection):
        record = {
            "path": row["path"],
            "recording": row["recording"],
            "reason": result.reason,
            "detail": result.detail,
            "written_by": writer,
        }
        target.child(f"{row['recording']}{REJECTION_SUFFIX}").write_bytes(_json_bytes(record))
        return {"status": result.reason, "windows": 0}
    stats = {
        "source_sfreq": result.source_sfreq,
        "duration_s": result.duration_s,
        "rejected_windows": result.rejected_windows,
        "path": row["path"],
        "written_by": writer,
    }
    name = f"{row['recording']}{SHARD_SUFFIX}"
    if target.is_local:
        write_shard(target.path / name, result, row, stats)
    else:  # written on this node's disk, then uploaded whole
        with tempfile.TemporaryDirectory(prefix="tune-eegpt-shard-") as staging:
            write_shard(Path(staging) / name, result, row, stats)
            target.child(name).upload(Path(staging) / name)
    return {"status": "used", "windows": len(result.windows)}


def shard_writers(cache_dir: str | Path) -> dict[str, str]:
    """recording -> the ``written_by`` of its shard or rejection record."""
    shards = Location(cache_dir).child("shards")
    writers = {}
    for name in sorted(shards.names()):
        if name.endswith(SHARD_SUFFIX) and not name.startswith("."):
            writers[name.removesuffix(SHARD_SUFFIX)] = _shard_stats(shards.child(name))[
                "written_by"
            ]
        elif name.endswith(REJECTION_SUFFIX):
            record = json.loads(shards.child(name).read_bytes())
            writers[name.removesuffix(REJECTION_SUFFIX)] = record["written_by"]
    return writers


def _local_runner(workers: int) -> TaskRunner:
    def run(todo: list[dict], settings: Preprocessing, shard_dir: str, progress: bool) -> None:
        _run_tasks(todo, settings, shard_dir, workers, progress)

    return run


def _run_tasks(
    todo: list[dict], settings: Preprocessing, shard_dir: str, workers: int, progress: bool
) -> None:
    bar = tqdm(total=len(todo), desc="EDF -> windows", unit="file", disable=not progress)
    try:
        if workers == 1 or len(todo) <= 1:
            for row in todo:
                bar.set_postfix_str(row["recording"], refresh=False)
                process_recording(row, settings, shard_dir)
                bar.update()
            return
        # spawn: workers start clean, whatever threads the parent (torch, BLAS) has running
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(min(workers, len(todo)), mp_context=context) as pool:
            futures = [pool.submit(process_recording, row, settings, shard_dir) for row in todo]
            for future in as_completed(futures):
                future.result()  # a crash in a worker is a bug: let it surface
                bar.update()
    finally:
        bar.close()


def _shard_stats(shard: Location) -> dict:
    """A shard's schema metadata; reads its footer, not its windows."""
    import pyarrow.ipc as ipc

    with shard.open_input_file() as source:
        schema = ipc.open_file(source).schema
    return json.loads(schema.metadata[METADATA_KEY])


def _fingerprint(shard: Location) -> dict:
    """Size and CRC-32 of a shard, wherever it is stored (a URI is streamed once)."""
    if shard.is_local:
        return fingerprint(shard.path)
    with shard.open_input_stream() as stream:
        return {"bytes": shard.size(), "crc32": crc32_of_stream(stream)}


def damaged_shards(
    cache: Location, manifest: dict, full: bool = False
) -> list[tuple[str, Location, str]]:
    """(recording, shard, what is wrong) for every shard of the manifest that is missing,
    of another size than recorded, or (``full``) of other content."""
    found = []
    shards = cache.child("shards")
    for entry in manifest.get("shards", []):
        shard = shards.child(f"{entry['recording']}{SHARD_SUFFIX}")
        if shard.is_local:
            why = problem(shard.path, entry, full)
        elif not shard.exists():
            why = "missing"
        elif "bytes" in entry and shard.size() != entry["bytes"]:
            why = f"{shard.size()} bytes, {entry['bytes']} recorded"
        elif full and "crc32" in entry and _fingerprint(shard)["crc32"] != entry["crc32"]:
            why = "content changed (CRC-32 differs from the manifest's)"
        else:
            why = None
        if why is not None:
            found.append((entry["recording"], shard, why))
    return found


def _json_bytes(obj: object) -> bytes:
    return (json.dumps(obj, indent=2, default=str) + "\n").encode()


def _finish(
    cfg: DataConfig,
    settings: Preprocessing,
    index: TuabIndex,
    key: str,
    cache: Location,
    recordings: pd.DataFrame,
    duplicates: pd.DataFrame,
) -> dict:
    """Collects shard statistics and rejection records; writes the CSV files."""
    shards = cache.child("shards")
    present = shards.names()
    used_rows, rejected_rows = [], []
    for row in recordings.to_dict("records"):
        name = f"{row['recording']}{SHARD_SUFFIX}"
        if name in present:
            stats = _shard_stats(shards.child(name))
            used_rows.append(
                {
                    **{
                        k: row[k]
                        for k in (
                            "recording",
                            "subject",
                            "session",
                            "token",
                            "split",
                            "label",
                            "relpath",
                        )
                    },
                    "windows": stats["shape"][0],
                    "duration_s": stats["duration_s"],
                    "source_sfreq": stats["source_sfreq"],
                    **{f"dropped_{k}": v for k, v in stats["rejected_windows"].items()},
                }
            )
        else:
            record = json.loads(shards.child(f"{row['recording']}{REJECTION_SUFFIX}").read_bytes())
            rejected_rows.append(record)
    for row in duplicates.to_dict("records"):
        rejected_rows.append(
            {
                "path": row["path"],
                "recording": row["recording"],
                "reason": DUPLICATE,
                "detail": "an earlier file has this name",
            }
        )
    rejected = pd.DataFrame(rejected_rows, columns=["path", "recording", "reason", "detail"])
    cache.child(REJECTED).write_bytes(rejected.to_csv(index=False).encode())
    if not used_rows:
        counts = rejected["reason"].value_counts().to_dict()
        raise EmptyCacheError(
            f"no usable windows in {index.root}: all {len(rejected)} recording(s) were "
            f"rejected ({', '.join(f'{r}: {n}' for r, n in counts.items())}); "
            f"see the manifest of rejected input {cache.child(REJECTED)}"
        )
    used = pd.DataFrame(used_rows)
    cache.child(RECORDINGS).write_bytes(used.to_csv(index=False).encode())
    _ensure_split(cache, cfg.split_seed, cfg.val_fraction)
    split_file = cache.child(split_file_name(cfg.split_seed, cfg.val_fraction))
    splits = read_splits(io.BytesIO(split_file.read_bytes()))
    with_split = used.merge(
        splits[["subject", "source_split", "split"]].rename(columns={"split": "fold"}),
        left_on=["subject", "split"],
        right_on=["subject", "source_split"],
        how="left",
    )
    by_fold = with_split.groupby(["fold", "label"])["windows"].sum()
    by_fold_subjects = with_split.groupby("fold")["subject"].nunique()

    dropped = {
        c.removeprefix("dropped_"): int(used[c].sum())
        for c in used.columns
        if c.startswith("dropped_")
    }
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
            {
                "recording": r,
                "rows": int(n),
                **_fingerprint(shards.child(f"{r}{SHARD_SUFFIX}")),
            }
            for r, n in zip(used.recording, used.windows, strict=True)
        ],
        "files": {
            "found": len(index),
            "used": len(used),
            "rejected": rejected["reason"].value_counts().to_dict(),
            "ignored": len(index.ignored),
        },
        "ignored_examples": index.ignored[:20],
        "windows_by_source_split_label": {
            f"{s}/{LABEL_NAMES[lab]}": int(n) for (s, lab), n in windows_by.items()
        },
        "windows_by_split_label": {
            f"{s}/{LABEL_NAMES[lab]}": int(n) for (s, lab), n in by_fold.items()
        },
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
