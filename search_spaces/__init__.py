"""Named, declarative search spaces and their loader.

A space file (YAML) has ``params`` (searched) and optionally ``fixed`` (set for every
trial) and ``description``. Each searched parameter names a run-config field and a
distribution:

    max_lr:      {distribution: loguniform, low: 1.0e-5, high: 1.0e-1}
    pct_start:   {distribution: uniform, low: 0.05, high: 0.5}
    accum_steps: {distribution: choice, values: [1, 2, 4, 8]}
    batch_size:  {distribution: int, low: 16, high: 128, step: 16}   # or intloguniform

The loader turns a file into Optuna distributions; it does not import ray.
"""

from __future__ import annotations

import difflib
import itertools
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

from tune_eegpt.config import ConfigError, RunConfig, resolve_field

SPACES_DIR = Path(__file__).parent
DISTRIBUTIONS = ("loguniform", "uniform", "int", "intloguniform", "choice")


class SearchSpaceError(ValueError):
    """A search-space file is malformed; the message names the file and the parameter."""


@dataclass
class SearchSpace:
    name: str
    params: dict[str, BaseDistribution]
    fixed: dict[str, Any] = field(default_factory=dict)
    description: str = ""

    def start_point(self, cfg: RunConfig) -> dict[str, Any]:
        """The base config's values of the searched parameters (the paper-aligned start),
        where they lie inside the space."""
        point = {name: cfg.get(name) for name in self.params}
        return point if all(_inside(self.params[k], v) for k, v in point.items()) else {}

    def corners(self) -> Iterator[dict[str, Any]]:
        """Every combination of each choice and both ends of each range."""
        names = list(self.params)
        for corner in itertools.product(*(_extremes(self.params[n]) for n in names)):
            yield dict(zip(names, corner, strict=True))

    def check_values(self, cfg: RunConfig) -> None:
        """Every value the space can produce must pass ``cfg``'s rules: each choice and
        both ends of each range, in every combination (the rules are intervals, so the
        corners stand for the whole box). Raises SearchSpaceError naming the values."""
        for values in self.corners():
            try:
                cfg.with_overrides(values, source=f"space {self.name}")
            except ConfigError as exc:
                raise SearchSpaceError(
                    f"space {self.name}: a trial could get {_shown(values)}, which the run "
                    f"config rejects: {exc}"
                ) from exc

    def check_schedules(self, cfg: RunConfig, n_train: int) -> None:
        """Every trial's OneCycle warm-up against a corpus of ``n_train`` train windows: it
        must last past the first optimizer step. The warm-up grows with pct_start and
        epochs and shrinks with batch_size and accum_steps, so the corners stand for the
        whole box. Raises SearchSpaceError naming the values and the corpus's size."""
        from tune_eegpt.training.onecycle import check_warmup, schedule_length

        def schedule_of(values: dict[str, Any]) -> tuple[float, int, int, int]:
            t = cfg.with_overrides(values, source=f"space {self.name}")
            batches = math.ceil(n_train / t.train.batch_size)
            return t.schedule.pct_start, batches, t.train.accum_steps, t.train.epochs

        def warmup(values: dict[str, Any]) -> float:
            pct_start, batches, accum, epochs = schedule_of(values)
            return pct_start * schedule_length(batches, accum, epochs)[1]

        values = min(self.corners(), key=warmup)  # the shortest warm-up the space allows
        try:
            check_warmup(*schedule_of(values))
        except ConfigError as exc:
            raise SearchSpaceError(
                f"space {self.name}: a trial could get {_shown(values)}, too short a warm-up "
                f"for the {n_train} train windows of this corpus: {exc}"
            ) from exc


def _shown(values: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in values.items())


def available_spaces() -> list[str]:
    return sorted(p.stem for p in SPACES_DIR.glob("*.yaml"))


def load_space(name_or_path: str | Path) -> SearchSpace:
    """A space by name (``paper``, ``wide``) or by the path of a YAML file."""
    path = Path(name_or_path)
    if not path.suffix:
        path = SPACES_DIR / f"{name_or_path}.yaml"
        if not path.is_file():
            raise SearchSpaceError(
                f"no search space named '{name_or_path}'; available: {available_spaces()}, "
                "or give the path of a YAML file"
            )
    if not path.is_file():
        raise FileNotFoundError(f"search space file not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise SearchSpaceError(f"{path}: not valid YAML: {exc}") from exc
    unknown = sorted(set(raw) - TOP_LEVEL_KEYS)
    if unknown:
        hint = _did_you_mean(unknown, TOP_LEVEL_KEYS)
        raise SearchSpaceError(f"{path}: unknown top-level key(s) {unknown}{hint}")
    params_raw = raw.get("params") or {}
    if not params_raw:
        raise SearchSpaceError(f"{path}: 'params' is empty: nothing to search")
    params = {name: _distribution(path, name, spec) for name, spec in params_raw.items()}
    fixed = dict(raw.get("fixed") or {})
    for name in fixed:
        _check_field(path, name)
        if name in params:
            raise SearchSpaceError(f"{path}: '{name}' is both searched and fixed")
    try:  # every fixed value must be valid for the run config
        RunConfig().with_overrides(fixed, source=f"{path}: fixed")
    except ConfigError as exc:
        raise SearchSpaceError(f"{path}: fixed values: {exc}") from exc
    return SearchSpace(path.stem, params, fixed, str(raw.get("description", "")))


def _extremes(dist: BaseDistribution) -> list[Any]:
    if isinstance(dist, CategoricalDistribution):
        return list(dist.choices)
    return [dist.low, dist.high]


def _inside(dist: BaseDistribution, value: Any) -> bool:
    if isinstance(dist, CategoricalDistribution):
        return value in dist.choices
    return dist.low <= value <= dist.high


def _check_field(path: Path, name: str) -> None:
    try:
        resolve_field(name)
    except ConfigError as exc:
        raise SearchSpaceError(f"{path}: parameter '{name}': {exc}") from exc


TOP_LEVEL_KEYS = {"params", "fixed", "description"}


def _keys_of(kind: str) -> set[str]:
    if kind == "choice":
        return {"distribution", "values"}
    step = {"step"} if kind in ("int", "intloguniform") else set()
    return {"distribution", "low", "high", *step}


def _did_you_mean(unknown: list[str], known: Any) -> str:
    close = [m for u in unknown for m in difflib.get_close_matches(str(u), sorted(known), n=1)]
    return f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""


def _distribution(path: Path, name: str, spec: Any) -> BaseDistribution:
    _check_field(path, name)
    where = f"{path}: parameter '{name}'"
    if not isinstance(spec, dict) or "distribution" not in spec:
        hint = _did_you_mean(list(spec), ["distribution"]) if isinstance(spec, dict) else ""
        raise SearchSpaceError(f"{where}: expected a mapping with a 'distribution' key{hint}")
    kind = spec["distribution"]
    if kind not in DISTRIBUTIONS:
        hint = _did_you_mean([kind], DISTRIBUTIONS)
        raise SearchSpaceError(
            f"{where}: unknown distribution '{kind}'; allowed: {DISTRIBUTIONS}{hint}"
        )
    unknown = sorted(set(spec) - _keys_of(kind), key=str)
    if unknown:
        hint = _did_you_mean(unknown, _keys_of(kind))
        raise SearchSpaceError(
            f"{where}: unknown key(s) {unknown} for a '{kind}' distribution (allowed: "
            f"{sorted(_keys_of(kind))}){hint}"
        )
    if kind == "choice":
        values = spec.get("values")
        if not isinstance(values, list) or not values:
            raise SearchSpaceError(f"{where}: 'choice' needs a non-empty list 'values'")
        return CategoricalDistribution(values)
    try:
        low, high = float(spec["low"]), float(spec["high"])
    except (KeyError, TypeError, ValueError) as exc:
        raise SearchSpaceError(f"{where}: '{kind}' needs numeric 'low' and 'high'") from exc
    if not (math.isfinite(low) and math.isfinite(high)) or low >= high:
        raise SearchSpaceError(f"{where}: low ({low:g}) must be below high ({high:g})")
    log = kind in ("loguniform", "intloguniform")
    if log and low <= 0:
        raise SearchSpaceError(f"{where}: a log range must lie above 0, got low={low:g}")
    if kind in ("int", "intloguniform"):
        step = int(spec.get("step", 1))
        return IntDistribution(int(low), int(high), log=log, step=step)
    return FloatDistribution(low, high, log=log)
