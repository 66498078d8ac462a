"""Checkpoint loading: every supported layout round-trips; every bad file says why."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
import torch

from tune_eegpt.config import STANDARD_10_20, ModelConfig
from tune_eegpt.models.eegpt import (
    EEGPTEncoder,
    build_encoder,
    convert_eegpt_state_dict,
    eegpt_small,
)

CHANNELS = list(STANDARD_10_20)


def lightning_layout(encoder: EEGPTEncoder) -> dict:
    """The released .ckpt's layout: four modules under one state_dict, plus bookkeeping."""
    other = eegpt_small(CHANNELS, init_seed=99).state_dict()
    state = {f"encoder.{k}": v for k, v in other.items()}
    state.update({f"target_encoder.{k}": v for k, v in encoder.state_dict().items()})
    state["predictor.mask_token"] = torch.zeros(1, 1, 4, 32)
    state["predictor.predictor_embed.weight"] = torch.randn(32, 64)
    state["reconstructor.reconstructor_proj.weight"] = torch.randn(64, 32)
    return {
        "epoch": 3,
        "global_step": 1200,
        "pytorch-lightning_version": "1.9.5",
        "state_dict": state,
    }


@pytest.fixture()
def source() -> EEGPTEncoder:
    return eegpt_small(CHANNELS, init_seed=5).eval()


def assert_same_outputs(a: EEGPTEncoder, b: EEGPTEncoder) -> None:
    x = torch.randn(3, 19, 1024) * 40
    with torch.no_grad():
        torch.testing.assert_close(a(x), b(x), rtol=0, atol=0)


def test_lightning_checkpoint_round_trips(source: EEGPTEncoder, tmp_path: Path) -> None:
    path = tmp_path / "eegpt.ckpt"
    torch.save(lightning_layout(source), path)
    loaded = EEGPTEncoder.from_checkpoint(path, CHANNELS, input_scale=1.0)
    assert (loaded.embed_dim, loaded.depth, loaded.num_heads, loaded.patch_size) == (64, 2, 4, 64)
    assert loaded.mlp_ratio == 4.0 and loaded.num_summary_tokens == 4
    assert_same_outputs(source, loaded.eval())


@pytest.mark.slow
def test_plain_and_prefixed_state_dicts_round_trip(source: EEGPTEncoder, tmp_path: Path) -> None:
    plain, prefixed = tmp_path / "plain.pt", tmp_path / "prefixed.pt"
    torch.save(source.state_dict(), plain)
    torch.save(lightning_layout(source)["state_dict"], prefixed)
    for path in (plain, prefixed):
        assert_same_outputs(source, EEGPTEncoder.from_checkpoint(path, CHANNELS, input_scale=1.0))


def test_convert_each_layout() -> None:
    w = torch.ones(2)
    assert convert_eegpt_state_dict(
        {"state_dict": {"target_encoder.a": w, "encoder.a": w, "predictor.b": w}}
    ) == {"a": w}
    assert convert_eegpt_state_dict({"target_encoder.a": w, "reconstructor.c": w}) == {"a": w}
    assert convert_eegpt_state_dict({"a": w, "blocks.0.b": w}) == {"a": w, "blocks.0.b": w}
    with pytest.raises(ValueError, match="not tensors: hyper"):
        convert_eegpt_state_dict({"a": w, "hyper": {"lr": 1}})
    with pytest.raises(ValueError, match="got list"):
        convert_eegpt_state_dict([w])


def test_wrong_keys_and_shapes_are_listed(source: EEGPTEncoder, tmp_path: Path) -> None:
    state = dict(source.state_dict())
    del state["blocks.1.mlp.fc2.bias"]
    del state["norm.weight"]
    state["blocks.0.attn.rel_pos"] = torch.zeros(3)
    state["chan_embed.weight"] = torch.zeros(58, 64)
    path = tmp_path / "bad.pt"
    torch.save(state, path)
    with pytest.raises(ValueError) as info:
        EEGPTEncoder.from_checkpoint(path, CHANNELS)
    text = str(info.value)
    assert str(path) in text
    assert "missing (2): blocks.1.mlp.fc2.bias, norm.weight" in text
    assert "unexpected (1): blocks.0.attn.rel_pos" in text
    assert "wrong shape (1): chan_embed.weight: checkpoint (58, 64) vs model (62, 64)" in text


def test_lightning_pickle_needs_trust(source: EEGPTEncoder, tmp_path: Path) -> None:
    ckpt = lightning_layout(source)
    ckpt["hyper_parameters"] = argparse.Namespace(lr=4e-4)  # what makes Lightning files pickles
    path = tmp_path / "lightning.ckpt"
    torch.save(ckpt, path)
    with pytest.raises(ValueError) as info:
        EEGPTEncoder.from_checkpoint(path, CHANNELS)
    text = str(info.value)
    assert str(path) in text and "weights_only=False" in text and "trusted=True" in text
    assert "Lightning" in text and "trust" in text
    loaded = EEGPTEncoder.from_checkpoint(path, CHANNELS, input_scale=1.0, trusted=True)
    assert_same_outputs(source, loaded)


def test_truncated_missing_and_foreign_files(source: EEGPTEncoder, tmp_path: Path) -> None:
    good = tmp_path / "good.pt"
    torch.save(source.state_dict(), good)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    text_file = tmp_path / "notes.ckpt"
    text_file.write_text("not a checkpoint")
    for bad in (truncated, text_file):
        for trusted in (False, True):
            with pytest.raises(ValueError, match=f"{bad}: cannot read this checkpoint"):
                EEGPTEncoder.from_checkpoint(bad, CHANNELS, trusted=trusted)
    with pytest.raises(FileNotFoundError, match="missing.ckpt"):
        EEGPTEncoder.from_checkpoint(tmp_path / "missing.ckpt", CHANNELS)


def test_heads_must_be_given_for_unknown_widths(tmp_path: Path) -> None:
    odd = EEGPTEncoder(channels=CHANNELS, embed_dim=48, depth=1, num_heads=3)
    path = tmp_path / "odd.pt"
    torch.save(odd.state_dict(), path)
    with pytest.raises(ValueError, match="pass num_heads"):
        EEGPTEncoder.from_checkpoint(path, CHANNELS)
    loaded = EEGPTEncoder.from_checkpoint(path, CHANNELS, num_heads=3, input_scale=1.0)
    assert_same_outputs(odd.eval(), loaded)


def test_build_encoder_checks_the_named_size(source: EEGPTEncoder, tmp_path: Path) -> None:
    path = tmp_path / "small.ckpt"
    torch.save(lightning_layout(source), path)
    enc = build_encoder(ModelConfig(encoder="small", checkpoint=str(path)), CHANNELS)
    assert enc.input_scale == 1.0 and not enc.training
    assert_same_outputs(source, enc)
    with pytest.raises(ValueError, match="set model.encoder"):
        build_encoder(ModelConfig(encoder="large", checkpoint=str(path)), CHANNELS)
