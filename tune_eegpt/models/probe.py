"""The EEGPT paper's linear probe, for a binary (normal/abnormal) logit.

As in the reference linear-probe scripts (BINE022/EEGPT, ``downstream/linear_probe_EEGPT_*``):
an optional channel adapter (1x1 convolution, max-norm 1) in front of the frozen
encoder, then on the encoder's output (B, N, S, D): dropout, a per-patch
``LinearWithConstraint(S*D -> hidden, max_norm 1)``, flatten over patches, and
``LinearWithConstraint(hidden*N -> 1, max_norm 0.25)``. Train with BCE-with-logits.

"Max-norm" (from EEGNet): before each forward, every row of the weight (one output
unit's incoming weights) is rescaled in place to L2 norm <= max_norm.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from tune_eegpt.config import ProbeConfig


def renorm_rows_(weight: Tensor, max_norm: float) -> None:
    """Rescales each row of ``weight`` to L2 norm <= ``max_norm``, in place, outside autograd,
    like the reference's ``weight.data = torch.renorm(...)``: the parameter (and the
    optimizer state keyed on it) stays the same object."""
    with torch.no_grad():
        weight.renorm_(p=2, dim=0, maxnorm=max_norm)


class LinearWithConstraint(nn.Linear):
    """``nn.Linear`` whose weight rows are renormalised to at most ``max_norm``."""

    def __init__(
        self, in_features: int, out_features: int, *, max_norm: float, bias: bool = True
    ) -> None:
        super().__init__(in_features, out_features, bias=bias)
        self.max_norm = max_norm

    def forward(self, x: Tensor) -> Tensor:
        renorm_rows_(self.weight, self.max_norm)
        return super().forward(x)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, max_norm={self.max_norm:g}"


class ChannelAdapter(nn.Conv1d):
    """Trainable channel mixing (B, C_in, T) -> (B, C_out, T), a 1x1 convolution whose
    per-output-channel weights have norm <= ``max_norm``."""

    def __init__(self, in_channels: int, out_channels: int, *, max_norm: float = 1.0) -> None:
        super().__init__(in_channels, out_channels, kernel_size=1)
        self.max_norm = max_norm

    def forward(self, x: Tensor) -> Tensor:
        renorm_rows_(self.weight, self.max_norm)
        return super().forward(x)


class LinearProbeHead(nn.Module):
    """Encoder features (B, N, S, D) -> one logit per window, shape (B,)."""

    def __init__(
        self,
        n_patches: int,
        embed_dim: int,
        num_summary: int = 4,
        hidden: int = 16,
        dropout: float = 0.5,
    ) -> None:
        super().__init__()
        self.feature_shape = (n_patches, num_summary, embed_dim)
        self.drop = nn.Dropout(dropout)
        self.probe1 = LinearWithConstraint(num_summary * embed_dim, hidden, max_norm=1.0)
        self.probe2 = LinearWithConstraint(hidden * n_patches, 1, max_norm=0.25)

    def forward(self, z: Tensor) -> Tensor:
        if tuple(z.shape[1:]) != self.feature_shape:
            raise ValueError(
                f"probe head expects features (batch, {', '.join(map(str, self.feature_shape))})"
                f" = (batch, patches, summary tokens, embed_dim), got {tuple(z.shape)}"
            )
        h = self.drop(z.flatten(2))  # (B, N, S*D)
        h = self.probe1(h).flatten(1)  # (B, N*hidden)
        return self.probe2(h).squeeze(-1)  # (B,)


def build_probe(
    probe_cfg: ProbeConfig, n_channels: int, n_patches: int, embed_dim: int, num_summary: int = 4
) -> tuple[ChannelAdapter | None, LinearProbeHead]:
    """The trainable parts of a run: (adapter or None, head).

    The adapter mixes the data's ``n_channels`` into as many channels, so the encoder is
    built for the data's channel names.
    Parameters are drawn from torch's global RNG, so seed it first.
    """
    adapter = None
    if probe_cfg.adapter:
        adapter = ChannelAdapter(n_channels, n_channels, max_norm=1.0)
    head = LinearProbeHead(
        n_patches,
        embed_dim,
        num_summary=num_summary,
        hidden=probe_cfg.hidden,
        dropout=probe_cfg.dropout,
    )
    return adapter, head
