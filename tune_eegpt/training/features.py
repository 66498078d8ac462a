"""Frozen-feature cache: the encoder's outputs for every window, computed once.

With nothing trainable in front of the encoder (no channel adapter), a trial needs
only the encoder's outputs, never its weights: ``build_feature_cache`` runs the encoder
once over a split of windows and writes an Arrow IPC file; every trial process then
opens it with ``FeatureBatches.open`` (memory-mapped, so the processes on a node share
one copy through the page cache) and trains the head on it.

File: one row per window, columns ``features`` (fixed-size list of N*S*D values, the
row-major flattening of (N, S, D)), ``label`` (float32) and, when the windows have them,
``recording_id``; the shape, identity and dtype are in the schema metadata. Values are
float16 (the default), float32, or float8 e4m3fn (``float8_e4m3``: Arrow has no float8
type, so the bytes are stored as uint8 and the metadata's dtype says what they are;
training/float8.py says how they are rounded and saturated). Name:
``features-<window key>-enc<encoder hash>-<dtype>.arrow``, so a new encoder (weights,
channels or input scale), new windows or another dtype never reuse a stale file, and a
file is only ever read as the dtype its metadata names.

Size per hour of EEG (4 s windows, no overlap: 900 windows/hour; N=16, S=4; float16):
    large (D=512): 16*4*512*2 B = 64 KiB/window -> 59.0 MB/hour (TUAB train, ~1,038 h:
                   ~61 GB; about 1.7x the float16 window cache of 19x1024 samples)
    small (D=64):  16*4*64*2 B  =  8 KiB/window ->  7.4 MB/hour (TUAB train: ~7.7 GB)
float8_e4m3 halves these: 32 KiB and 4 KiB per window.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import logging
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import numpy as np
import pyarrow as pa
import torch
from torch import nn
from tqdm.auto import tqdm

from tune_eegpt.atomic_write import atomic_path, atomic_write_bytes
from tune_eegpt.checksum import DamagedFileError, fingerprint, problem, sidecar_name
from tune_eegpt.training.batches import BatchSource
from tune_eegpt.training.float8 import to_e4m3

log = logging.getLogger("tune_eegpt")

SCHEMA_VERSION = 1
_SAFE_KEY = re.compile(r"^[A-Za-z0-9._-]+$")
FeatureDtype = Literal["float16", "float32", "float8_e4m3"]
# name -> (the values' torch dtype, how Arrow stores them)
FEATURE_DTYPES: dict[str, tuple[torch.dtype, pa.DataType]] = {
    "float16": (torch.float16, pa.float16()),
    "float32": (torch.float32, pa.float32()),
    "float8_e4m3": (torch.float8_e4m3fn, pa.uint8()),
}


def encoder_weights_hash(module: nn.Module) -> str:
    """SHA-256 of a module's architecture (its repr, which for the encoder includes the
    channels and input scale) and of every parameter and buffer, bit for bit."""
    digest = hashlib.sha256(repr(module).encode())
    tensors = list(module.named_parameters()) + list(module.named_buffers())
    for name, tensor in sorted(tensors, key=lambda item: item[0]):
        t = tensor.detach().to("cpu").contiguous()
        digest.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def feature_cache_path(out_dir: str | Path, encoder_hash: str, key: str, dtype: str) -> Path:
    if not _SAFE_KEY.match(key):
        raise ValueError(f"window-cache key {key!r} may only hold letters, digits, '.', '_', '-'")
    return Path(out_dir).expanduser() / f"features-{key}-enc{encoder_hash[:16]}-{dtype}.arrow"


def build_feature_cache(
    encoder: nn.Module,
    windows: BatchSource,
    out_dir: str | Path,
    key: str,
    *,
    batch_size: int = 256,
    dtype: FeatureDtype = "float16",
    device: str | torch.device = "cpu",
    progress: bool = True,
) -> Path:
    """Path of the feature file for ``encoder`` on ``windows`` (cache key ``key``),
    computed now unless a finished file is already there.

    The encoder runs on ``device`` in eval mode under ``torch.inference_mode`` (bf16
    autocast on a CUDA GPU that supports it) and is left as it was found; the file is
    written to a temporary name and renamed, so a reader never sees half of it.
    """
    if dtype not in FEATURE_DTYPES:
        raise ValueError(f"dtype={dtype!r}: expected one of {sorted(FEATURE_DTYPES)}")
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size} must be >= 1")
    n_rows = len(windows)
    if n_rows == 0:
        raise ValueError("no windows to compute features for")
    encoder_hash = encoder_weights_hash(encoder)
    path = feature_cache_path(out_dir, encoder_hash, key, dtype)
    if path.is_file():
        why = problem(path, recorded_fingerprint(path), full=True)
        if why is None:
            return path
        log.warning(f"feature cache {path} is damaged ({why}); computing it again")
        path.unlink()
    path.parent.mkdir(parents=True, exist_ok=True)
    device = torch.device(device)
    was_training = encoder.training
    home = next(encoder.parameters(), torch.empty(0)).device
    encoder.eval().to(device)
    try:
        saturated = [0]  # float8 values clamped to +-448, counted by _encode
        batches = _encode(encoder, windows, batch_size, device, dtype, saturated)
        first = next(batches)  # its shape fixes the schema; written first below
        schema = _schema(
            first[0].shape[1:], encoder_hash, key, dtype, n_rows, _recording_ids(windows)
        )
        with atomic_path(path) as tmp:
            with pa.OSFile(str(tmp), "wb") as sink, pa.ipc.new_file(sink, schema) as writer:
                with tqdm(
                    total=n_rows, desc=f"features {key}", unit="win", disable=not progress
                ) as bar:
                    for feats, labels, ids in itertools.chain([first], batches):
                        writer.write_batch(_record_batch(schema, feats, labels, ids))
                        bar.update(len(feats))
            # before the rename: a feature file is never in place without its fingerprint
            atomic_write_bytes(fingerprint_path(path), json.dumps(fingerprint(tmp)).encode())
    finally:
        encoder.train(was_training).to(home)  # as the caller left it
    if saturated[0]:
        log.warning(f"{path.name}: {saturated[0]} feature values beyond +-448 saturated")
    return path


def fingerprint_path(path: Path) -> Path:
    """The sidecar that holds a feature file's size and CRC-32."""
    return path.with_name(sidecar_name(path.name))


def recorded_fingerprint(path: Path) -> dict:
    """The size and CRC-32 recorded when ``path`` was written; {} for a file from before
    fingerprints (then nothing can be checked)."""
    try:
        return json.loads(fingerprint_path(path).read_text())
    except (OSError, ValueError):
        return {}


def _encode(
    encoder: nn.Module,
    windows: BatchSource,
    batch_size: int,
    device: torch.device,
    dtype: str,
    saturated: list[int],
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray | None]]:
    ids = _recording_ids(windows)
    # bf16 where the GPU has it (Ampere and later); older GPUs and the CPU run float32
    bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported(including_emulation=False)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
    for start in range(0, len(windows), batch_size):
        index = np.arange(start, min(start + batch_size, len(windows)))
        x, y = windows.get_batch(index)
        with torch.inference_mode(), autocast:
            z = encoder(x.to(device, non_blocking=True))  # (B, N, S, D)
        feats = _stored(z.float().cpu(), dtype, saturated)
        yield feats, y.float().numpy(), (None if ids is None else ids[index])


def _stored(z: torch.Tensor, dtype: str, saturated: list[int]) -> np.ndarray:
    """Float32 features as the numpy array Arrow stores for ``dtype``."""
    if dtype == "float8_e4m3":
        values, n = to_e4m3(z)
        saturated[0] += n
        return values.view(torch.uint8).numpy()
    return z.numpy().astype(np.float16 if dtype == "float16" else np.float32, copy=False)


def _recording_ids(windows: BatchSource) -> np.ndarray | None:
    ids = getattr(windows, "recording_ids", None)
    if ids is None:
        return None
    ids = np.asarray(ids)
    if len(ids) != len(windows):
        raise ValueError(f"recording_ids has {len(ids)} entries for {len(windows)} windows")
    return ids


def _schema(
    feature_shape: tuple[int, ...],
    encoder_hash: str,
    key: str,
    dtype: str,
    n_rows: int,
    ids: np.ndarray | None,
) -> pa.Schema:
    value_type = FEATURE_DTYPES[dtype][1]
    fields = [
        pa.field("features", pa.list_(value_type, int(np.prod(feature_shape)))),
        pa.field("label", pa.float32()),
    ]
    if ids is not None:
        fields.append(pa.field("recording_id", pa.array(ids[:1]).type))
    meta = {
        "schema_version": SCHEMA_VERSION,
        "feature_shape": list(map(int, feature_shape)),
        "encoder_hash": encoder_hash,
        "window_key": key,
        "dtype": dtype,
        "rows": n_rows,
    }
    return pa.schema(fields, metadata={"tune_eegpt": json.dumps(meta)})


def _record_batch(
    schema: pa.Schema, feats: np.ndarray, labels: np.ndarray, ids: np.ndarray | None
) -> pa.RecordBatch:
    flat = pa.array(np.ascontiguousarray(feats).reshape(-1))
    columns = [
        pa.FixedSizeListArray.from_arrays(flat, int(np.prod(feats.shape[1:]))),
        pa.array(labels, type=pa.float32()),
    ]
    if ids is not None:
        columns.append(pa.array(ids, type=schema.field("recording_id").type))
    return pa.RecordBatch.from_arrays(columns, schema=schema)


class FeatureBatches:
    """A feature file as a BatchSource: ``get_batch`` -> ((B, N, S, D) in the stored dtype,
    float16 by default, and float32 labels)."""

    def __init__(self, path: Path, table: pa.Table, meta: dict) -> None:
        self.path = path
        self.meta = meta
        self.dtype_name: str = meta["dtype"]
        self.dtype: torch.dtype = FEATURE_DTYPES[self.dtype_name][0]
        self.feature_shape: tuple[int, ...] = tuple(meta["feature_shape"])
        self.encoder_hash: str = meta["encoder_hash"]
        self.window_key: str = meta["window_key"]
        width = int(np.prod(self.feature_shape))
        # One zero-copy numpy view per record batch (chunk) of the memory-mapped file.
        self._chunks = [
            chunk.flatten().to_numpy(zero_copy_only=True).reshape(-1, width)
            for chunk in table.column("features").chunks
        ]
        self._starts = np.cumsum([0] + [len(c) for c in self._chunks])
        self.labels = torch.from_numpy(table.column("label").to_numpy().astype(np.float32))
        self.recording_ids = (
            table.column("recording_id").to_numpy()
            if "recording_id" in table.column_names
            else None
        )

    @classmethod
    def open(cls, path: str | Path, dtype: str | None = None) -> FeatureBatches:
        """The feature file at ``path``; with ``dtype``, a file of another dtype is an
        error (a cache is never read as a dtype it was not written in)."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"feature cache not found: {path}")
        why = problem(path, recorded_fingerprint(path), full=False)  # the size: cheap
        if why is not None:
            raise DamagedFileError(
                f"{path}: damaged feature cache ({why}); delete it, or run the search or "
                "train again: it is computed again from the window cache"
            )
        try:
            table = pa.ipc.open_file(pa.memory_map(str(path), "r")).read_all()
            meta = json.loads(table.schema.metadata[b"tune_eegpt"])
        except (pa.ArrowInvalid, KeyError, json.JSONDecodeError) as exc:
            raise ValueError(f"{path}: not a readable tune-eegpt feature cache ({exc})") from exc
        if meta.get("schema_version") != SCHEMA_VERSION or table.num_rows != meta.get("rows"):
            raise ValueError(
                f"{path}: feature cache of schema {meta.get('schema_version')} with "
                f"{table.num_rows} of {meta.get('rows')} rows; expected schema "
                f"{SCHEMA_VERSION}, complete. Delete it to have it rebuilt."
            )
        stored = meta.get("dtype")
        value_type = table.schema.field("features").type.value_type
        if stored not in FEATURE_DTYPES or FEATURE_DTYPES[stored][1] != value_type:
            raise ValueError(
                f"{path}: feature cache says dtype {stored!r} but stores {value_type} values; "
                f"expected one of {sorted(FEATURE_DTYPES)}. Delete it to have it rebuilt."
            )
        features = cls(path, table, meta)
        if dtype is not None:
            features.require_dtype(dtype)
        return features

    def require_dtype(self, dtype: str) -> None:
        """Raises ValueError unless this file stores ``dtype`` features."""
        if self.dtype_name != dtype:
            raise ValueError(
                f"{self.path}: feature cache holds {self.dtype_name} features, but "
                f"model.feature_dtype={dtype!r}; prepare the data under this config"
            )

    def __len__(self) -> int:
        return int(self._starts[-1])

    def get_batch(self, indices: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        indices = np.asarray(indices, dtype=np.int64)
        # in the stored dtype: float16 moves half the bytes to the device, where the
        # trainer casts to float32
        out = np.empty((len(indices), self._chunks[0].shape[1]), dtype=self._chunks[0].dtype)
        chunk_of = np.searchsorted(self._starts, indices, side="right") - 1
        for c in np.unique(chunk_of):
            rows = chunk_of == c
            out[rows] = self._chunks[c][indices[rows] - self._starts[c]]
        x = torch.from_numpy(out).view(self.dtype)  # float8: its uint8 bytes, reinterpreted
        x = x.reshape(len(indices), *self.feature_shape)
        return x, self.labels[torch.from_numpy(indices)]
