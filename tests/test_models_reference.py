"""Our encoder against the public reference implementation's outputs.

``fixtures/eegpt_reference_small.pt`` was made once by running the reference encoder,
``EEGTransformer`` from BINE022/EEGPT (``downstream/Modules/models/EEGPT_mcae.py`` at commit
a0e0a8fad729e2ecf4eedb3a81548a6e6d48a705), outside this repository: built with
``img_size=[4, 256], patch_size=64, embed_num=4, embed_dim=16, depth=2, num_heads=2,
mlp_ratio=4.0, qkv_bias=True, norm_layer=partial(nn.LayerNorm, eps=1e-6)``, dropouts 0, in
eval mode; every tensor of its state dict, in sorted key order, replaced by
``torch.randn(shape, generator=g) * 0.2`` with ``g = torch.Generator().manual_seed(1234)``;
then the input ``torch.randn(2, 4, 256, generator=g) * 3.0`` from the same generator, fed
with ``chan_ids=prepare_chan_ids(["FP1", "CZ", "T7", "O2"])``. The fixture holds those
settings, the output (2 windows, 4 patches, 4 summary tokens, 16) and the reference's
channel vocabulary (the names of ``CHANNEL_DICT`` in index order), no code and no weights:
the test draws the same weights and input itself.

Random biases and LayerNorm weights (not the init's zeros and ones) and distinct channels
make a wrong permute, reshape or channel embedding change the output even where the
weights still load strictly.
"""

from pathlib import Path

import torch

from tune_eegpt.models.channels import VOCABULARY
from tune_eegpt.models.eegpt import EEGPTEncoder

FIXTURE = Path(__file__).parent / "fixtures" / "eegpt_reference_small.pt"


def test_encoder_matches_the_reference_implementation():
    ref = torch.load(FIXTURE, map_location="cpu", weights_only=True)
    encoder = EEGPTEncoder(channels=ref["channels"], input_scale=1.0, **ref["sizes"]).eval()
    gen = torch.Generator().manual_seed(ref["seed"])
    state = encoder.state_dict()
    filled = {
        k: torch.randn(state[k].shape, generator=gen) * ref["weight_std"] for k in sorted(state)
    }
    encoder.load_state_dict(filled, strict=True)
    x = torch.randn(ref["batch"], len(ref["channels"]), ref["n_samples"], generator=gen)
    with torch.no_grad():
        out = encoder(x * ref["input_std"])
    assert out.shape == ref["output"].shape == (2, 4, 4, 16)
    torch.testing.assert_close(out, ref["output"], rtol=1e-5, atol=1e-5)


def test_channel_vocabulary_is_the_reference_implementations():
    """Row i of ``chan_embed`` is the reference's channel i, for all 62 channels."""
    ref = torch.load(FIXTURE, map_location="cpu", weights_only=True)
    assert list(VOCABULARY) == ref["vocabulary"]
