"""Frozen-feature cache: content, reuse, atomic writes, and features mode == live mode."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from tune_eegpt.checksum import DamagedFileError
from tune_eegpt.models.eegpt import EEGPTEncoder, eegpt_small
from tune_eegpt.models.probe import LinearProbeHead
from tune_eegpt.training.batches import BatchSource, TensorBatches
from tune_eegpt.training.features import (
    FeatureBatches,
    build_feature_cache,
    encoder_weights_hash,
    fingerprint_path,
)

CHANNELS = ["FP1", "FP2", "C3", "C4", "O1", "O2"]


def windows(n: int = 37, seed: int = 0) -> TensorBatches:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, len(CHANNELS), 512, generator=g) * 40  # microvolts
    y = (torch.rand(n, generator=g) > 0.5).float()
    return TensorBatches(x, y, recording_ids=np.array([f"rec{i // 4:03d}" for i in range(n)]))


@pytest.fixture()
def encoder() -> EEGPTEncoder:
    return eegpt_small(CHANNELS, init_seed=1).eval()


def live(encoder: EEGPTEncoder, data: TensorBatches) -> torch.Tensor:
    with torch.no_grad():
        return encoder(data.x)


def test_cache_holds_the_encoder_outputs(encoder: EEGPTEncoder, tmp_path: Path) -> None:
    data = windows()
    path = build_feature_cache(encoder, data, tmp_path, "win-abc", batch_size=8, progress=False)
    feats = FeatureBatches.open(path)
    assert isinstance(feats, BatchSource) and len(feats) == 37
    assert feats.feature_shape == (8, 4, 64)
    order = np.array([36, 0, 9, 8, 17, 3, 35])  # across record batches, any order
    x, y = feats.get_batch(order)
    assert x.dtype == torch.float16 and x.shape == (7, 8, 4, 64)  # as stored; trainer casts
    expected = live(encoder, data)[order]
    torch.testing.assert_close(x.float(), expected.half().float(), rtol=0, atol=1e-6)
    torch.testing.assert_close(y, data.y[order])
    assert list(feats.recording_ids[order]) == list(data.recording_ids[order])
    # no temporary files left behind: the file and its fingerprint
    assert sorted(tmp_path.iterdir()) == [path, fingerprint_path(path)]


def test_float32_cache_and_no_recording_ids(encoder: EEGPTEncoder, tmp_path: Path) -> None:
    data = windows(10)
    data.recording_ids = None
    path = build_feature_cache(encoder, data, tmp_path, "k", dtype="float32", progress=False)
    feats = FeatureBatches.open(path)
    x, _ = feats.get_batch(np.arange(10))
    torch.testing.assert_close(x, live(encoder, data), rtol=1e-5, atol=1e-5)
    assert feats.recording_ids is None


def test_cache_is_keyed_and_reused(encoder: EEGPTEncoder, tmp_path: Path) -> None:
    data = windows(10)
    first = build_feature_cache(encoder, data, tmp_path, "k1", progress=False)
    stamp = first.stat().st_mtime_ns
    calls = []
    encoder.register_forward_hook(lambda *args: calls.append(1))
    assert build_feature_cache(encoder, data, tmp_path, "k1", progress=False) == first
    assert calls == [] and first.stat().st_mtime_ns == stamp
    other_weights = eegpt_small(CHANNELS, init_seed=2)
    other_scale = eegpt_small(CHANNELS, init_seed=1, input_scale=1e-3)
    paths = {
        first,
        build_feature_cache(encoder, data, tmp_path, "k2", progress=False),
        build_feature_cache(other_weights, data, tmp_path, "k1", progress=False),
        build_feature_cache(other_scale, data, tmp_path, "k1", progress=False),
    }
    assert len(paths) == 4
    assert encoder_weights_hash(encoder) == encoder_weights_hash(eegpt_small(CHANNELS, init_seed=1))
    with pytest.raises(ValueError, match="may only hold"):
        build_feature_cache(encoder, data, tmp_path, "a/b", progress=False)


class FailingWindows(TensorBatches):
    def get_batch(self, indices):
        if indices[0] >= 16:
            raise OSError("disk went away")
        return super().get_batch(indices)


def test_interrupted_build_leaves_nothing(encoder: EEGPTEncoder, tmp_path: Path) -> None:
    data = windows(40)
    broken = FailingWindows(data.x, data.y)
    with pytest.raises(OSError, match="disk went away"):
        build_feature_cache(encoder, broken, tmp_path, "k", batch_size=8, progress=False)
    assert list(tmp_path.iterdir()) == []
    garbage = tmp_path / "garbage.arrow"
    garbage.write_bytes(b"ARROW1 but not really")
    with pytest.raises(ValueError, match="not a readable tune-eegpt feature cache"):
        FeatureBatches.open(garbage)


@pytest.mark.slow
def test_head_on_cached_features_equals_head_on_live_encoder(
    encoder: EEGPTEncoder, tmp_path: Path
) -> None:
    """The same seeded training run of the head, once on the float16 cache and once with
    the live frozen encoder in front: equal up to float16 rounding of the features."""
    data = windows(48)
    feats = FeatureBatches.open(
        build_feature_cache(encoder, data, tmp_path, "k", batch_size=16, progress=False)
    )

    def train(source_of_features) -> tuple[LinearProbeHead, torch.Tensor]:
        torch.manual_seed(0)
        head = LinearProbeHead(n_patches=8, embed_dim=64, dropout=0.5)
        opt = torch.optim.AdamW(head.parameters(), lr=1e-3)
        for step in range(6):
            idx = np.random.default_rng(step).permutation(48)[:16]
            z, y = source_of_features(idx)
            loss = torch.nn.functional.binary_cross_entropy_with_logits(head(z), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
        head.eval()
        with torch.no_grad():
            return head, head(feats.get_batch(np.arange(48))[0].float())

    def live_features(idx):
        x, y = data.get_batch(idx)
        with torch.no_grad():
            return encoder(x), y

    def cached_features(idx):
        z, y = feats.get_batch(idx)
        return z.float(), y

    cached_head, cached_logits = train(cached_features)
    live_head, live_logits = train(live_features)
    torch.testing.assert_close(cached_logits, live_logits, rtol=0, atol=5e-4)
    # Adam's first steps move each weight by about +-lr whatever the gradient's size, so a
    # near-zero gradient whose sign flips under float16 rounding costs up to ~lr per step.
    for a, b in zip(cached_head.parameters(), live_head.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=6 * 1e-3)
        assert (a - b).abs().mean() < 1e-4
    with torch.no_grad():  # and the trained head on live vs cached features of the same rows
        torch.testing.assert_close(
            live_head(live(encoder, data)),
            live_head(feats.get_batch(np.arange(48))[0].float()),
            rtol=0,
            atol=5e-4,
        )


def test_a_damaged_feature_file_is_refused_by_name_and_computed_again(
    encoder: EEGPTEncoder, tmp_path: Path, caplog
) -> None:
    data = windows(12)
    path = build_feature_cache(encoder, data, tmp_path, "win-d", batch_size=4, progress=False)
    good = path.read_bytes()
    flipped = bytearray(good)
    middle = len(flipped) // 2
    flipped[middle : middle + 64] = bytes(255 - b for b in flipped[middle : middle + 64])
    path.write_bytes(bytes(flipped))  # same size: only the full check sees it
    with caplog.at_level("WARNING", logger="tune_eegpt"):
        again = build_feature_cache(encoder, data, tmp_path, "win-d", batch_size=4, progress=False)
    assert again == path and path.read_bytes() == good
    assert f"feature cache {path} is damaged (content changed" in caplog.text
    path.write_bytes(good[: len(good) // 2])  # cut short: every open sees it
    with pytest.raises(DamagedFileError, match="damaged feature cache") as caught:
        FeatureBatches.open(path)
    assert str(path) in str(caught.value) and f"{len(good)} recorded" in str(caught.value)
