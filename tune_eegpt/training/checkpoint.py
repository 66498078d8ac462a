"""Trainer checkpoints on disk: atomic writes, safe loads, RNG state, naming by global_step."""

from __future__ import annotations

import pickle
import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tune_eegpt.atomic_write import atomic_path, sigint_deferred

CHECKPOINT_FORMAT = "tune-eegpt/probe-trainer/v1"
_NAME = re.compile(r"^step-(\d{9})\.pt$")


class CheckpointError(ValueError):
    """A checkpoint file cannot be used: unreadable, truncated, or made for another run."""


def checkpoint_name(global_step: int) -> str:
    return f"step-{global_step:09d}.pt"


def checkpoint_step(path: str | Path) -> int:
    """The global_step a checkpoint named by :func:`checkpoint_name` was saved at."""
    return int(Path(path).stem.removeprefix("step-"))


def save_atomic(state: dict[str, Any], path: str | Path) -> Path:
    """torch.save to a temporary file in the same folder, fsync, then rename over ``path``:
    a reader sees the old file or the complete new one, never a half-written one. A Ctrl-C
    meanwhile is raised once the file is in place."""
    path = Path(path)
    with sigint_deferred(), atomic_path(path) as tmp, open(tmp, "wb") as fh:
        torch.save(state, fh)
    return path


def load_checkpoint_file(path: str | Path) -> dict[str, Any]:
    """Loads a trainer checkpoint with ``weights_only=True`` (no pickled code is run)."""
    path = Path(path)
    if path.is_dir():
        found = list_checkpoints(path)
        if not found:
            raise CheckpointError(f"{path}: no trainer checkpoint (step-*.pt) in this folder")
        path = found[-1]
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    with path.open("rb") as fh:
        head = fh.read(4)
    if head != b"PK\x03\x04":  # torch.save writes a zip archive
        raise CheckpointError(
            f"{path}: not a trainer checkpoint: those are files that torch.save writes "
            "(zip archives named step-<global_step>.pt, in a run's checkpoints/ folder); "
            f"this one {_describe_start(head)}"
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        # torch's text advises weights_only=False: wrong here, trainer checkpoints never
        # need it, and unsafe for a file of unknown origin
        raise CheckpointError(
            f"{path}: not a tune-eegpt trainer checkpoint: it holds pickled Python objects "
            "that trainer checkpoints never contain"
        ) from exc
    except Exception as exc:  # torch raises RuntimeError/EOFError variously
        raise CheckpointError(
            f"{path}: cannot read this checkpoint ({type(exc).__name__}: "
            f"{str(exc).split('. ')[0]}). It is truncated or corrupt; "
            "resume from an earlier one."
        ) from exc
    found = state.get("format") if isinstance(state, dict) else type(state).__name__
    if found != CHECKPOINT_FORMAT:
        raise CheckpointError(
            f"{path}: not a tune-eegpt trainer checkpoint "
            f"(expected format '{CHECKPOINT_FORMAT}', found {found!r})"
        )
    return state


def _describe_start(head: bytes) -> str:
    if not head:
        return "is empty"
    if all(32 <= b < 127 or b in b"\t\r\n" for b in head):
        return f"is a text file (it starts with {head.decode()!r})"
    return f"starts with the bytes {head!r}"


def list_checkpoints(folder: str | Path) -> list[Path]:
    """Trainer checkpoints in ``folder``, oldest global_step first."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = [p for p in folder.iterdir() if _NAME.match(p.name)]
    return sorted(found, key=lambda p: int(_NAME.match(p.name).group(1)))


def prune_checkpoints(folder: str | Path, keep: int) -> None:
    for old in list_checkpoints(folder)[:-keep]:
        old.unlink(missing_ok=True)


def capture_rng_state() -> dict[str, Any]:
    """RNG states as tensors and plain values, so that weights_only loading accepts them."""
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    py_version, py_state, py_gauss = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "name": np_name,
            "keys": torch.from_numpy(np_keys.astype(np.int64)),
            "pos": int(np_pos),
            "has_gauss": int(np_has_gauss),
            "gauss": float(np_gauss),
        },
        "python": {"version": py_version, "state": list(py_state), "gauss": py_gauss},
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(
        (n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"])
    )
    p = state["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
