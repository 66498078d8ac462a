"""EEGPT encoder, official-checkpoint loading, channel vocabulary and probe heads."""

from tune_eegpt.models.channels import VOCABULARY, channel_indices
from tune_eegpt.models.eegpt import (
    EEGPTEncoder,
    build_encoder,
    convert_eegpt_state_dict,
    eegpt_large,
    eegpt_small,
)
from tune_eegpt.models.probe import (
    ChannelAdapter,
    LinearProbeHead,
    LinearWithConstraint,
    build_probe,
)

__all__ = [
    "VOCABULARY",
    "ChannelAdapter",
    "EEGPTEncoder",
    "LinearProbeHead",
    "LinearWithConstraint",
    "build_encoder",
    "build_probe",
    "channel_indices",
    "convert_eegpt_state_dict",
    "eegpt_large",
    "eegpt_small",
]
