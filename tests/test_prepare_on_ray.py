"""Data preparation on a real multi-node Ray cluster (``ray.cluster_utils.Cluster``: a
head without CPUs, two 1-CPU workers, one of them with a fake GPU): every recording is
decoded once across the nodes into a cache equal to a single-process build; the encoder
runs where the GPU is; a lost worker and a bad file change nothing but what they must;
caches in object storage (``file://`` here) are copied to a node once, verified."""

from __future__ import annotations

import json
import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from tune_eegpt.config import DataConfig, RunConfig
from tune_eegpt.data import WindowCache, build_window_cache
from tune_eegpt.data.build import shard_writers
from tune_eegpt.data.storage import local_copy
from tune_eegpt.data.synthetic import SyntheticSpec, write_synthetic_corpus
from tune_eegpt.data.window_cache import WindowSplit
from tune_eegpt.pipeline import PreparedData, load_encoder
from tune_eegpt.training.features import build_feature_cache

ray = pytest.importorskip("ray")

from tune_eegpt.prepare_on_ray import encode_on_ray, ray_runner  # noqa: E402

TINY = SyntheticSpec(
    subjects=4, seed=3, min_duration_s=20, max_duration_s=28, multi_session_fraction=0.5
)
CFG = DataConfig()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ray-prep") / "corpus"
    write_synthetic_corpus(root, TINY)
    return root


@pytest.fixture(scope="module")
def reference(corpus, tmp_path_factory):
    """The same corpus built in this process, one recording after another."""
    out = tmp_path_factory.mktemp("reference")
    return build_window_cache(CFG, corpus, out, progress=False, verbose=False)


@pytest.fixture(scope="module")
def cluster():
    """Head with 0 CPUs; worker "cpu" (1 CPU) and worker "gpu" (1 CPU, 1 fake GPU).
    Yields (cluster, {"cpu": node, "gpu": node})."""
    from ray.cluster_utils import Cluster

    with pytest.MonkeyPatch.context() as mp:
        # keep this cluster's address out of /tmp/ray, where other runs on this machine
        # would find it (see tests/test_cluster.py)
        mp.setattr(ray._private.utils, "write_ray_address", lambda *a, **k: None)
        mp.setattr(ray._common.utils, "reset_ray_address", lambda *a, **k: None)
        # Ray keeps CPU tasks off GPU nodes while others are free; on the AWS cluster every
        # worker is a GPU node, so let both workers here count alike
        config = {"scheduler_avoid_gpu_nodes": False}
        c = Cluster(
            initialize_head=True,
            head_node_args={"num_cpus": 0, "include_dashboard": False, "_system_config": config},
        )
        nodes = {"cpu": c.add_node(num_cpus=1), "gpu": c.add_node(num_cpus=1, num_gpus=1)}
        c.wait_for_nodes()
        ray.init(address=c.address, configure_logging=False)
        warm_up(nodes.values())
        try:
            yield c, nodes
        finally:
            ray.shutdown()
            c.shutdown()


def warm_up(nodes) -> None:
    """Starts a worker process with the decoder imported on each node, so that no node
    sits out the first build while its worker process starts (seconds on a busy CPU)."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    def load() -> str:
        import tune_eegpt.data.preprocess  # noqa: F401 - MNE and friends, the slow imports

        return ray.get_runtime_context().get_node_id()

    task = ray.remote(load)
    ray.get(
        [
            task.options(
                num_cpus=1,
                scheduling_strategy=NodeAffinitySchedulingStrategy(node.node_id, soft=False),
            ).remote()
            for node in nodes
        ]
    )


def assert_same_cache(built: str | Path, reference) -> None:
    """Arrays, per-window metadata, CSV files and manifest (but its build timing) equal."""
    a, b = WindowCache.open(built), WindowCache.open(reference.path)
    pd.testing.assert_frame_equal(a.meta, b.meta)
    assert len(a.windows.shards) == len(b.windows.shards)
    for x, y in zip(a.windows.shards, b.windows.shards, strict=True):
        np.testing.assert_array_equal(x, y)
    for name in ("recordings.csv", "rejected.csv"):
        assert (Path(built) / name).read_text() == (reference.path / name).read_text(), name
    assert same_manifest(a.manifest) == same_manifest(b.manifest)


def same_manifest(manifest: dict) -> dict:
    """The manifest but its build timing and the shards' checksums (a shard records who
    wrote it, so its bytes differ between writers)"""
    shards = [{"recording": e["recording"], "rows": e["rows"]} for e in manifest["shards"]]
    return {**{k: v for k, v in manifest.items() if k != "build"}, "shards": shards}


@pytest.mark.slow
def test_every_recording_is_decoded_once_across_the_workers(cluster, corpus, reference, tmp_path):
    _, nodes = cluster
    runner = ray_runner()
    result = build_window_cache(
        CFG, corpus, tmp_path / "out", runner=runner, progress=False, verbose=False
    )
    recordings = [r["recording"] for r in runner.results]
    assert sorted(recordings) == sorted(set(recordings))  # each decoded once
    assert len(recordings) == reference.manifest["files"]["found"]
    writers = shard_writers(result.path)
    assert set(writers) == set(recordings)
    by_node = pd.Series(writers).value_counts().to_dict()
    names = {node.node_id: name for name, node in nodes.items()}
    print(f"recordings decoded per node: { {names[n]: k for n, k in by_node.items()} }")
    assert set(by_node) == {nodes["cpu"].node_id, nodes["gpu"].node_id}  # both did some
    assert_same_cache(result.path, reference)


@pytest.mark.slow
def test_encoding_runs_on_the_gpu_node_and_equals_single_process_features(
    cluster, reference, tmp_path
):
    _, nodes = cluster
    cfg = RunConfig.from_dict(
        {"data": {"cache_dir": str(tmp_path / "cache")}, "model": {"encoder": "small"}}
    )
    done = encode_on_ray(
        cfg, str(reference.path), progress=False, local_copies=str(tmp_path / "copies")
    )
    assert done["node"] == nodes["gpu"].node_id
    assert done["device"] == "cpu"  # placed by the (fake) GPU resource; no CUDA here
    cache = WindowCache.open(reference.path)
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in Ray's worker processes: the same summation order
    try:
        every = WindowSplit("all", cache.windows, cache.meta, cache.channels, cache.sfreq)
        expected = build_feature_cache(
            load_encoder(cfg, tuple(cache.channels)),
            every,
            tmp_path / "single",
            key=cache.key,
            batch_size=256,
            progress=False,
        )
    finally:
        torch.set_num_threads(threads)
    assert Path(done["path"]).name == expected.name
    got = pa.ipc.open_file(pa.memory_map(done["path"])).read_all()
    want = pa.ipc.open_file(pa.memory_map(str(expected))).read_all()
    assert got.equals(want)
    again = encode_on_ray(cfg, str(reference.path), progress=False)
    assert again == {"path": done["path"], "device": None, "node": None}  # reused


@pytest.mark.slow
def test_a_worker_lost_mid_prepare_changes_nothing(cluster, corpus, reference, tmp_path):
    c, nodes = cluster
    extra = c.add_node(num_cpus=1)
    c.wait_for_nodes()
    warm_up([extra])
    # Hold the CPUs of the other two workers, so that the decoding starts on the extra node
    # alone; it is removed while it decodes its second recording, then they are let go.
    release = tmp_path / "release"
    holds = [hold_cpu(node, tmp_path / f"held-{name}", release) for name, node in nodes.items()]
    deadline = time.monotonic() + 60
    while not all((tmp_path / f"held-{name}").exists() for name in nodes):
        assert time.monotonic() < deadline, "the CPU-holding tasks never started"
        time.sleep(0.05)
    out = tmp_path / "out"
    runner = ray_runner()
    outcome = {}

    def build():
        outcome["result"] = build_window_cache(
            CFG, corpus, out, runner=runner, progress=False, verbose=False
        )

    thread = threading.Thread(target=build)
    thread.start()
    while extra.node_id not in shard_writers_or_empty(out):
        assert time.monotonic() < deadline + 60, "the extra node wrote no shard"
        time.sleep(0.05)
    finished_before = len(runner.results)
    c.remove_node(extra)  # its running task dies with it and is retried elsewhere
    release.touch()
    ray.get(holds)
    thread.join(timeout=120)
    assert not thread.is_alive() and "result" in outcome
    assert finished_before < reference.manifest["files"]["found"]  # removed mid-prepare
    writers = set(shard_writers(outcome["result"].path).values())
    assert extra.node_id in writers and writers - {extra.node_id}  # the others finished it
    result = outcome["result"]
    assert_same_cache(result.path, reference)
    visible = sorted(
        p.name for p in (Path(result.path) / "shards").iterdir() if not p.name.startswith(".")
    )
    assert visible == sorted(p.name for p in (reference.path / "shards").iterdir())


def hold_cpu(node, started: Path, release: Path):
    """A task that occupies ``node``'s CPU until the file ``release`` exists."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    def wait(started: str, release: str) -> None:
        Path(started).touch()
        while not Path(release).exists():
            time.sleep(0.05)

    strategy = NodeAffinitySchedulingStrategy(node.node_id, soft=False)
    return (
        ray.remote(wait)
        .options(num_cpus=1, scheduling_strategy=strategy)
        .remote(str(started), str(release))
    )


def shard_writers_or_empty(out: Path) -> set[str]:
    caches = list(out.glob("*/shards"))
    if not caches:
        return set()
    try:
        return set(shard_writers(caches[0].parent).values())
    except (FileNotFoundError, pa.ArrowInvalid, json.JSONDecodeError):
        return set()  # a file renamed into place while we looked


@pytest.mark.slow
def test_a_bad_file_on_a_worker_is_rejected_and_uri_storage_is_copied_once(
    cluster, corpus, tmp_path
):
    bad_corpus = Path(shutil.copytree(corpus, tmp_path / "corpus"))
    folder = bad_corpus / "edf" / "train" / "abnormal" / "01_tcp_ar"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "zzgarbag_s001_t000.edf").write_bytes(np.random.default_rng(0).bytes(3000))
    store = f"file://{tmp_path / 'bucket'}"  # an object-store URI, through pyarrow
    runner = ray_runner()
    result = build_window_cache(
        CFG, bad_corpus, store, runner=runner, progress=False, verbose=False
    )
    assert isinstance(result.path, str) and result.path.startswith("file://")
    bad = [r for r in runner.results if r["recording"] == "zzgarbag_s001_t000"]
    assert [r["status"] for r in bad] == ["unreadable EDF"]
    assert bad[0]["node"] in {n.node_id for n in cluster[1].values()}  # on a worker
    copy = local_copy(result.path, tmp_path / "copies" / "w")
    rejected = pd.read_csv(copy / "rejected.csv").set_index("recording")
    assert rejected["reason"].to_dict() == {"zzgarbag_s001_t000": "unreadable EDF"}
    assert len(WindowCache.open(copy)) == result.manifest["windows"]
    n_files = len(list(bad_corpus.rglob("*.edf")))
    assert result.manifest["files"]["used"] == n_files - 1
    stamp = (copy / "manifest.json").stat().st_mtime_ns
    assert local_copy(result.path, copy) == copy  # copied once: the second call reuses it
    assert (copy / "manifest.json").stat().st_mtime_ns == stamp
    prepared = PreparedData(result.path, None, str(tmp_path / "copies"))
    assert prepared.exists() and prepared.on_this_node().window_cache == str(
        tmp_path / "copies" / "windows" / result.key
    )


def test_a_copy_from_storage_refuses_an_incomplete_cache(tmp_path):
    incomplete = tmp_path / "bucket" / "abc"
    (incomplete / "shards").mkdir(parents=True)
    (incomplete / "shards" / "x.arrow").write_bytes(b"123")
    with pytest.raises(FileNotFoundError, match="not a complete cache"):
        local_copy(f"file://{incomplete}", tmp_path / "copy")
    (incomplete / "manifest.json").write_text(json.dumps({"shards": [{"recording": "y"}]}))
    with pytest.raises(ValueError, match=r"lists shards not in storage: \['y'\]"):
        local_copy(f"file://{incomplete}", tmp_path / "copy")
    assert not (tmp_path / "copy" / "manifest.json").exists()


@pytest.mark.slow
def test_the_data_cli_decodes_on_the_cluster_at_address(
    cluster, corpus, reference, tmp_path, capsys
):
    from tune_eegpt.data.__main__ import main

    c, _ = cluster
    out = tmp_path / "out"
    assert (
        main(["prepare", "--data-root", str(corpus), "--out", str(out), "--address", c.address])
        == 0
    )
    printed = capsys.readouterr().out
    assert printed.strip().splitlines()[-1] == str(out / reference.key)
    assert "as Ray tasks" in printed
    assert_same_cache(out / reference.key, reference)
    assert ray.is_initialized()  # the test's connection was used, and left open
