"""ProbeTrainer: a linear probe trained on a frozen encoder with a per-step OneCycle schedule.

Plain PyTorch; it runs the same inside a Ray Tune trial or on its own. It owns a run's
state (head, AdamW, OneCycleLR, ``global_step``, position, logs, checkpoints); the loop
that trains it (training/train_loop.py) is the same for one trainer and for many trained
in one pass, and an engine (training/engines/) computes the steps.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from tune_eegpt.config import ConfigError, RunConfig, outcome_fields_of
from tune_eegpt.training.batches import BatchSource
from tune_eegpt.training.checkpoint import (
    CHECKPOINT_FORMAT,
    CheckpointError,
    capture_rng_state,
    checkpoint_name,
    load_checkpoint_file,
    prune_checkpoints,
    restore_rng_state,
    save_atomic,
)
from tune_eegpt.training.device_features import resident_rows, rows_key
from tune_eegpt.training.engines import choose_engine
from tune_eegpt.training.feature_rows import feature_rows
from tune_eegpt.training.float8 import as_float32
from tune_eegpt.training.metrics import binary_metrics, recording_level
from tune_eegpt.training.onecycle import build_onecycle, check_warmup, schedule_length
from tune_eegpt.training.step_log import StepLog
from tune_eegpt.training.train_loop import Diverged, train_together

_AUTOCAST_DTYPE = {"bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("train.device='cuda' but no CUDA device is available")
    return torch.device(name)


def epoch_permutation(sampler_seed: int, epoch: int, n: int) -> np.ndarray:
    """The order of the training rows in ``epoch``: a function of (seed, epoch) only."""
    generator = torch.Generator().manual_seed(sampler_seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=generator).numpy()


class ProbeTrainer:
    """Trains ``head`` (and ``adapter``, if given) on a frozen ``encoder`` (or, with no
    encoder, on precomputed features). ``train_data``/``val_data`` are BatchSources."""

    def __init__(
        self,
        cfg: RunConfig,
        head: nn.Module,
        train_data: BatchSource,
        val_data: BatchSource | None = None,
        encoder: nn.Module | None = None,
        adapter: nn.Module | None = None,
        log_dir: str | Path | None = None,
        fast_path: bool = True,
    ) -> None:
        """``fast_path=False`` keeps the autograd engine even where a faster one applies
        (the reference the others are tested against)."""
        self.cfg = cfg
        t = cfg.train
        self.device = resolve_device(t.device)
        if t.threads is not None:
            torch.set_num_threads(t.threads)
        self.train_data, self.val_data = train_data, val_data

        self.head = head.to(self.device)
        self.adapter = adapter.to(self.device) if adapter is not None else None
        self.encoder = encoder
        if encoder is not None:
            encoder.to(self.device).eval()  # eval for the whole run: no dropout, fixed norms
            encoder.requires_grad_(False)
        params = [p for m in (self.head, self.adapter) if m is not None for p in m.parameters()]
        rows = feature_rows(train_data) if encoder is None and adapter is None else None
        # on a GPU: the rows on it, once per process, if they fit (else said once)
        self.train_rows = resident_rows(rows, self.device) if rows is not None else None
        self.train_rows_key = rows_key(self.train_rows) if self.train_rows is not None else None
        val_rows = feature_rows(val_data) if rows is not None and val_data is not None else None
        self.val_rows = resident_rows(val_rows, self.device) if val_rows is not None else None
        self.val_rows_key = rows_key(self.val_rows) if self.val_rows is not None else None
        self.optimizer = torch.optim.AdamW(
            params,
            lr=cfg.schedule.max_lr,
            betas=(cfg.optim.beta1, cfg.optim.beta2),
            eps=cfg.optim.eps,
            weight_decay=cfg.optim.weight_decay,
        )
        self.batches_per_epoch = math.ceil(len(train_data) / t.batch_size)
        check_warmup(cfg.schedule.pct_start, self.batches_per_epoch, t.accum_steps, t.epochs)
        self.steps_per_epoch, self.total_steps = schedule_length(
            self.batches_per_epoch, t.accum_steps, t.epochs
        )
        self.scheduler = build_onecycle(self.optimizer, cfg.schedule, self.total_steps)
        self.autocast_dtype = _AUTOCAST_DTYPE.get(t.precision)
        self.scaler = torch.amp.GradScaler(self.device.type) if t.precision == "fp16" else None
        # the step engine (training/engines/), and why: printed by train, kept in results
        self.engine, self.engine_reason = choose_engine(self, None if fast_path else "autograd")

        self.global_step = 0  # optimizer steps taken since the start of the run
        self.epoch = 0  # epochs completed
        self.batch_in_epoch = 0  # micro-batches of the current epoch already consumed
        self.samples_seen = 0
        self.epoch_loss_sum, self.epoch_loss_steps = 0.0, 0  # over this epoch's steps
        self.sampler_seed = t.seed
        self.best_val_auroc = float("-inf")
        self.diverged = False
        self.step_log: list[dict[str, float]] = []  # this process's per-step records

        self.log_dir = Path(log_dir) if log_dir is not None else None
        self._logs = StepLog(log_dir, cfg.log.tensorboard) if log_dir is not None else None

    @property
    def engine_name(self) -> str:
        return self.engine.NAME

    # ---- training --------------------------------------------------------------------
    @property
    def finished(self) -> bool:
        return self.epoch >= self.cfg.train.epochs or self.diverged

    def train_epoch(
        self, stop_at_step: int | None = None, on_step: Callable[[ProbeTrainer], None] | None = None
    ) -> dict[str, float]:
        """Runs the rest of the current epoch (or up to ``stop_at_step`` optimizer steps),
        then validates. Returns this epoch's metrics; after a stop mid-epoch, the metrics
        of the steps done so far and no validation. A pass of one (train_loop.py)."""
        (outcome,) = train_together([self], stop_at_step=stop_at_step, on_step=on_step)
        if isinstance(outcome, Diverged):
            raise outcome
        return outcome

    def epoch_order(self) -> np.ndarray:
        return epoch_permutation(self.sampler_seed, self.epoch, len(self.train_data))

    def record_step(self, step: int, lr: float, loss: float, grad_norm: float) -> None:
        """Notes an optimizer step the loop has taken (after its scheduler step)."""
        self.epoch_loss_sum += loss
        self.epoch_loss_steps += 1
        self._log_step(step, lr, loss, grad_norm)

    def diverge(self, loss: float) -> Diverged:
        """Marks the run diverged at the current step; returns the error to report."""
        self.diverged = True
        self.optimizer.zero_grad(set_to_none=True)
        self._close_logs()
        return Diverged(
            f"training loss is {loss} at global_step {self.global_step} "
            f"(max_lr={self.cfg.schedule.max_lr})"
        )

    def end_pass(
        self, b: int, val_predictions: tuple[np.ndarray, np.ndarray] | None = None
    ) -> dict[str, float]:
        """The metrics of a pass that stopped before micro-batch ``b``; at the end of the
        epoch the epoch is counted and validated (``val_predictions``: the engine's
        (labels, probabilities) of the validation rows, where it made them)."""
        metrics = {
            "epoch": float(self.epoch + (b / self.batches_per_epoch)),
            "global_step": float(self.global_step),
            "samples_seen": float(self.samples_seen),
            # the LR the epoch's last optimizer step used (after the very last step the
            # optimizer holds an unused value one past the end of the schedule)
            "lr": float(self.step_log[-1]["lr"] if self.step_log else self.current_lr()),
            "train_loss": self.epoch_loss_sum / max(self.epoch_loss_steps, 1),
        }
        if b < self.batches_per_epoch:
            return metrics
        self.epoch += 1
        self.batch_in_epoch = 0
        self.epoch_loss_sum, self.epoch_loss_steps = 0.0, 0
        metrics["epoch"] = float(self.epoch)
        if self.val_data is not None:
            val = self.evaluate(self.val_data, prefix="val_", predictions=val_predictions)
            self.best_val_auroc = max(self.best_val_auroc, _nan_to_neg_inf(val["val_auroc"]))
            val["best_val_auroc"] = self.best_val_auroc
            metrics.update(val)
            self._log_scalars(val, "val/")
        return metrics

    def current_lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.adapter is not None:
            x = self.adapter(x)
        if self.encoder is not None:
            if self.adapter is None:
                with torch.no_grad():  # nothing trainable in front: no graph through it
                    x = self.encoder(x)
            else:
                x = self.encoder(x)  # (B, N, 4, D); gradients flow back to the adapter
        return self.head(x)

    @torch.no_grad()
    def predict(
        self, data: BatchSource, batch_size: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(labels, probabilities) for every row of ``data``, in order."""
        self.set_train_mode(False)
        bs = batch_size or max(self.cfg.train.batch_size, 256)
        ys, ps = [], []
        for start in range(0, len(data), bs):
            x, y = data.get_batch(np.arange(start, min(start + bs, len(data))))
            with torch.autocast(
                self.device.type, dtype=self.autocast_dtype, enabled=self.autocast_dtype is not None
            ):
                logits = self.forward(as_float32(x.to(self.device)))
            ps.append(torch.sigmoid(logits.float()).cpu().numpy())
            ys.append(y.numpy())
        self.set_train_mode(True)
        return np.concatenate(ys), np.concatenate(ps)

    def evaluate(
        self,
        data: BatchSource,
        prefix: str = "val_",
        predictions: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> dict[str, float]:
        """Window-level metrics, and recording-level ones when the data has recording ids
        (``predictions``: (labels, probabilities) of ``data`` made elsewhere)."""
        y, p = self.predict(data) if predictions is None else predictions
        metrics = binary_metrics(y, p, prefix)
        recordings = getattr(data, "recording_ids", None)
        if recordings is not None:
            _, ry, rp = recording_level(y, p, np.asarray(recordings))
            metrics.update(binary_metrics(ry, rp, f"{prefix}rec_"))
        return metrics

    def set_train_mode(self, training: bool) -> None:
        self.head.train(training)
        if self.adapter is not None:
            self.adapter.train(training)
        # the encoder stays in eval mode whatever the phase

    # ---- state -----------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue exactly where this run is (at a step boundary)."""
        return {
            "format": CHECKPOINT_FORMAT,
            "global_step": self.global_step,
            "epoch": self.epoch,
            "batch_in_epoch": self.batch_in_epoch,
            "samples_seen": self.samples_seen,
            "epoch_loss_sum": self.epoch_loss_sum,
            "epoch_loss_steps": self.epoch_loss_steps,
            "sampler_seed": self.sampler_seed,
            "steps_per_epoch": self.steps_per_epoch,
            "total_steps": self.total_steps,
            "best_val_auroc": self.best_val_auroc,
            "head": self.head.state_dict(),
            "adapter": self.adapter.state_dict() if self.adapter is not None else None,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "rng": capture_rng_state(),
            "config": self.cfg.to_dict(),
            "config_fingerprint": self.cfg.fingerprint(),
        }

    def load_state_dict(self, state: dict[str, Any], source: str = "checkpoint") -> None:
        """Restores a state. The optimizer and scheduler were built fresh (``last_epoch=-1``)
        in ``__init__``; their states are loaded afterwards, optimizer first."""
        if state.get("config_fingerprint") != self.cfg.fingerprint():
            theirs = outcome_fields_of(state.get("config", {}))
            mine = self.cfg.outcome_fields()
            details = ", ".join(
                f"{k} (checkpoint {theirs.get(k)!r}, now {mine.get(k)!r})"
                for k in self.cfg.outcome_differences(theirs)
            )
            raise CheckpointError(
                f"{source} was made under a different config; differing fields: {details}"
            )
        if state["total_steps"] != self.total_steps:
            raise CheckpointError(
                f"{source}: total_steps {state['total_steps']} != {self.total_steps} for this "
                "data; the schedule would not continue where it stopped"
            )
        self.head.load_state_dict(state["head"])
        if self.adapter is not None:
            self.adapter.load_state_dict(state["adapter"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.scaler is not None and state["scaler"] is not None:
            self.scaler.load_state_dict(state["scaler"])
        self.global_step = state["global_step"]
        self.epoch = state["epoch"]
        self.batch_in_epoch = state["batch_in_epoch"]
        self.samples_seen = state["samples_seen"]
        self.epoch_loss_sum = state["epoch_loss_sum"]
        self.epoch_loss_steps = state["epoch_loss_steps"]
        self.sampler_seed = state["sampler_seed"]
        self.best_val_auroc = state["best_val_auroc"]
        restore_rng_state(state["rng"])
        if self._logs is not None:  # what was logged after this checkpoint is dropped
            self._logs.rewind(self.global_step, self.epoch > 0 and self.batch_in_epoch == 0)

    def save_checkpoint(self, folder: str | Path) -> Path:
        if self._logs is not None:  # the log reaches the disk before the checkpoint does
            self._logs.flush()
        path = save_atomic(self.state_dict(), Path(folder) / checkpoint_name(self.global_step))
        prune_checkpoints(folder, self.cfg.train.keep_checkpoints)
        return path

    def load_checkpoint(self, path: str | Path) -> None:
        self.load_state_dict(load_checkpoint_file(path), source=str(path))

    # ---- logging ---------------------------------------------------------------------
    def _log_step(self, step: int, lr: float, loss: float, grad_norm: float) -> None:
        record = {
            "global_step": step,
            "epoch": self.epoch,
            "lr": lr,
            "loss": loss,
            "grad_norm": grad_norm,
        }
        self.step_log.append(record)
        if self._logs is not None and step % self.cfg.log.log_every_steps == 0:
            self._logs.write_step(record)

    def _log_scalars(self, values: dict[str, float], prefix: str) -> None:
        if self._logs is not None:
            scalars = {prefix + k.removeprefix("val_"): v for k, v in values.items()}
            self._logs.write_eval(scalars, self.global_step)
            self._logs.flush()

    def _close_logs(self) -> None:
        if self._logs is not None:
            self._logs.close()

    def close(self) -> None:
        self._close_logs()


def _nan_to_neg_inf(x: float) -> float:
    return x if math.isfinite(x) else float("-inf")
