"""The run config -> caches -> trainer path, in both modes, on the tiny synthetic corpus."""

import pytest
import torch
from sklearn.metrics import roc_auc_score

from tune_eegpt.config import RunConfig
from tune_eegpt.data.window_cache import WindowSplit
from tune_eegpt.pipeline import PreparedData, build_trainer, prepare_data
from tune_eegpt.training.batches import RowSubset


@pytest.mark.slow
def test_cached_features_mode_trains_the_head_on_the_feature_cache(tiny_base):
    _, config = tiny_base
    cfg = RunConfig.from_yaml(config).with_overrides({"epochs": 1})
    prepared = prepare_data(cfg, progress=False)
    assert prepared.feature_cache is not None
    trainer = build_trainer(cfg, prepared)
    assert trainer.encoder is None and isinstance(trainer.train_data, RowSubset)
    x, _ = trainer.train_data.get_batch([0, 1])
    assert x.shape == (2, 16, 4, 64)  # (B, N patches, 4 summary tokens, D) of the small encoder
    metrics = trainer.train_epoch()
    assert metrics["global_step"] == trainer.steps_per_epoch
    y, p = trainer.predict(trainer.val_data)
    assert metrics["val_auroc"] == pytest.approx(roc_auc_score(y, p), abs=1e-12)


@pytest.mark.slow
def test_adapter_mode_runs_the_frozen_encoder_live_on_the_window_cache(tiny_base):
    _, config = tiny_base
    cfg = RunConfig.from_yaml(config).with_overrides({"epochs": 1, "adapter": True})
    prepared = prepare_data(cfg, progress=False)
    assert prepared.feature_cache is None  # something trainable precedes the encoder
    trainer = build_trainer(cfg, prepared)
    assert isinstance(trainer.train_data, WindowSplit) and trainer.adapter is not None
    encoder_before = {k: v.clone() for k, v in trainer.encoder.state_dict().items()}
    adapter_before = trainer.adapter.weight.detach().clone()
    trainer.train_epoch()
    assert not torch.equal(trainer.adapter.weight, adapter_before)  # the adapter learned
    for k, v in trainer.encoder.state_dict().items():
        assert torch.equal(v, encoder_before[k])  # the encoder did not


def test_a_trial_refuses_caches_it_cannot_reach_instead_of_building_them(tmp_path):
    present = tmp_path / "windows"
    present.mkdir()
    missing = tmp_path / "features.arrow"
    prepared = PreparedData(str(present), str(missing))
    with pytest.raises(FileNotFoundError) as err:
        prepared.require()
    assert str(err.value).startswith(f"prepared cache(s) not found on this node: {missing};")
    assert "--cache-dir must be a shared mount or a URI" in str(err.value)
    PreparedData(str(present), "s3://bucket/features.arrow").require()  # a URI is copied
    PreparedData(str(present), None).require()  # live encoder: no feature cache
