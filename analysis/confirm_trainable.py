"""The search's ProbeTrainable, addressed by (candidate, seed) for the confirmation grid.

Tune grids over plain values, so a trial's config here is ``{"candidate": i, "seed": s}``;
the candidate's hyperparameters are bound once with ``tune.with_parameters`` and put back
before the ProbeTrainable builds its run. Everything else is the search's own trainable.
"""

from __future__ import annotations

from typing import Any

from trainables import ProbeTrainable


def run_overrides(config: dict[str, Any], candidates: list[dict[str, Any]]) -> dict[str, Any]:
    """{"candidate": i, "seed": s} -> candidate i's hyperparameters with train.seed = s."""
    return {**candidates[int(config["candidate"])], "seed": int(config["seed"])}


class ConfirmationTrainable(ProbeTrainable):
    def setup(
        self,
        config: dict[str, Any],
        base_config: dict[str, Any],
        prepared: dict[str, Any],
        candidates: list[dict[str, Any]],
    ) -> None:
        self.candidates = candidates
        super().setup(run_overrides(config, candidates), base_config, prepared)

    def reset_config(self, new_config: dict[str, Any]) -> bool:
        reset = super().reset_config(run_overrides(new_config, self.candidates))
        self.config = new_config
        return reset
