"""What every kind of trial shares: its run config, and what a diverged trial reports."""

from __future__ import annotations

from typing import Any

from tune_eegpt.config import RunConfig

# Reported when a trial diverged: a diverged probe carries no information (chance level).
DIVERGED_AUROC = 0.5


def trial_run_config(base_config: dict[str, Any], trial_config: dict[str, Any]) -> RunConfig:
    """The run config of one trial: the base with the trial's values put in."""
    return RunConfig.from_dict(base_config, source="base config").with_overrides(
        trial_config, source="trial config"
    )
