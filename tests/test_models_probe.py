"""The paper's linear probe: shapes, max-norm constraints, factory."""

from __future__ import annotations

import pytest
import torch

from tune_eegpt.config import ConfigError, ProbeConfig, RunConfig
from tune_eegpt.models.probe import (
    ChannelAdapter,
    LinearProbeHead,
    LinearWithConstraint,
    build_probe,
)


def test_head_maps_features_to_one_logit_per_window() -> None:
    head = LinearProbeHead(n_patches=16, embed_dim=32)
    assert head.probe1.in_features == 4 * 32 and head.probe1.out_features == 16
    assert head.probe2.in_features == 16 * 16 and head.probe2.out_features == 1
    assert head(torch.randn(5, 16, 4, 32)).shape == (5,)
    with pytest.raises(ValueError, match="expects features"):
        head(torch.randn(5, 15, 4, 32))


def test_max_norm_holds_through_training() -> None:
    torch.manual_seed(0)
    adapter = ChannelAdapter(6, 5)
    head = LinearProbeHead(n_patches=4, embed_dim=8, hidden=3, dropout=0.2)
    params = list(adapter.parameters()) + list(head.parameters())
    ids = [id(p) for p in params]
    opt = torch.optim.AdamW(params, lr=0.5)  # large steps push the weights past the bounds
    x, y = torch.randn(16, 6, 32), (torch.rand(16) > 0.5).float()
    # A stand-in for the frozen encoder: (B, 5, 32) -> (B, 4, 4, 8), differentiable.
    proj = torch.randn(5 * 32, 4 * 4 * 8)

    def forward(inp: torch.Tensor) -> torch.Tensor:
        z = (adapter(inp).flatten(1) @ proj).reshape(-1, 4, 4, 8)
        return head(z)

    for _ in range(5):
        loss = torch.nn.functional.binary_cross_entropy_with_logits(forward(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        # each forward renormalised the weights it used
    forward(x)
    tol = 1 + 1e-5
    assert adapter.weight.flatten(1).norm(dim=1).max() <= 1.0 * tol
    assert head.probe1.weight.norm(dim=1).max() <= 1.0 * tol
    assert head.probe2.weight.norm(dim=1).max() <= 0.25 * tol
    assert head.probe2.weight.norm(dim=1).max() >= 0.24  # the bound is active
    assert [id(p) for p in list(adapter.parameters()) + list(head.parameters())] == ids


def test_renorm_only_shrinks_rows_above_the_bound() -> None:
    layer = LinearWithConstraint(3, 2, max_norm=1.0)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[3.0, 4.0, 0.0], [0.1, 0.2, 0.2]]))
    out = layer(torch.eye(3))
    torch.testing.assert_close(layer.weight[0], torch.tensor([0.6, 0.8, 0.0]))
    torch.testing.assert_close(layer.weight[1], torch.tensor([0.1, 0.2, 0.2]))
    torch.testing.assert_close(out, torch.eye(3) @ layer.weight.T + layer.bias)
    with torch.inference_mode():
        layer(torch.eye(3))  # also works for evaluation under inference mode


def test_build_probe_from_config() -> None:
    adapter, head = build_probe(ProbeConfig(), n_channels=19, n_patches=16, embed_dim=64)
    assert adapter is None and head.feature_shape == (16, 4, 64)
    cfg = ProbeConfig(adapter=True, hidden=8, dropout=0.1)
    adapter, head = build_probe(cfg, n_channels=19, n_patches=16, embed_dim=64)
    assert isinstance(adapter, ChannelAdapter)
    assert (adapter.in_channels, adapter.out_channels) == (19, 19)
    assert head.probe1.out_features == 8 and head.drop.p == 0.1
    assert adapter(torch.randn(2, 19, 128)).shape == (2, 19, 128)


def test_adapter_channels_is_no_longer_a_setting() -> None:
    """It crashed every run whose value differed from the data's channel count (the
    encoder is built for the data's channel names); now it is an unknown key."""
    with pytest.raises(ConfigError, match="adapter_channels"):
        RunConfig.from_dict({"probe": {"adapter": True, "adapter_channels": 12}})
