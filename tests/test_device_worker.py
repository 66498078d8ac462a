"""The device worker (trainables/device_worker.py) as a plain object: trials registered
with caches in object storage (``file://`` through pyarrow, as ``s3://`` would be) train
together in one pass, and their checkpoints restore in another worker."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pyarrow.fs as pafs
import pytest

from trainables.device_worker import DeviceWorker
from trainables.trial_config import trial_run_config
from tune_eegpt.config import RunConfig
from tune_eegpt.pipeline import PreparedData, prepare_data


def upload(local: str, bucket: Path) -> str:
    """``local`` (a cache folder or file) copied under ``bucket``; its file:// URI."""
    target = bucket / Path(local).name
    if Path(local).is_dir():
        pafs.copy_files(local, f"file://{target}")
    else:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(Path(local).read_bytes())
    return f"file://{target}"


@pytest.fixture(scope="module")
def stored(tiny_base, tmp_path_factory):
    folder, config = tiny_base
    base = RunConfig.from_yaml(config)
    local = prepare_data(base, progress=False)
    bucket = tmp_path_factory.mktemp("bucket")
    copies = tmp_path_factory.mktemp("copies")
    uris = PreparedData(
        upload(local.window_cache, bucket / "windows"),
        upload(local.feature_cache, bucket / "features"),
        str(copies),
    )
    return base, uris


TRIALS = {"a": {"max_lr": 3e-3, "accum_steps": 1}, "b": {"max_lr": 1e-3, "accum_steps": 2}}


def register(worker: DeviceWorker, base: RunConfig, uris: PreparedData, tmp: Path, ids):
    for t in ids:
        cfg = trial_run_config(base.to_dict(), TRIALS[t])
        asyncio.run(worker.register(t, cfg.to_dict(), uris.to_dict(), str(tmp / t)))


async def epochs_together(worker: DeviceWorker, ids) -> dict:
    replies = await asyncio.gather(*(worker.train_epoch(t) for t in ids))
    return dict(zip(ids, replies, strict=True))


@pytest.mark.slow
def test_trials_on_uri_caches_train_together_as_they_would_alone(stored, tmp_path):
    base, uris = stored
    assert uris.window_cache.startswith("file://")
    together = DeviceWorker(pack=4, threads=1)
    register(together, base, uris, tmp_path / "together", ["a", "b"])
    assert all(t.engine_name == "packed" for t in together.trainers.values())
    both = [asyncio.run(epochs_together(together, ["a", "b"])) for _ in range(2)]
    assert together.pack_sizes == [2, 2]  # one pass per epoch, both trials in it
    for t in ("a", "b"):
        alone = DeviceWorker(pack=4, threads=1)
        register(alone, base, uris, tmp_path / f"alone-{t}", [t])
        mine = [asyncio.run(epochs_together(alone, [t]))[t] for _ in range(2)]
        assert alone.pack_sizes == [1, 1]
        for epoch in range(2):
            packed_metrics, alone_metrics = both[epoch][t]["metrics"], mine[epoch]["metrics"]
            for key in ("val_auroc", "train_loss", "global_step", "lr"):
                assert round(packed_metrics[key], 4) == round(alone_metrics[key], 4), (t, key)


@pytest.mark.slow
def test_a_checkpoint_written_by_one_worker_resumes_in_another(stored, tmp_path):
    base, uris = stored
    first = DeviceWorker(pack=4, threads=1)
    register(first, base, uris, tmp_path / "one", ["a"])
    asyncio.run(epochs_together(first, ["a"]))
    saved = asyncio.run(first.save("a", str(tmp_path / "ckpt")))
    reference = asyncio.run(epochs_together(first, ["a"]))["a"]
    second = DeviceWorker(pack=4, threads=1)  # a restarted worker: nothing in memory
    register(second, base, uris, tmp_path / "two", ["a"])
    progress = asyncio.run(second.load("a", str(tmp_path / "ckpt")))
    assert Path(saved).parent == tmp_path / "ckpt" and progress["epoch"] == 1
    again = asyncio.run(epochs_together(second, ["a"]))["a"]
    assert again["metrics"] == reference["metrics"]  # bit-identical continuation


def test_an_unknown_trial_is_a_clear_error():
    with pytest.raises(KeyError, match="trial zz is not registered"):
        asyncio.run(DeviceWorker().train_epoch("zz"))
