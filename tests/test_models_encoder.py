"""EEGPT encoder: shapes, sizes, parameter names, determinism, input unit, factory."""

from __future__ import annotations

import re

import pytest
import torch

from tune_eegpt.config import STANDARD_10_20, ModelConfig
from tune_eegpt.models.eegpt import (
    SMALL_INIT_STD,
    EEGPTEncoder,
    build_encoder,
    eegpt_large,
    eegpt_small,
)

CHANNELS = list(STANDARD_10_20)


def tiny(channels, **kw) -> EEGPTEncoder:
    return EEGPTEncoder(channels=channels, embed_dim=32, depth=1, num_heads=2, patch_size=64, **kw)


@pytest.mark.parametrize("n_channels", [1, 3, 19, 58])
@pytest.mark.parametrize("n_samples", [64, 256, 1024, 1280])
def test_output_shape(n_channels: int, n_samples: int) -> None:
    from tune_eegpt.models.channels import VOCABULARY

    enc = tiny(list(VOCABULARY[:n_channels]))
    z = enc(torch.randn(2, n_channels, n_samples))
    assert z.shape == (2, n_samples // 64, 4, 32)
    assert torch.isfinite(z).all()


def test_rejects_inputs_that_do_not_fit() -> None:
    enc = tiny(CHANNELS)
    with pytest.raises(ValueError, match="19 channels"):
        enc(torch.randn(2, 18, 1024))
    with pytest.raises(ValueError, match="multiple of patch_size=64"):
        enc(torch.randn(2, 19, 1000))


@pytest.mark.slow
def test_large_matches_the_released_checkpoint_layout() -> None:
    enc = eegpt_large(CHANNELS)
    state = enc.state_dict()
    assert len(state) == 102
    assert sum(p.numel() for p in enc.parameters()) == 25_287_168
    block_key = re.compile(
        r"blocks\.[0-7]\.(norm1|attn\.qkv|attn\.proj|norm2|mlp\.fc1|mlp\.fc2)\.(weight|bias)"
    )
    other = {
        "summary_token",
        "patch_embed.proj.weight",
        "patch_embed.proj.bias",
        "chan_embed.weight",
        "norm.weight",
        "norm.bias",
    }
    assert {k for k in state if not block_key.fullmatch(k)} == other
    assert state["summary_token"].shape == (1, 4, 512)
    assert state["chan_embed.weight"].shape == (62, 512)
    assert state["blocks.0.attn.qkv.weight"].shape == (1536, 512)
    with torch.no_grad():
        assert enc(torch.randn(1, 19, 1024)).shape == (1, 16, 4, 512)


def test_channel_ids_are_a_non_persistent_buffer() -> None:
    enc = tiny(["EEG T3-REF", "Cz"])
    assert enc.chan_ids.tolist() == [25, 29]
    assert "chan_ids" not in enc.state_dict()


def test_seeded_init_is_deterministic_and_leaves_global_rng_alone() -> None:
    before = torch.random.get_rng_state()
    a, b, c = (eegpt_small(CHANNELS, init_seed=s) for s in (3, 3, 4))
    assert torch.equal(before, torch.random.get_rng_state())
    for (name, pa), pb, pc in zip(
        a.state_dict().items(), b.state_dict().values(), c.state_dict().values(), strict=True
    ):
        assert torch.equal(pa, pb), name
        if name.endswith(".weight") and "norm" not in name:
            assert not torch.equal(pa, pc), name
    assert a.patch_embed.proj.weight.std().item() == pytest.approx(SMALL_INIT_STD, rel=0.2)


def test_input_scale_multiplies_the_input_first() -> None:
    x = torch.randn(2, 19, 256) * 50.0  # microvolts
    micro = tiny(CHANNELS, input_scale=1.0)
    milli = tiny(CHANNELS, input_scale=1e-3)
    torch.testing.assert_close(milli(x), micro(x * 1e-3))
    with pytest.raises(ValueError, match="input_scale"):
        tiny(CHANNELS, input_scale=0.0)


def test_build_encoder_from_config() -> None:
    assert build_encoder(ModelConfig(encoder="none"), CHANNELS) is None
    enc = build_encoder(ModelConfig(encoder="small", encoder_seed=7), CHANNELS)
    assert isinstance(enc, EEGPTEncoder) and not enc.training
    assert enc.input_scale == 1.0 and enc.embed_dim == 64
    assert not any(p.requires_grad for p in enc.parameters())
    again = build_encoder(ModelConfig(encoder="small", encoder_seed=7), CHANNELS)
    torch.testing.assert_close(enc.state_dict(), again.state_dict(), rtol=0, atol=0)
    scaled = build_encoder(ModelConfig(encoder="small", input_scale=0.5), CHANNELS)
    assert scaled.input_scale == 0.5
