"""The window cache end to end on EDF files written here: build, reuse, invalidation,
resume after an interruption, the manifest of rejected input, memory-mapped reads and
the BatchSource the trainer consumes."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import torch

from tune_eegpt.channel_names import OLD_TO_NEW_10_20
from tune_eegpt.config import STANDARD_10_20, DataConfig
from tune_eegpt.data import (
    EmptyCacheError,
    WindowCache,
    build_window_cache,
    ensure_synthetic_cache,
    prepare_cache,
)
from tune_eegpt.data.shards import MappedShard
from tune_eegpt.data.synthetic import SyntheticSpec, write_synthetic_corpus
from tune_eegpt.training.batches import BatchSource

TINY = SyntheticSpec(
    subjects=6, seed=3, min_duration_s=20, max_duration_s=28, multi_session_fraction=0.5
)
CFG = DataConfig()


@pytest.fixture(scope="module")
def corpus_template(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("tiny") / "corpus"
    write_synthetic_corpus(root, TINY)
    return root


@pytest.fixture(scope="module")
def built(corpus_template, tmp_path_factory):
    """A cache of the untouched template corpus, shared by the read-only tests."""
    out = tmp_path_factory.mktemp("caches")
    return build_window_cache(CFG, corpus_template, out, progress=False, verbose=False)


@pytest.fixture()
def corpus(corpus_template, tmp_path) -> Path:
    """A private copy, for tests that change files."""
    return Path(shutil.copytree(corpus_template, tmp_path / "corpus"))


def shard_stamps(cache_dir: Path) -> dict[str, tuple[int, int]]:
    return {
        p.name: (p.stat().st_ino, p.stat().st_mtime_ns)
        for p in (cache_dir / "shards").glob("*.arrow")
    }


def edf_files(root: Path) -> list[Path]:
    return sorted(root.rglob("*.edf"))


# ---- build, reuse, invalidation ---------------------------------------------------------
def test_build_writes_complete_cache(built, corpus_template) -> None:
    n_files = len(edf_files(corpus_template))
    assert built.built == n_files and built.reused == 0
    names = {p.name for p in built.path.iterdir()}
    assert {
        "manifest.json",
        "rejected.csv",
        "recordings.csv",
        "splits-seed0-val0.2.csv",
        "shards",
    } <= names
    manifest = json.loads((built.path / "manifest.json").read_text())
    assert manifest["key"] == built.key == built.path.name
    assert manifest["files"]["found"] == n_files
    assert manifest["windows"] == sum(s["rows"] for s in manifest["shards"])


def test_unchanged_corpus_is_reused_at_once(built, corpus_template) -> None:
    before = shard_stamps(built.path)
    again = build_window_cache(
        CFG, corpus_template, built.path.parent, progress=False, verbose=False
    )
    assert again.path == built.path and again.built == 0
    assert again.reused == len(edf_files(corpus_template))
    assert shard_stamps(built.path) == before


@pytest.mark.slow
def test_changed_setting_or_touched_file_gives_a_new_cache(corpus, tmp_path) -> None:
    out = tmp_path / "out"
    first = build_window_cache(CFG, corpus, out, progress=False, verbose=False)
    other_setting = DataConfig(h_freq=70.0)
    second = build_window_cache(other_setting, corpus, out, progress=False, verbose=False)
    assert second.key != first.key and second.built == len(edf_files(corpus))
    victim = edf_files(corpus)[0]
    stat = victim.stat()
    os.utime(victim, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    third = build_window_cache(CFG, corpus, out, progress=False, verbose=False)
    assert third.key not in (first.key, second.key)
    assert (first.path / "manifest.json").is_file()  # the old cache is left as it was


def test_split_settings_do_not_change_the_key(built, corpus_template) -> None:
    cfg = DataConfig(split_seed=5, val_fraction=0.3)
    again = build_window_cache(
        cfg, corpus_template, built.path.parent, progress=False, verbose=False
    )
    assert again.key == built.key and again.built == 0
    assert (built.path / "splits-seed5-val0.3.csv").is_file()


# ---- interrupted builds -----------------------------------------------------------------
def test_interrupted_build_resumes_with_the_completed_shards(corpus, tmp_path) -> None:
    first = build_window_cache(CFG, corpus, tmp_path / "out", progress=False, verbose=False)
    shards = sorted((first.path / "shards").glob("*.arrow"))
    # The state a killed build leaves: no manifest, a shard missing, a half-written temp file.
    (first.path / "manifest.json").unlink()
    shards[0].unlink()
    stale = shards[0].with_name(f".{shards[0].name}.tmp-999999999-deadbeef")
    stale.write_bytes(b"half a shard")
    kept = {k: v for k, v in shard_stamps(first.path).items()}

    resumed = build_window_cache(CFG, corpus, tmp_path / "out", progress=False, verbose=False)
    assert resumed.path == first.path
    assert resumed.built == 1 and resumed.reused == len(shards) - 1
    after = shard_stamps(first.path)
    assert {k: after[k] for k in kept} == kept  # completed shards were not rewritten
    assert shards[0].name in after and not stale.exists()
    assert len(WindowCache.open(first.path)) == first.manifest["windows"]


@pytest.mark.slow
def test_killed_build_process_resumes(corpus, tmp_path) -> None:
    out = tmp_path / "out"
    cmd = [
        sys.executable,
        "-m",
        "tune_eegpt.data",
        "prepare",
        "--data-root",
        str(corpus),
        "--out",
        str(out),
        "--workers",
        "1",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while not list(out.glob("*/shards/*.arrow")) and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    done_before = {p.name for p in out.glob("*/shards/*.arrow")}
    assert done_before, "the build wrote no shard within 60 s"
    if list(out.glob("*/manifest.json")):
        pytest.skip("the build finished before it could be killed")
    resumed = build_window_cache(CFG, corpus, out, progress=False, verbose=False)
    assert resumed.reused >= len(done_before)
    assert resumed.built == len(edf_files(corpus)) - resumed.reused
    assert len(WindowCache.open(resumed.path)) == resumed.manifest["windows"]


# ---- bad input --------------------------------------------------------------------------
def _add_bad_files(root: Path) -> dict[str, str]:
    """Writes one file of each unusable kind with a TUAB name; returns name -> reason."""
    import edfio

    folder = root / "edf" / "train" / "abnormal" / "01_tcp_ar"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)

    def edf(name: str, sfreq: float, seconds: int, electrodes: list[str]) -> Path:
        n = int(sfreq * seconds)
        signals = [
            edfio.EdfSignal(
                rng.normal(0, 20, n),
                sfreq,
                label=f"EEG {e}-REF",
                physical_dimension="uV",
                physical_range=(-500, 500),
            )
            for e in electrodes
        ]
        path = folder / f"{name}.edf"
        edfio.Edf(signals).write(path)
        return path

    # the 19 channels under TUAB's old 10-20 temporal names
    old_name = {new: old for old, new in OLD_TO_NEW_10_20.items()}
    tuab = [old_name.get(c, c) for c in STANDARD_10_20]
    (folder / "zzgarbag_s001_t000.edf").write_bytes(rng.bytes(3000))
    truncated = edf("zztrunca_s001_t000", 250, 12, tuab)
    truncated.write_bytes(truncated.read_bytes()[:-5000])
    edf("zzmissin_s001_t000", 250, 12, [e for e in tuab if e != "O1"])
    edf("zzshortt_s001_t000", 250, 2, tuab)
    edf("zzlowrat_s001_t000", 100, 12, tuab)
    return {
        "zzgarbag_s001_t000": "unreadable EDF",
        "zztrunca_s001_t000": "truncated EDF",
        "zzmissin_s001_t000": "missing required channels",
        "zzshortt_s001_t000": "shorter than one window",
        "zzlowrat_s001_t000": "sampling rate too low for band-pass",
    }


def test_bad_files_land_in_the_manifest_and_good_ones_go_through(corpus, tmp_path, capsys):
    expected = _add_bad_files(corpus)
    result = build_window_cache(CFG, corpus, tmp_path / "out", progress=False)
    rejected = pd.read_csv(result.path / "rejected.csv").set_index("recording")
    assert rejected["reason"].to_dict() == expected
    assert rejected.loc["zzmissin_s001_t000", "detail"] == "O1"
    n_good = len(edf_files(corpus)) - len(expected)
    assert result.manifest["files"]["used"] == n_good
    cache = WindowCache.open(result.path)
    assert not set(cache.meta["recording"]) & set(expected)
    printed = capsys.readouterr().out
    assert "rejected - truncated EDF: 1" in printed and "windows per split" in printed


def test_empty_result_says_why_and_points_to_the_manifest(tmp_path) -> None:
    root = tmp_path / "corpus"
    expected = _add_bad_files(root)
    with pytest.raises(EmptyCacheError, match="rejected.csv") as info:
        prepare_cache(CFG, root, tmp_path / "out")
    assert "all 5 recording(s) were rejected" in str(info.value)
    listed = pd.read_csv(next((tmp_path / "out").glob("*/rejected.csv")))
    assert set(listed["recording"]) == set(expected)


def test_tree_without_tuab_files_is_a_clear_error(tmp_path) -> None:
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(FileNotFoundError, match=r"no TUAB recordings.*1 other file"):
        prepare_cache(CFG, tmp_path, tmp_path / "out")


# ---- reading ----------------------------------------------------------------------------
def test_windows_are_zero_copy_views_of_the_mapped_files(built) -> None:
    allocated = pa.total_allocated_bytes()
    cache = WindowCache.open(built.path)
    assert pa.total_allocated_bytes() - allocated < cache.windows.nbytes / 10
    for mapped in cache._shards:
        view = mapped.windows
        assert view.shape[1:] == (19, 1024) and view.dtype == np.float16
        assert not view.flags.owndata and not view.flags.writeable
        # The view's memory lies inside the memory-mapped file.
        with pa.memory_map(str(mapped.path)) as again:
            size = again.size()
        mapped.source.seek(0)
        whole = mapped.source.read_buffer(size)  # zero-copy slice of the mapping
        start = view.__array_interface__["data"][0]
        assert whole.address <= start and start + view.nbytes <= whole.address + whole.size
        assert np.shares_memory(view, np.frombuffer(whole, dtype=np.uint8))
    single = cache.windows[0]
    assert np.shares_memory(single, cache._shards[0].windows)


def test_shard_reader_refuses_foreign_arrow_files(tmp_path) -> None:
    table = pa.table({"x": [1, 2]})
    with pa.OSFile(str(tmp_path / "f.arrow"), "wb") as sink:
        with pa.ipc.new_file(sink, table.schema) as writer:
            writer.write_table(table)
    with pytest.raises(ValueError, match="not a tune-eegpt window shard"):
        MappedShard(tmp_path / "f.arrow")


def test_splits_are_batch_sources_in_microvolts(built) -> None:
    cache = WindowCache.open(built.path)
    assert cache.key == built.key and cache.channels == list(STANDARD_10_20)
    assert cache.sfreq == 256.0
    subjects = {}
    for name in ("train", "val", "test"):
        split = cache.split(name)
        assert isinstance(split, BatchSource) and len(split) > 0
        subjects[name] = set(split.subject_ids)
        assert len(split.recording_ids) == len(split) == len(split.subject_ids)
        idx = np.array([len(split) - 1, 0, len(split) // 2])
        x, y = split.get_batch(idx)
        assert x.dtype == torch.float32 and x.shape == (3, 19, 1024)
        assert y.dtype == torch.float32 and set(y.tolist()) <= {0.0, 1.0}
        rows = split.rows[idx]
        expected = np.stack([cache.windows[int(r)] for r in rows]).astype(np.float32)
        np.testing.assert_array_equal(x.numpy(), expected)
        assert 1.0 < float(x.std()) < 500.0  # microvolts, not volts or millivolts
    assert not subjects["train"] & subjects["val"]
    assert not (subjects["train"] | subjects["val"]) & subjects["test"]
    test_rows = cache.meta[cache.meta["split"] == "test"]
    assert (test_rows["source_split"] == "eval").all()
    assert (
        len(cache.meta)
        == len(cache.windows)
        == sum(len(cache.split(n)) for n in ("train", "val", "test"))
    )


def test_sharded_windows_index_like_an_array(built) -> None:
    windows = WindowCache.open(built.path).windows
    dense = np.concatenate(windows.shards)
    rows = np.array([5, 0, len(dense) - 1, 17, 5])
    np.testing.assert_array_equal(windows.take(rows), dense[rows])
    np.testing.assert_array_equal(windows[3:9], dense[3:9])
    np.testing.assert_array_equal(windows[-1], dense[-1])
    with pytest.raises(IndexError):
        windows.take(np.array([len(dense)]))


@pytest.mark.slow
def test_parallel_build_matches_serial_build(built, corpus_template, tmp_path) -> None:
    parallel = build_window_cache(
        CFG, corpus_template, tmp_path / "par", workers=2, progress=False, verbose=False
    )
    assert parallel.key == built.key and parallel.built == built.built
    a = WindowCache.open(built.path)
    b = WindowCache.open(parallel.path)
    pd.testing.assert_frame_equal(a.meta, b.meta)
    for x, y in zip(a.windows.shards, b.windows.shards, strict=True):
        np.testing.assert_array_equal(x, y)


def test_opening_an_incomplete_cache_is_an_error(built, tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="pass one of those"):
        WindowCache.open(built.path.parent)
    with pytest.raises(FileNotFoundError, match="not a complete window cache"):
        WindowCache.open(tmp_path)


@pytest.mark.slow
def test_ensure_synthetic_cache_generates_once(tmp_path) -> None:
    cfg = DataConfig(cache_dir=str(tmp_path), synthetic_subjects=4, synthetic_seed=1)
    first = ensure_synthetic_cache(cfg, workers=1)
    corpus = next((tmp_path / "synthetic").iterdir())
    stamp = corpus.stat().st_mtime_ns, edf_files(corpus)[0].stat().st_mtime_ns
    second = ensure_synthetic_cache(cfg, workers=1)
    assert second == first and first.parent == tmp_path / "windows"
    assert (corpus.stat().st_mtime_ns, edf_files(corpus)[0].stat().st_mtime_ns) == stamp
    assert len(list((tmp_path / "synthetic").iterdir())) == 1  # no temp folder left behind
    assert len(WindowCache.open(first).split("train")) > 0


def test_prepare_without_out_writes_where_train_and_search_look(corpus_template, tmp_path, capsys):
    import yaml

    from tune_eegpt.data import __main__ as data_cli
    from tune_eegpt.data.default_cache import ensure_cache

    config = tmp_path / "run.yaml"
    raw = {"data": {"cache_dir": str(tmp_path / "cache"), "data_root": str(corpus_template)}}
    config.write_text(yaml.safe_dump(raw))
    argv = ["prepare", "--data-root", str(corpus_template), "--config", str(config)]
    assert data_cli.main([*argv, "--workers", "1"]) == 0
    printed = Path(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed.parent == tmp_path / "cache" / "windows"
    stamps = shard_stamps(printed)
    cfg = DataConfig(cache_dir=str(tmp_path / "cache"), data_root=str(corpus_template))
    assert Path(ensure_cache(cfg, workers=1)) == printed  # the run's own lookup finds it
    assert shard_stamps(printed) == stamps  # reused, not decoded again
