"""Typed configuration of one probe run: YAML in and out, validation, fingerprint.

A run config has sections (``data``, ``model``, ``probe``, ``optim``, ``schedule``,
``train``, ``log``). Every field name is unique across sections, so a field can be
addressed by its bare name (``max_lr``) on the command line, in search spaces and in
result tables, or by its dotted path (``schedule.max_lr``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import types
import typing
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

STANDARD_10_20 = (
    "FP1",
    "FP2",
    "F7",
    "F3",
    "FZ",
    "F4",
    "F8",
    "T7",
    "C3",
    "CZ",
    "C4",
    "T8",
    "P7",
    "P3",
    "PZ",
    "P4",
    "P8",
    "O1",
    "O2",
)


class ConfigError(ValueError):
    """A configuration value is missing, unknown or out of range."""


@dataclass
class DataConfig:
    data_root: str | None = None  # TUAB-style EDF tree; None -> the synthetic corpus
    cache_dir: str = "~/.cache/tune-eegpt"
    channels: list[str] = field(default_factory=lambda: list(STANDARD_10_20))
    sfreq: float = 256.0
    window_s: float = 4.0
    stride_s: float = 4.0
    crop_start_s: float = 0.0
    l_freq: float = 0.1
    h_freq: float = 75.0
    notch_hz: float | None = 60.0
    amplitude_bound_uv: float = 1000.0
    cache_dtype: Literal["float16", "float32"] = "float16"
    val_fraction: float = 0.2
    split_seed: int = 0
    synthetic_subjects: int = 400  # the synthetic corpus (SyntheticSpec.subjects)
    synthetic_seed: int = 0
    synthetic_effect: float = 1.7  # class-effect strength of the synthetic corpus (calibrated)


@dataclass
class ModelConfig:
    encoder: Literal["small", "large", "none"] = "small"
    checkpoint: str | None = None  # official EEGPT .ckpt or plain encoder state dict
    encoder_seed: int = 0  # deterministic random weights when no checkpoint is given
    feature_cache: bool = True  # precompute frozen features when no adapter is used
    # How the cached features are stored: float16, or float8 e4m3 (half the bytes; values
    # rounded to 3 mantissa bits, saturated at +-448; see training/float8.py).
    feature_dtype: Literal["float16", "float8_e4m3"] = "float16"
    # Factor from the cached windows' microvolts to the encoder's input unit; None -> the
    # size's default (large: 1e-3, as the released weights expect millivolts; small: 1.0).
    input_scale: float | None = None
    # Lightning .ckpt files are pickles: allow torch.load(weights_only=False) for this file.
    trusted_checkpoint: bool = False
    # The large encoder without model.checkpoint (random weights), and without
    # data.data_root (the synthetic corpus), on purpose: see require_real_inputs.
    random_large_encoder: bool = False


@dataclass
class ProbeConfig:
    # trainable 1x1 channel adapter in front of the encoder: mixes the data's channels
    # into as many channels, which keep their names (and channel embeddings)
    adapter: bool = False
    dropout: float = 0.5
    hidden: int = 16


@dataclass
class OptimConfig:
    optimizer: Literal["adamw"] = "adamw"
    weight_decay: float = 0.01
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    grad_clip: float | None = None


@dataclass
class ScheduleConfig:
    """torch.optim.lr_scheduler.OneCycleLR's options, with torch's defaults."""

    max_lr: float = 4e-4
    pct_start: float = 0.3
    anneal_strategy: Literal["cos", "linear"] = "cos"
    cycle_momentum: bool = True
    base_momentum: float = 0.85
    max_momentum: float = 0.95
    div_factor: float = 25.0
    final_div_factor: float = 1e4
    three_phase: bool = False


@dataclass
class TrainConfig:
    epochs: int = 10
    batch_size: int = 64
    accum_steps: int = 1
    seed: int = 0
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    threads: int | None = None  # torch intra-op threads; None leaves torch's choice
    checkpoint_every_steps: int = 0  # 0: at the end of each epoch only
    keep_checkpoints: int = 2


@dataclass
class LogConfig:
    out_dir: str = "runs/probe"
    tensorboard: bool = True
    log_every_steps: int = 1


SECTIONS: dict[str, type] = {
    "data": DataConfig,
    "model": ModelConfig,
    "probe": ProbeConfig,
    "optim": OptimConfig,
    "schedule": ScheduleConfig,
    "train": TrainConfig,
    "log": LogConfig,
}

# Fields that do not change what a run computes: they stay out of the fingerprint, and
# a checkpoint may be resumed with them changed.
NON_OUTCOME_FIELDS = frozenset(
    {
        "data.cache_dir",
        "data.data_root",  # the data's identity enters through the cache key instead
        "model.trusted_checkpoint",  # how the file may be read, not what it holds
        "model.random_large_encoder",  # a permission: the weights follow from the other fields
        "train.device",
        "train.threads",
        "train.checkpoint_every_steps",
        "train.keep_checkpoints",
        "train.cuda_graphs",  # retired (RETIRED_FIELDS); it never changed an outcome
        "log.out_dir",
        "log.tensorboard",
        "log.log_every_steps",
    }
)


@dataclass
class RunConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    probe: ProbeConfig = field(default_factory=ProbeConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    log: LogConfig = field(default_factory=LogConfig)

    # ---- construction -------------------------------------------------------------
    @classmethod
    def from_dict(cls, raw: dict[str, Any] | None, source: str = "config") -> RunConfig:
        raw = {} if raw is None else raw
        if not isinstance(raw, dict):
            raise ConfigError(f"{source}: expected a mapping of sections, got {type(raw).__name__}")
        unknown = sorted(set(raw) - set(SECTIONS))
        if unknown:
            raise ConfigError(
                f"{source}: unknown section(s) {unknown}; allowed: {sorted(SECTIONS)}"
            )
        sections = {}
        for name, section_cls in SECTIONS.items():
            values = _without_retired(name, raw.get(name) or {}, source)
            if not isinstance(values, dict):
                raise ConfigError(f"{source}: section '{name}' must be a mapping")
            sections[name] = _build_section(section_cls, values, f"{source}: {name}")
        cfg = cls(**sections)
        cfg.validate()
        return cfg

    @classmethod
    def from_yaml(cls, path: str | Path) -> RunConfig:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"config file not found: {path}")
        try:
            raw = yaml.safe_load(path.read_text())
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
        return cls.from_dict(raw, source=str(path))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_yaml(self, path: str | Path | None = None) -> str:
        text = yaml.safe_dump(self.to_dict(), sort_keys=False)
        if path is not None:
            from tune_eegpt.atomic_write import atomic_write_text

            atomic_write_text(path, text)
        return text

    # ---- flat access by hyperparameter name ----------------------------------------
    def get(self, name: str) -> Any:
        section, key = resolve_field(name)
        return getattr(getattr(self, section), key)

    def with_overrides(self, overrides: dict[str, Any], source: str = "override") -> RunConfig:
        """A new, validated config with fields replaced (bare or dotted names)."""
        raw = self.to_dict()
        for name, value in overrides.items():
            section, key = resolve_field(name)
            raw[section][key] = value
        return RunConfig.from_dict(raw, source=source)

    # ---- validation ----------------------------------------------------------------
    def validate(self) -> None:
        s, t, o, p, d = self.schedule, self.train, self.optim, self.probe, self.data
        _check(s.max_lr > 0, "schedule.max_lr", s.max_lr, "a number > 0")
        _check(0 < s.pct_start < 1, "schedule.pct_start", s.pct_start, "a number in (0, 1)")
        _check(s.div_factor > 0, "schedule.div_factor", s.div_factor, "a number > 0")
        _check(s.final_div_factor > 0, "schedule.final_div_factor", s.final_div_factor, "> 0")
        _check(
            0 <= s.base_momentum <= s.max_momentum < 1,
            "schedule.base_momentum",
            s.base_momentum,
            "0 <= base_momentum <= max_momentum < 1",
        )
        _check(t.epochs >= 1, "train.epochs", t.epochs, "an integer >= 1")
        _check(t.batch_size >= 1, "train.batch_size", t.batch_size, "an integer >= 1")
        _check(t.accum_steps >= 1, "train.accum_steps", t.accum_steps, "an integer >= 1")
        _check(
            t.checkpoint_every_steps >= 0,
            "train.checkpoint_every_steps",
            t.checkpoint_every_steps,
            "an integer >= 0",
        )
        _check(t.keep_checkpoints >= 1, "train.keep_checkpoints", t.keep_checkpoints, ">= 1")
        _check(o.weight_decay >= 0, "optim.weight_decay", o.weight_decay, "a number >= 0")
        _check(0 <= o.beta1 < 1, "optim.beta1", o.beta1, "a number in [0, 1)")
        _check(0 <= o.beta2 < 1, "optim.beta2", o.beta2, "a number in [0, 1)")
        _check(
            o.grad_clip is None or o.grad_clip > 0,
            "optim.grad_clip",
            o.grad_clip,
            "null or a number > 0",
        )
        _check(0 <= p.dropout < 1, "probe.dropout", p.dropout, "a number in [0, 1)")
        _check(p.hidden >= 1, "probe.hidden", p.hidden, "an integer >= 1")
        _check(d.sfreq > 0, "data.sfreq", d.sfreq, "a number > 0")
        _check(d.window_s > 0, "data.window_s", d.window_s, "a number > 0")
        _check(d.stride_s > 0, "data.stride_s", d.stride_s, "a number > 0")
        _check(d.crop_start_s >= 0, "data.crop_start_s", d.crop_start_s, "a number >= 0")
        _check(0 <= d.l_freq < d.h_freq, "data.l_freq", d.l_freq, "0 <= l_freq < h_freq")
        _check(0 < d.val_fraction < 1, "data.val_fraction", d.val_fraction, "a number in (0, 1)")
        _check(len(d.channels) >= 1, "data.channels", d.channels, "at least one channel name")
        _check(
            d.synthetic_subjects >= 4,
            "data.synthetic_subjects",
            d.synthetic_subjects,
            "an integer >= 4",
        )

    # ---- identity ------------------------------------------------------------------
    def outcome_fields(self) -> dict[str, Any]:
        """Flat {section.field: value} of every field that changes what a run computes."""
        return outcome_fields_of(self.to_dict())

    def fingerprint(self) -> str:
        blob = json.dumps(self.outcome_fields(), sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def outcome_differences(self, other_fields: dict[str, Any]) -> list[str]:
        """Names of the outcome fields whose values differ from ``other_fields``."""
        mine = self.outcome_fields()
        keys = sorted(set(mine) | set(other_fields))
        return [k for k in keys if mine.get(k, _MISSING) != other_fields.get(k, _MISSING)]


_MISSING = object()


def require_real_inputs(cfg: RunConfig, source: str = "config") -> None:
    """Refuses a config that asks for the large (pretrained) encoder but leaves out what it
    needs: ``model.checkpoint`` (else its weights would be random) and ``data.data_root``
    (else it would run on the synthetic corpus), as the unedited ``paper_aligned.yaml``
    does. ``model.random_large_encoder: true`` allows both on purpose. The data root and
    checkpoint a config names must exist. Cheap; call it before any data preparation
    (``train`` does; the search should)."""
    model, data = cfg.model, cfg.data
    if data.data_root is not None and not Path(data.data_root).expanduser().is_dir():
        raise ConfigError(f"{source}: data.data_root={data.data_root!r}: no such folder")
    if model.checkpoint is not None and not Path(model.checkpoint).expanduser().is_file():
        raise ConfigError(f"{source}: model.checkpoint={model.checkpoint!r}: no such file")
    if model.encoder != "large" or model.random_large_encoder:
        return
    missing = []
    if data.data_root is None:
        missing.append("data.data_root (TUAB's edf folder, holding train/ and eval/)")
    if model.checkpoint is None:
        missing.append("model.checkpoint (the EEGPT weights, eegpt_mcae_58chs_4s_large4E.ckpt)")
    if missing:
        stand_ins = ["untrained"] * (model.checkpoint is None) + ["on the synthetic corpus"] * (
            data.data_root is None
        )
        raise ConfigError(
            f"{source}: the large encoder needs real inputs; fill in {' and '.join(missing)}, "
            f"or set model.random_large_encoder: true to run it {' and '.join(stand_ins)}"
        )


# Fields that older configs and checkpoints carry and that no longer exist: read and
# dropped, with a note, so those files still load.
RETIRED_FIELDS = {
    "train.cuda_graphs": "CUDA graphs were removed; every device runs the same step engines",
}


def _without_retired(section: str, values: Any, source: str) -> Any:
    if not isinstance(values, dict):
        return values
    kept = dict(values)
    for name, why in RETIRED_FIELDS.items():
        if name.startswith(f"{section}.") and kept.pop(name.split(".", 1)[1], None) is not None:
            warnings.warn(f"{source}: {name} is ignored ({why})", UserWarning, stacklevel=3)
    return kept


# Outcome fields added after checkpoints were first written, with the value every run had
# before: at that value they stay out of the fingerprint, so older checkpoints still resume.
ADDED_OUTCOME_FIELDS = {"model.feature_dtype": "float16"}


def outcome_fields_of(nested: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return {
        k: v
        for k, v in flatten(nested).items()
        if k not in NON_OUTCOME_FIELDS and ADDED_OUTCOME_FIELDS.get(k, _MISSING) != v
    }


def flatten(nested: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return {f"{s}.{k}": v for s, values in nested.items() for k, v in values.items()}


def _field_index() -> dict[str, str]:
    index: dict[str, str] = {}
    for section, cls in SECTIONS.items():
        for f in dataclasses.fields(cls):
            assert f.name not in index, f"field name {f.name} is not unique across sections"
            index[f.name] = section
    return index


FIELD_SECTION = _field_index()


def resolve_field(name: str) -> tuple[str, str]:
    """'max_lr' or 'schedule.max_lr' -> ('schedule', 'max_lr'); unknown names are errors."""
    if "." in name:
        section, key = name.split(".", 1)
        if section in SECTIONS and key in {f.name for f in dataclasses.fields(SECTIONS[section])}:
            return section, key
    elif name in FIELD_SECTION:
        return FIELD_SECTION[name], name
    import difflib

    close = difflib.get_close_matches(name.split(".")[-1], list(FIELD_SECTION), n=3)
    hint = f"; did you mean {close}?" if close else ""
    raise ConfigError(f"unknown config field '{name}'{hint}")


def _check(ok: bool, name: str, value: Any, allowed: str) -> None:
    if not ok:
        raise ConfigError(f"{name}={value!r} is not allowed: expected {allowed}")


def _build_section(cls: type, values: dict[str, Any], where: str) -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        import difflib

        hints_txt = []
        for u in unknown:
            close = difflib.get_close_matches(str(u), sorted(names), n=1)
            hints_txt.append(f"'{u}'" + (f" (did you mean '{close[0]}'?)" if close else ""))
        raise ConfigError(
            f"{where}: unknown key(s) {', '.join(hints_txt)}; allowed: {sorted(names)}"
        )
    kwargs = {k: _coerce(v, hints[k], f"{where}.{k}") for k, v in values.items()}
    return cls(**kwargs)


def _coerce(value: Any, hint: Any, name: str) -> Any:
    """Checks a YAML value against a field's type; ints are accepted for floats."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin is typing.Union or origin is types.UnionType:
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(value, inner[0], name)
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{name}={value!r} is not allowed: expected one of {list(args)}")
        return value
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{name}={value!r} is not allowed: expected a list")
        return [_coerce(v, args[0], name) for v in value]
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{name}={value!r} is not allowed: expected true or false")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise ConfigError(f"{name}={value!r} is not allowed: expected an integer")
        return value
    if hint is float:
        if isinstance(value, str):
            try:
                value = float(value)  # YAML reads "3e-4" as a string
            except ValueError:
                pass
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or not math.isfinite(value)
        ):
            raise ConfigError(f"{name}={value!r} is not allowed: expected a finite number")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{name}={value!r} is not allowed: expected a string")
        return value
    return value
