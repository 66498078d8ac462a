"""EEGPT encoder.

Paper: "EEGPT: Pretrained Transformer for Universal and Reliable Representation of EEG
Signals", Wang et al., NeurIPS 2024. Reference code: github.com/BINE022/EEGPT
(``downstream/Modules/models/EEGPT_mcae.py``, class ``EEGTransformer``); this is an
independent re-implementation whose parameter names are those of the released
checkpoint's ``target_encoder.*`` keys, so ``eegpt_mcae_58chs_4s_large4E.ckpt`` loads
strictly.

Data flow for an input of ``C`` channels and ``T = N * P`` samples::

    (B, C, T) * input_scale
      -> patch_embed: Conv2d(1, D, (1, P), stride (1, P)) per channel   (B, N, C, D)
      -> + chan_embed[vocabulary index of each channel]                 (B, N, C, D)
      -> one sequence per time patch, 4 summary tokens appended          (B*N, C+4, D)
      -> depth x pre-norm block (attention across the channels of a patch)
      -> last 4 tokens, final LayerNorm                                  (B, N, 4, D)

There is no positional embedding and no mixing across time patches inside the encoder.

Units: the windows the trainer feeds are in microvolts; the encoder multiplies them by
``input_scale`` first. The pretrained large encoder expects millivolts (1e-3). A
randomly initialised small encoder works on microvolts (1.0): with millivolt input its
features are dominated by the channel embedding and a probe stays at chance.
"""

from __future__ import annotations

import math
import pickle
import re
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tune_eegpt.config import ModelConfig
from tune_eegpt.models.channels import VOCABULARY_SIZE, channel_indices

LAYER_NORM_EPS = 1e-6
INIT_STD = 0.02
# The small encoder's random weights are drawn wider (std 0.1 instead of 0.02): with the
# reference std its attention is nearly uniform and its blocks barely touch the residual
# stream, so the summary tokens keep little of the signal and a probe on them loses most of
# the class information (synthetic default, best window AUROC ~0.84 vs ~0.89-0.94 with 0.1).
SMALL_INIT_STD = 0.1
CHECKPOINT_PREFIX = "target_encoder."  # the EMA encoder that downstream code uses


# ---- blocks ---------------------------------------------------------------------------


class Attention(nn.Module):
    """Multi-head self-attention with a fused qkv projection (names as in the checkpoint)."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"embed_dim={dim} is not divisible by num_heads={num_heads}")
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=True)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        B, L, D = x.shape
        qkv = self.qkv(x).reshape(B, L, 3, self.num_heads, D // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (B, H, L, D/H)
        y = F.scaled_dot_product_attention(q, k, v)  # (B, H, L, D/H)
        return self.proj(y.transpose(1, 2).reshape(B, L, D))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm transformer block; no dropout, no drop-path (as pretrained)."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=LAYER_NORM_EPS)
        self.attn = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=LAYER_NORM_EPS)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class PatchEmbed(nn.Module):
    """Cuts every channel into patches of ``patch_size`` samples and projects each to D."""

    def __init__(self, patch_size: int, embed_dim: int) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(1, embed_dim, kernel_size=(1, patch_size), stride=(1, patch_size))

    def forward(self, x: Tensor) -> Tensor:
        # (B, C, T) -> (B, 1, C, T) -> (B, D, C, N) -> (B, N, C, D)
        return self.proj(x.unsqueeze(1)).permute(0, 3, 2, 1)


# ---- model ----------------------------------------------------------------------------


class EEGPTEncoder(nn.Module):
    """EEGPT's encoder for a fixed list of channels: (B, C, T) -> (B, N, S, D).

    ``channels`` are the names of the input's rows, in order (TUH labels and old 10-20
    names are accepted); ``input_scale`` multiplies the input first (see the module
    docstring). ``init_seed`` makes the random initialisation deterministic without
    touching torch's global random state.
    """

    def __init__(
        self,
        *,
        channels: Sequence[str],
        embed_dim: int = 512,
        depth: int = 8,
        num_heads: int = 8,
        patch_size: int = 64,
        mlp_ratio: float = 4.0,
        num_summary_tokens: int = 4,
        input_scale: float = 1.0,
        init_seed: int = 0,
        init_std: float = INIT_STD,
    ) -> None:
        super().__init__()
        if not (math.isfinite(input_scale) and input_scale > 0):
            raise ValueError(f"input_scale={input_scale!r} must be a finite number > 0")
        self.channels = list(channels)
        self.embed_dim = embed_dim
        self.depth = depth
        self.num_heads = num_heads
        self.patch_size = patch_size
        self.mlp_ratio = mlp_ratio
        self.num_summary_tokens = num_summary_tokens
        self.input_scale = float(input_scale)
        chan_ids = torch.tensor(channel_indices(self.channels), dtype=torch.long)

        # Built on the meta device: no memory is filled and no global RNG draw is made
        # before init_weights fills everything from its own generator.
        with torch.device("meta"):
            self.summary_token = nn.Parameter(torch.empty(1, num_summary_tokens, embed_dim))
            self.patch_embed = PatchEmbed(patch_size, embed_dim)
            self.chan_embed = nn.Embedding(VOCABULARY_SIZE, embed_dim)
            self.blocks = nn.ModuleList(
                [Block(embed_dim, num_heads, mlp_ratio) for _ in range(depth)]
            )
            self.norm = nn.LayerNorm(embed_dim, eps=LAYER_NORM_EPS)
        self.to_empty(device="cpu")
        # Non-persistent: the checkpoint has no such key, and the channels belong to the
        # data, not to the weights.
        self.register_buffer("chan_ids", chan_ids, persistent=False)
        self.init_weights(init_seed, std=init_std)

    @property
    def num_channels(self) -> int:
        return len(self.channels)

    def num_patches(self, n_samples: int) -> int:
        return n_samples // self.patch_size

    def extra_repr(self) -> str:
        return f"channels={self.channels}, input_scale={self.input_scale:g}"

    def forward_patches(self, x: Tensor) -> Tensor:
        """(B, C, T) raw input -> (B, N, C, D) patch tokens with channel embeddings."""
        if x.ndim != 3 or x.shape[1] != self.num_channels:
            raise ValueError(
                f"expected input (batch, {self.num_channels} channels, samples), "
                f"got shape {tuple(x.shape)}"
            )
        if x.shape[2] < self.patch_size or x.shape[2] % self.patch_size:
            raise ValueError(
                f"window of {x.shape[2]} samples is not a positive multiple of "
                f"patch_size={self.patch_size}"
            )
        x = self.patch_embed(x * self.input_scale)  # (B, N, C, D)
        return x + self.chan_embed(self.chan_ids)  # (C, D) broadcasts over B, N

    def forward_features(self, x: Tensor) -> Tensor:
        """(B, C, T) -> (B, N, S, D): the normalised summary tokens of every time patch."""
        x = self.forward_patches(x)
        B, N, C, D = x.shape
        x = x.reshape(B * N, C, D)
        x = torch.cat([x, self.summary_token.expand(B * N, -1, -1)], dim=1)  # (B*N, C+S, D)
        for block in self.blocks:
            x = block(x)
        x = self.norm(x[:, -self.num_summary_tokens :])  # (B*N, S, D)
        return x.reshape(B, N, self.num_summary_tokens, D)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_features(x)

    # ---- init -------------------------------------------------------------------------

    @torch.no_grad()
    def init_weights(self, seed: int = 0, std: float = INIT_STD) -> None:
        """The reference initialisation, drawn from a private generator seeded by ``seed``:
        Linear/Conv weights and summary tokens trunc-normal(0, std), biases 0, channel
        embedding normal(0, std), LayerNorm 1/0, and each block's output projections
        (attn.proj, mlp.fc2) scaled by 1/sqrt(2 * layer). ``std`` is the reference 0.02
        unless given (the small encoder uses ``SMALL_INIT_STD``)."""
        gen = torch.Generator(device="cpu").manual_seed(seed)
        nn.init.trunc_normal_(self.summary_token, std=std, generator=gen)
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Conv2d)):
                nn.init.trunc_normal_(module.weight, std=std, generator=gen)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Embedding):
                nn.init.normal_(module.weight, std=std, generator=gen)
        for layer, block in enumerate(self.blocks, start=1):
            block.attn.proj.weight.div_(math.sqrt(2.0 * layer))
            block.mlp.fc2.weight.div_(math.sqrt(2.0 * layer))

    # ---- checkpoints ------------------------------------------------------------------

    @classmethod
    def from_checkpoint(
        cls,
        path: str | Path,
        channels: Sequence[str],
        *,
        num_heads: int | None = None,
        input_scale: float = 1e-3,
        trusted: bool = False,
    ) -> EEGPTEncoder:
        """An encoder with the weights of an official EEGPT ``.ckpt`` or a plain encoder
        state dict. Sizes are read from the weights; ``num_heads`` cannot be, so it must be
        given unless the width is a known one (512 -> 8, 64 -> 4). ``input_scale``
        defaults to 1e-3 because the released weights expect millivolts.

        ``trusted=True`` allows unpickling arbitrary objects (needed for Lightning
        checkpoints on torch >= 2.6): only for files from a source you trust.
        """
        state = convert_eegpt_state_dict(read_encoder_checkpoint(path, trusted=trusted))
        sizes = infer_sizes(state, num_heads=num_heads, source=str(path))
        model = cls(channels=channels, input_scale=input_scale, **sizes)
        load_state_dict_strict(model, state, source=str(path))
        return model


def load_state_dict_strict(model: nn.Module, state: Mapping[str, Tensor], source: str) -> None:
    """``model.load_state_dict(state, strict=True)``, but a missing, unexpected or
    mis-shaped key is a ValueError listing every one of them."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    mis_shaped = sorted(
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in set(expected) & set(state)
        if state[k].shape != expected[k].shape
    )
    problems = [
        f"{what} ({len(keys)}): {_short_list(keys)}"
        for what, keys in (
            ("missing", missing),
            ("unexpected", unexpected),
            ("wrong shape", mis_shaped),
        )
        if keys
    ]
    if problems:
        raise ValueError(
            f"{source}: the weights do not fit the EEGPT encoder ({len(expected)} tensors "
            f"expected):\n  " + "\n  ".join(problems)
        )
    model.load_state_dict(state, strict=True)


def _short_list(items: list[str], limit: int = 20) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f", ... and {len(items) - limit} more" if len(items) > limit else "")


# ---- checkpoint conversion --------------------------------------------------------------


def convert_eegpt_state_dict(obj: Any) -> dict[str, Tensor]:
    """Any supported checkpoint layout -> the encoder's own state dict.

    Accepts a Lightning checkpoint (``{'state_dict': {'target_encoder.x': ...,
    'encoder.x': ..., 'predictor.x': ..., 'reconstructor.x': ...}, ...}``: the
    ``target_encoder.`` keys are kept and the prefix stripped), the inner dict of such a
    checkpoint, or a plain encoder state dict (returned as is).
    """
    if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping):
        raise ValueError(f"expected a checkpoint dict or a state dict, got {type(obj).__name__}")
    state = dict(obj)
    if any(isinstance(k, str) and k.startswith(CHECKPOINT_PREFIX) for k in state):
        n = len(CHECKPOINT_PREFIX)
        state = {k[n:]: v for k, v in state.items() if k.startswith(CHECKPOINT_PREFIX)}
    not_tensors = sorted(str(k) for k, v in state.items() if not isinstance(v, Tensor))
    if not_tensors:
        raise ValueError(
            f"not a state dict: these entries are not tensors: {_short_list(not_tensors)}"
        )
    if not state:
        raise ValueError("the checkpoint holds no tensors")
    return state


def infer_sizes(
    state: Mapping[str, Tensor], num_heads: int | None = None, source: str = "checkpoint"
) -> dict[str, Any]:
    """Constructor sizes read off an encoder state dict (heads: given or known)."""
    needed = ["summary_token", "patch_embed.proj.weight", "blocks.0.mlp.fc1.weight"]
    missing = [k for k in needed if k not in state]
    if missing:
        raise ValueError(
            f"{source}: cannot read the encoder's sizes, missing key(s) {missing}; "
            f"found: {_short_list(sorted(state))}"
        )
    patch_weight = state["patch_embed.proj.weight"]
    if patch_weight.ndim != 4 or state["summary_token"].ndim != 3:
        raise ValueError(
            f"{source}: patch_embed.proj.weight {tuple(patch_weight.shape)} or summary_token "
            f"{tuple(state['summary_token'].shape)} do not have EEGPT's layout "
            "(embed_dim, 1, 1, patch_size) and (1, summary tokens, embed_dim)"
        )
    embed_dim, _, _, patch_size = patch_weight.shape
    block_ids = {int(m.group(1)) for k in state if (m := re.match(r"blocks\.(\d+)\.", k))}
    if num_heads is None:
        known_heads = {s.embed_dim: s.num_heads for s in ENCODER_SIZES.values()}
        if embed_dim not in known_heads:
            raise ValueError(
                f"{source}: embed_dim={embed_dim} is not a known EEGPT size; pass num_heads "
                "(it cannot be read from the weights)"
            )
        num_heads = known_heads[embed_dim]
    return {
        "embed_dim": int(embed_dim),
        "depth": max(block_ids) + 1,
        "num_heads": num_heads,
        "patch_size": int(patch_size),
        "mlp_ratio": state["blocks.0.mlp.fc1.weight"].shape[0] / embed_dim,
        "num_summary_tokens": int(state["summary_token"].shape[1]),
    }


def read_encoder_checkpoint(path: str | Path, *, trusted: bool = False) -> Any:
    """``torch.load`` on CPU, safely (``weights_only=True``) unless ``trusted``.

    Lightning ``.ckpt`` files pickle extra objects (hyperparameters, callbacks), which
    the safe loader refuses on torch >= 2.6; the error then says how to opt in.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        reason = _unpickler_reason(exc)
        if "unsupported global" not in reason.lower():
            raise _corrupt(path, reason) from exc  # not a pickle the full loader would read
        if not trusted:
            raise ValueError(
                f"{path}: the safe loader (torch.load(weights_only=True)) refused this file: "
                "it pickles Python objects besides tensors, as PyTorch Lightning checkpoints "
                "(such as EEGPT's released .ckpt) do. Loading it needs weights_only=False, "
                "which can run arbitrary code from the file: only do that for a file from a "
                "source you trust, by passing trusted=True (config: "
                "model.trusted_checkpoint: true). Alternatively re-save its "
                "state_dict as a plain tensor dict once, in a trusted environment. "
                f"Loader said: {reason}"
            ) from exc
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile, ValueError) as exc:
        raise _corrupt(path, f"{type(exc).__name__}: {_first_line(exc)}") from exc
    try:
        return torch.load(path, map_location="cpu", weights_only=False)  # trusted file only
    except Exception as exc:  # anything unpickling raises means unusable
        raise _corrupt(path, f"{type(exc).__name__}: {_first_line(exc)}") from exc


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else "no detail"


def _unpickler_reason(exc: BaseException) -> str:
    """The useful sentence of torch's long 'Weights only load failed' message."""
    match = re.search(r"WeightsUnpickler error:\s*(.+)", str(exc))
    return match.group(1).strip() if match else _first_line(exc)


def _corrupt(path: Path, reason: str) -> ValueError:
    return ValueError(
        f"{path}: cannot read this checkpoint ({reason}); the file is truncated, corrupt or "
        "not a PyTorch checkpoint. Download or copy it again."
    )


# ---- named sizes ----------------------------------------------------------------------


@dataclass(frozen=True)
class EncoderSize:
    """A named encoder: constructor sizes, the std of its random weights, and the unit it
    expects (``input_scale`` turns microvolt windows into it)."""

    embed_dim: int
    depth: int
    num_heads: int
    input_scale: float
    init_std: float = INIT_STD
    patch_size: int = 64
    mlp_ratio: float = 4.0
    num_summary_tokens: int = 4

    def constructor_sizes(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if k != "input_scale"}


ENCODER_SIZES = {
    # the released checkpoint's size: 25.3M parameters; expects millivolts
    "large": EncoderSize(embed_dim=512, depth=8, num_heads=8, input_scale=1e-3),
    # for CPU runs (~0.1M parameters): random weights (drawn wider) work on microvolts
    "small": EncoderSize(
        embed_dim=64, depth=2, num_heads=4, input_scale=1.0, init_std=SMALL_INIT_STD
    ),
}


def eegpt_encoder(
    size: str, channels: Sequence[str], *, input_scale: float | None = None, init_seed: int = 0
) -> EEGPTEncoder:
    """A randomly initialised encoder of a named size (``ENCODER_SIZES``), deterministic
    from ``init_seed``; ``input_scale`` defaults to the size's unit."""
    spec = ENCODER_SIZES[size]
    scale = spec.input_scale if input_scale is None else input_scale
    return EEGPTEncoder(
        channels=channels, input_scale=scale, init_seed=init_seed, **spec.constructor_sizes()
    )


eegpt_large = partial(eegpt_encoder, "large")
eegpt_small = partial(eegpt_encoder, "small")


def build_encoder(model_cfg: ModelConfig, channels: list[str]) -> EEGPTEncoder | None:
    """The frozen encoder a run config asks for (``encoder: none`` -> None).

    With ``checkpoint`` the weights come from the file and must be of the named size;
    without, they are the reference initialisation drawn from ``encoder_seed``. The
    encoder is returned in eval mode with ``requires_grad`` off (gradients still flow
    through it to a channel adapter in front of it).
    """
    if model_cfg.encoder == "none":
        return None
    name = model_cfg.encoder
    spec = ENCODER_SIZES[name]
    input_scale = spec.input_scale if model_cfg.input_scale is None else model_cfg.input_scale
    if model_cfg.checkpoint is not None:
        encoder = EEGPTEncoder.from_checkpoint(
            model_cfg.checkpoint,
            channels,
            input_scale=input_scale,
            trusted=model_cfg.trusted_checkpoint,
        )
        if (encoder.embed_dim, encoder.depth) != (spec.embed_dim, spec.depth):
            raise ValueError(
                f"{model_cfg.checkpoint} holds an encoder of width "
                f"{encoder.embed_dim} and depth {encoder.depth}, but model.encoder={name!r} "
                f"is width {spec.embed_dim}, depth {spec.depth}; set model.encoder to the "
                "checkpoint's size"
            )
    else:
        encoder = eegpt_encoder(
            name, channels, input_scale=input_scale, init_seed=model_cfg.encoder_seed
        )
    encoder.eval()
    encoder.requires_grad_(False)
    return encoder
