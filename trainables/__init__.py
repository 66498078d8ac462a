"""Ray Tune Trainables around the plain-PyTorch probe trainer."""

from trainables.probe_trainable import ProbeTrainable, trial_run_config

__all__ = ["ProbeTrainable", "trial_run_config"]
