"""float8 (e4m3) feature caches: the switch, the file, the cast back, dropout and training."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch
from packed_fixtures import SHAPE, probe_config, probe_head
from torch import nn

from tune_eegpt.config import ConfigError, RunConfig
from tune_eegpt.pipeline import PreparedData, build_trainer, prepare_data
from tune_eegpt.training.batches import RowSubset, TensorBatches
from tune_eegpt.training.dropout_bits import half_dropout_
from tune_eegpt.training.feature_rows import feature_rows
from tune_eegpt.training.features import FeatureBatches, build_feature_cache
from tune_eegpt.training.float8 import E4M3, to_e4m3, to_float32
from tune_eegpt.training.trainer import ProbeTrainer

F8 = "float8_e4m3"


def features(n: int, seed: int = 0, signal: float = 0.06) -> TensorBatches:
    """float32 "windows" that an identity encoder turns into features of SHAPE, with a
    class signal a probe can learn (as packed_fixtures.feature_data, in float32)."""
    g = torch.Generator().manual_seed(seed)
    y = (torch.rand(n, generator=g) < 0.5).float()
    direction = torch.randn(SHAPE, generator=torch.Generator().manual_seed(1234))
    x = torch.randn(n, *SHAPE, generator=g) + signal * direction * (2 * y - 1).view(-1, 1, 1, 1)
    return TensorBatches(x, y, recording_ids=np.arange(n) // 4)


def cache(tmp_path: Path, data: TensorBatches, dtype: str, key: str = "k") -> Path:
    # nn.Identity as the frozen encoder: the cache holds exactly ``data.x``, rounded
    return build_feature_cache(nn.Identity(), data, tmp_path, key, dtype=dtype, progress=False)


def test_the_cast_back_is_torchs_cast_for_every_e4m3_value() -> None:
    patterns = torch.arange(256, dtype=torch.int64).to(torch.uint8)
    patterns = patterns[(patterns & 0x7F) != 0x7F]  # all but the two NaNs (never stored)
    values = patterns.view(E4M3).view(2, -1)  # subnormals, both zeros, +-448 included
    out = to_float32(values, out=torch.empty(values.shape))
    assert torch.equal(out.view(torch.int32), values.float().view(torch.int32))  # bit for bit


def test_values_beyond_448_saturate_and_nan_is_refused() -> None:
    z = torch.tensor([500.0, -1e6, float("inf"), 448.0, 1.0, -0.3])
    stored, saturated = to_e4m3(z)
    assert saturated == 3
    assert stored.float().tolist() == [448.0, -448.0, 448.0, 448.0, 1.0, -0.3125]
    with pytest.raises(ValueError, match="features hold NaN: refusing to store them as float8"):
        to_e4m3(torch.tensor([1.0, float("nan")]))


def test_a_float8_cache_holds_torchs_float8_cast_of_the_features(tmp_path: Path) -> None:
    data = features(37)
    data.x[0, 0, 0, :3] = torch.tensor([600.0, -0.001, 0.0])  # saturated, subnormal, zero
    path = cache(tmp_path, data, F8)
    assert path.name.endswith("-float8_e4m3.arrow")
    assert path != cache(tmp_path, data, "float16")  # another dtype, another file
    feats = FeatureBatches.open(path, dtype=F8)
    assert feats.dtype == torch.float8_e4m3fn and feats.dtype_name == F8
    assert pa.ipc.open_file(path).schema.field("features").type.value_type == pa.uint8()
    order = np.array([36, 0, 9, 8, 17, 3, 35])
    x, y = feats.get_batch(order)
    assert x.dtype == torch.float8_e4m3fn and x.shape == (7, *SHAPE)
    expected = data.x[order].clamp(-448, 448).to(torch.float8_e4m3fn)
    assert torch.equal(x.view(torch.uint8), expected.view(torch.uint8))  # exactly
    assert torch.equal(y, data.y[order])
    rows = feature_rows(RowSubset(feats, order))  # the packed engine's view of the same bytes
    assert rows.dtype == torch.float8_e4m3fn and rows.width == int(np.prod(SHAPE))
    gathered = rows.gather(torch.arange(len(order)))
    assert torch.equal(gathered.view(torch.uint8), expected.view(7, -1).view(torch.uint8))
    assert torch.equal(x[1, 0, 0, :3].float(), torch.tensor([448.0, -0.001953125, 0.0]))  # row 0


def test_a_cache_is_never_read_as_another_dtype(tmp_path: Path) -> None:
    path = cache(tmp_path, features(10), F8)
    with pytest.raises(
        ValueError,
        match=r"holds float8_e4m3 features, but model.feature_dtype='float16'; prepare the data",
    ):
        FeatureBatches.open(path, dtype="float16")
    # metadata that contradicts the stored values: refused whatever is asked for
    table = pa.ipc.open_file(path).read_all()
    meta = json.loads(table.schema.metadata[b"tune_eegpt"])
    meta["dtype"] = "float16"
    forged = tmp_path / "forged.arrow"
    with pa.OSFile(str(forged), "wb") as sink:
        schema = table.schema.with_metadata({"tune_eegpt": json.dumps(meta)})
        with pa.ipc.new_file(sink, schema) as writer:
            writer.write_table(table.cast(schema))
    with pytest.raises(ValueError, match="says dtype 'float16' but stores uint8 values"):
        FeatureBatches.open(forged)


@pytest.mark.parametrize("host_unpack", [True, False])  # NumPy's unpacking; the device's
def test_dropout_masks_the_same_elements_of_float8_and_float16_rows(host_unpack) -> None:
    g = torch.Generator().manual_seed(0)
    values = (torch.rand(300, 77, generator=g) + 0.5) * torch.sign(torch.randn(300, 77))
    x16 = half_dropout_(values.half(), 5, 2, 3, host_unpack=host_unpack)
    x8 = half_dropout_(values.to(torch.float8_e4m3fn), 5, 2, 3, host_unpack=host_unpack)
    kept = x16 != 0
    assert 0.45 < kept.float().mean().item() < 0.55
    assert torch.equal(x8.view(torch.uint8) != 0, kept)
    assert torch.equal(x8.float()[kept], values.to(torch.float8_e4m3fn).float()[kept])


@pytest.mark.parametrize("fast_path", [True, False])
def test_float8_rows_train_exactly_as_their_float32_values(tmp_path: Path, fast_path) -> None:
    """On either path a float8 cache trains as float32 rows holding the same (rounded)
    values: the cast back is exact and the dropout bits do not depend on the dtype."""
    train, val = features(120, signal=0.3), features(60, seed=1, signal=0.3)
    f8_train = FeatureBatches.open(cache(tmp_path, train, F8, "train"), dtype=F8)
    f8_val = FeatureBatches.open(cache(tmp_path, val, F8, "val"), dtype=F8)
    rounded = [
        TensorBatches(d.x.to(torch.float8_e4m3fn).float(), d.y, d.recording_ids)
        for d in (train, val)
    ]
    runs = []
    for train_data, val_data, dtype in (
        (f8_train, f8_val, torch.float8_e4m3fn),
        (*rounded, torch.float32),
    ):
        cfg = probe_config(epochs=2, threads=1)
        trainer = ProbeTrainer(cfg, probe_head(0), train_data, val_data, fast_path=fast_path)
        assert (trainer.engine_name == "packed") == fast_path
        if fast_path:
            assert trainer.train_rows.dtype == dtype
        runs.append([trainer.train_epoch() for _ in range(2)])
    assert runs[0] == runs[1]
    assert np.isfinite(runs[0][-1]["train_loss"]) and runs[0][-1]["val_auroc"] > 0.6


def test_the_switch_defaults_to_float16_is_checked_and_enters_the_fingerprint() -> None:
    cfg = RunConfig()
    assert cfg.model.feature_dtype == "float16"
    f8 = cfg.with_overrides({"feature_dtype": F8})
    assert f8.fingerprint() != cfg.fingerprint()
    assert cfg.outcome_differences(f8.outcome_fields()) == ["model.feature_dtype"]
    with pytest.raises(
        ConfigError,
        match=r"model.feature_dtype='float8' is not allowed: expected one of "
        r"\['float16', 'float8_e4m3'\]",
    ):
        RunConfig.from_dict({"model": {"feature_dtype": "float8"}})


@pytest.mark.slow
def test_the_pipeline_prepares_and_trains_on_a_float8_cache(tiny_base) -> None:
    _, config = tiny_base
    cfg16 = RunConfig.from_yaml(config).with_overrides({"epochs": 1})
    cfg8 = cfg16.with_overrides({"feature_dtype": F8})
    prepared8 = prepare_data(cfg8, progress=False)
    prepared16 = prepare_data(cfg16, progress=False)
    assert prepared8.feature_cache.endswith("-float8_e4m3.arrow")
    assert prepared8.feature_cache.replace("float8_e4m3", "float16") == prepared16.feature_cache
    size8, size16 = (Path(p.feature_cache).stat().st_size for p in (prepared8, prepared16))
    assert size8 < 0.55 * size16
    trainer = build_trainer(cfg8, prepared8)
    assert trainer.engine_name == "packed" and trainer.train_rows.dtype == torch.float8_e4m3fn
    assert np.isfinite(trainer.train_epoch()["val_auroc"])
    with pytest.raises(ValueError, match="holds float8_e4m3 features, but model.feature_dtype"):
        build_trainer(cfg16, PreparedData(prepared8.window_cache, prepared8.feature_cache))


def test_float8_rows_copy_to_a_device_as_float8() -> None:
    from tune_eegpt.training.device_features import copy_rows_to

    data = features(20)
    rows = feature_rows(TensorBatches(data.x.to(torch.float8_e4m3fn), data.y))
    assert rows.dtype == torch.float8_e4m3fn and rows.table.shape == (20, int(np.prod(SHAPE)))
    copied = copy_rows_to(rows, torch.device("cpu"))  # one contiguous (rows, bytes) table
    everything = torch.arange(20)
    assert torch.equal(copied.table, rows.gather(everything).view(torch.uint8))
    assert copied.dtype == torch.float8_e4m3fn
    assert torch.equal(copied.gather(everything).view(torch.uint8), copied.table)
