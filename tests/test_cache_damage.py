"""Damage to a finished window cache (a shard cut short, bytes flipped inside a shard's
windows, a shard gone) is found and named (on open, by `data info --verify`, by `data
prepare`), and `data prepare` repairs it by decoding only that recording again."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from tune_eegpt.checksum import DamagedFileError, crc32_of, fingerprint, sidecar_name
from tune_eegpt.config import DataConfig
from tune_eegpt.data import WindowCache, build_window_cache
from tune_eegpt.data.__main__ import main as data_main
from tune_eegpt.data.storage import local_copy
from tune_eegpt.data.synthetic import SyntheticSpec, write_synthetic_corpus

TINY = SyntheticSpec(subjects=4, seed=5, min_duration_s=20, max_duration_s=24)


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("damage")
    write_synthetic_corpus(root / "corpus", TINY)
    result = build_window_cache(
        DataConfig(), root / "corpus", root / "caches", progress=False, verbose=False
    )
    return root / "corpus", Path(result.path)


@pytest.fixture()
def cache(pristine, tmp_path) -> tuple[Path, Path]:
    """A private copy of the finished cache (and its corpus) to damage."""
    corpus, built = pristine
    out = tmp_path / "caches"
    shutil.copytree(built, out / built.name)
    return corpus, out / built.name


def shards_of(cache_dir: Path) -> list[Path]:
    manifest = json.loads((cache_dir / "manifest.json").read_text())
    return [cache_dir / "shards" / f"{e['recording']}.arrow" for e in manifest["shards"]]


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def flip(path: Path) -> None:
    """64 bytes inverted in the middle of the file: inside the windows, size unchanged."""
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 64] = bytes(255 - b for b in data[middle : middle + 64])
    path.write_bytes(bytes(data))


def test_the_manifest_records_each_shards_size_and_crc(pristine):
    _, built = pristine
    manifest = json.loads((built / "manifest.json").read_text())
    for entry, shard in zip(manifest["shards"], shards_of(built), strict=True):
        assert entry["bytes"] == shard.stat().st_size
        assert entry["crc32"] == crc32_of(shard)


def test_a_truncated_shard_is_named_on_open(cache):
    _, cache_dir = cache
    shard = shards_of(cache_dir)[1]
    truncate(shard)
    with pytest.raises(DamagedFileError, match="damaged window shard") as caught:
        WindowCache.open(cache_dir)
    assert str(shard) in str(caught.value) and "recorded" in str(caught.value)
    assert "data prepare" in str(caught.value)


@pytest.mark.parametrize("damage", ["truncated", "flipped", "missing"])
def test_damage_is_found_by_verify_and_repaired_by_prepare(cache, damage, capsys):
    corpus, cache_dir = cache
    shards = shards_of(cache_dir)
    shard = shards[2]
    reference = WindowCache.open(cache_dir).windows.shards[2].copy()
    stamps = {s: s.stat().st_mtime_ns for s in shards if s != shard}
    {"truncated": truncate, "flipped": flip, "missing": Path.unlink}[damage](shard)

    assert data_main(["info", str(cache_dir), "--verify"]) == 1
    out, err = capsys.readouterr()
    assert f"damaged: {shard}:" in out
    assert "1 damaged" in out and "data prepare" in err

    out_dir = cache_dir.parent
    assert data_main(["prepare", "--data-root", str(corpus), "--out", str(out_dir)]) == 0
    out = capsys.readouterr().out
    assert f"window cache: shard {shard} is damaged" in out
    manifest = json.loads((cache_dir / "manifest.json").read_text())
    assert manifest["build"]["built"] == 1  # that recording decoded again, no other
    assert all(s.stat().st_mtime_ns == t for s, t in stamps.items())  # the others untouched
    np.testing.assert_array_equal(WindowCache.open(cache_dir).windows.shards[2], reference)
    assert data_main(["info", str(cache_dir), "--verify"]) == 0
    assert "none damaged" in capsys.readouterr().out


def test_a_shard_damaged_in_storage_is_refused_on_copy_to_a_node(cache, tmp_path):
    _, cache_dir = cache
    flip(shards_of(cache_dir)[0])
    with pytest.raises(DamagedFileError, match="damaged in storage") as caught:
        local_copy(f"file://{cache_dir}", tmp_path / "node" / cache_dir.name)
    assert shards_of(cache_dir)[0].name in str(caught.value)
    assert not (tmp_path / "node" / cache_dir.name / "manifest.json").exists()  # not complete


def test_a_single_file_is_checked_against_its_fingerprint_on_copy(tmp_path):
    """A feature file in storage with its fingerprint beside it (as the search uploads
    them): a good copy is verified once; a damaged one is refused by name."""
    bucket = tmp_path / "bucket"
    bucket.mkdir()
    stored = bucket / "features-x.arrow"
    stored.write_bytes(np.random.default_rng(0).bytes(1 << 16))
    (bucket / sidecar_name(stored.name)).write_text(json.dumps(fingerprint(stored)))
    local = tmp_path / "node" / stored.name
    assert local_copy(f"file://{stored}", local).read_bytes() == stored.read_bytes()
    assert (local.parent / sidecar_name(local.name)).is_file()  # verified: not read again
    flip(stored)
    with pytest.raises(DamagedFileError, match="damaged in storage") as caught:
        local_copy(f"file://{stored}", tmp_path / "other" / stored.name)
    assert str(stored) in str(caught.value)
    assert not (tmp_path / "other" / stored.name).exists()
