"""A tiny prepared corpus and base config for search tests (test helpers)."""

from __future__ import annotations

from pathlib import Path

import yaml

from tune_eegpt.config import RunConfig
from tune_eegpt.pipeline import prepare_data


def write_base_config(folder: Path, **train) -> Path:
    raw = {
        "data": {"cache_dir": str(folder / "cache"), "synthetic_subjects": 48},
        "model": {"encoder": "small"},
        "schedule": {"max_lr": 3.0e-3, "pct_start": 0.3},
        "train": {"epochs": 4, "batch_size": 16, "device": "cpu", **train},
        "log": {"tensorboard": False},
    }
    path = folder / "base.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def write_space(folder: Path, name: str, params: dict, fixed: dict | None = None) -> Path:
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"params": params, "fixed": fixed or {}}))
    return path


def search_flags(config: Path, space: Path, storage: Path, name: str, *extra: str) -> list[str]:
    """The flags of ``python -m tune_eegpt.search`` for a test search, then ``extra``."""
    common = ["--config", str(config), "--space", str(space), "--storage", str(storage)]
    return [*common, "--name", name, *extra]


def prepare(config_path: Path) -> None:
    prepare_data(RunConfig.from_yaml(config_path), workers=2, progress=False)


def run_search_cli(args: list[str], trainable: type | None = None, callbacks=()) -> int:
    """The search as ``python -m tune_eegpt.search ARGS`` runs it, in this process (so that
    tests can share one Ray instance), with ``trainable`` in place of ProbeTrainable."""
    from tune_eegpt import search

    parsed = search.build_parser().parse_args(args)
    cfg, space = search.resolve(parsed)
    return search.run_search(
        parsed, cfg, space, trainable=trainable, callbacks=callbacks, argv=args
    )
