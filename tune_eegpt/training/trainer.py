"""ProbeTrainer: a linear probe trained on a frozen encoder with a per-step OneCycle schedule.

Plain PyTorch; it runs the same inside a Ray Tune trial or on its own. The heart of it is
``_optimizer_step``: optimizer step, scheduler step and ``global_step += 1`` sit together,
and the scheduler never moves anywhere else (on a GPU's sync-free path, ``_queue_step``
does the same three with the optimizer step queued on the device).
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
from tune_eegpt.training.adamw_step import DirectAdamW
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
from tune_eegpt.training.device_features import resident_rows, say_once
from tune_eegpt.training.device_steps import DeviceSteps, capture_blocker
from tune_eegpt.training.feature_rows import FeatureRows, feature_rows
from tune_eegpt.training.float8 import as_float32
from tune_eegpt.training.fused_probe import FusedProbeStep, fused_probe_applies
from tune_eegpt.training.metrics import binary_metrics, recording_level
from tune_eegpt.training.onecycle import build_onecycle, check_warmup, schedule_length
from tune_eegpt.training.step_log import StepLog

_AUTOCAST_DTYPE = {"bf16": torch.bfloat16, "fp16": torch.float16}


class Diverged(RuntimeError):
    """The training loss became NaN or infinite."""


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
        defer_sync: bool | None = None,
    ) -> None:
        """``fast_path=False`` keeps the generic autograd step even where the fused probe
        step applies (the reference the fused step is tested against). ``defer_sync``:
        queue the fused step's work without host syncs (training/device_steps.py); None
        does so on a GPU, True also on a CPU (for its tests)."""
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
        rows = feature_rows(train_data) if fast_path else None
        self.fused_skipped_because = self._fast_path_blocker(fast_path, rows)
        self.fused = None  # the fused probe step (training/fused_probe.py), where it applies
        if self.fused_skipped_because is None:
            rows = resident_rows(rows, self.device)  # on a GPU: on it, once per GPU if it fits
            self.fused = FusedProbeStep(self.head, rows, t.seed, t.batch_size)
        if defer_sync is None:
            defer_sync = self.device.type != "cpu"
        defer = self.fused is not None and defer_sync
        no_capture = capture_blocker(self.fused, t.cuda_graphs) if defer else "no queue"
        self.optimizer = torch.optim.AdamW(
            params,
            lr=cfg.schedule.max_lr,
            betas=(cfg.optim.beta1, cfg.optim.beta2),
            eps=cfg.optim.eps,
            weight_decay=cfg.optim.weight_decay,
            # one kernel for all parameters instead of a Python loop: the fast path's
            # per-step overhead (same update rule, summed in another order)
            fused=self.fused is not None or None,
            # step counters on the device, where a CUDA graph can advance them
            capturable=no_capture is None,
        )

        direct = DirectAdamW(self.optimizer)  # optimizer.step() without its Python wrapper
        self._direct_adamw = direct if self.fused is not None and direct.applies else None
        self.device_steps = None  # the fused step's sync-free queue, where it is used
        if defer:
            self.device_steps = DeviceSteps(
                self.fused, self.optimizer, cfg.optim.grad_clip, no_capture
            )
            if self.device.type == "cuda" and no_capture:
                say_once(f"no CUDA graphs: {no_capture}")
        self._queued: list[tuple[int, int, float]] = []  # (step, epoch, lr) not yet flushed

        self.batches_per_epoch = math.ceil(len(train_data) / t.batch_size)
        check_warmup(cfg.schedule.pct_start, self.batches_per_epoch, t.accum_steps, t.epochs)
        self.steps_per_epoch, self.total_steps = schedule_length(
            self.batches_per_epoch, t.accum_steps, t.epochs
        )
        self.scheduler = build_onecycle(self.optimizer, cfg.schedule, self.total_steps)
        self._stepped = False
        self.optimizer.register_step_post_hook(lambda *_: setattr(self, "_stepped", True))
        self.autocast_dtype = _AUTOCAST_DTYPE.get(t.precision)
        self.scaler = torch.amp.GradScaler(self.device.type) if t.precision == "fp16" else None

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

    def _fast_path_blocker(self, wanted: bool, rows: FeatureRows | None) -> str | None:
        """None when the fused probe step (training/fused_probe.py) runs the micro-batches."""
        if not wanted:
            return "fast_path=False"
        if self.encoder is not None or self.adapter is not None:
            return "an encoder or adapter runs in front of the head"
        if self.cfg.train.precision != "fp32":
            return f"precision {self.cfg.train.precision} (the fused step is float32)"
        return fused_probe_applies(self.head, rows)  # the head's own dropout, not cfg.probe's

    # ---- training --------------------------------------------------------------------
    @property
    def finished(self) -> bool:
        return self.epoch >= self.cfg.train.epochs or self.diverged

    def train_epoch(
        self, stop_at_step: int | None = None, on_step: Callable[[ProbeTrainer], None] | None = None
    ) -> dict[str, float]:
        """Runs the rest of the current epoch (or up to ``stop_at_step`` optimizer steps),
        then validates. Returns this epoch's metrics; after a stop mid-epoch, the metrics
        of the steps done so far and no validation."""
        if self.finished:
            raise RuntimeError("training has already finished: nothing left to train")
        t = self.cfg.train
        n = len(self.train_data)
        order = epoch_permutation(self.sampler_seed, self.epoch, n)
        if self.fused is not None:
            self.fused.start_epoch(order, self.epoch)
        self._set_train_mode(True)
        window_loss: torch.Tensor | float = 0.0  # a tensor, or on the fused CPU path a float
        full_window = t.accum_steps * t.batch_size
        flush_first = on_step is not None  # on_step learns of the first step at once
        b = self.batch_in_epoch
        while b < self.batches_per_epoch:
            window_start = (b // t.accum_steps) * t.accum_steps
            window_end = min(window_start + t.accum_steps, self.batches_per_epoch)
            # The loss is a mean over the samples of the whole accumulation window, so a
            # short last window weighs each of its samples like a full one.
            window_samples = min(window_end * t.batch_size, n) - window_start * t.batch_size
            if self.device_steps is not None:  # queued: its loss stays on the device
                rows = self.device_steps.micro_batch(b, window_samples, full_window)
            else:
                if self.fused is not None:  # forward + backward without autograd
                    loss, rows = self.fused.micro_batch(b, window_samples)
                else:
                    loss, rows = self._micro_batch(order, b, window_samples)
                window_loss = window_loss + loss
            self.samples_seen += rows
            b += 1
            self.batch_in_epoch = b
            if b != window_end:
                continue
            if self.device_steps is not None:
                self._queue_step()
                if flush_first or self.device_steps.full:
                    self._flush_queued(on_step)
                    flush_first = False
            else:
                step_loss = float(window_loss)  # a sync point, once per optimizer step
                window_loss = 0.0
                if not math.isfinite(step_loss):
                    self.diverged = True
                    self.optimizer.zero_grad(set_to_none=True)
                    self._raise_diverged(step_loss, self.global_step)
                if not self._optimizer_step(step_loss):
                    continue
                self.epoch_loss_sum += step_loss
                self.epoch_loss_steps += 1
                if on_step is not None:
                    on_step(self)
            every = t.checkpoint_every_steps
            if every and self.global_step % every == 0 and self.log_dir is not None:
                self.save_checkpoint(self.log_dir / "checkpoints")
            if stop_at_step is not None and self.global_step >= stop_at_step:
                break
        self._flush_queued(on_step)
        metrics = {
            "epoch": float(self.epoch + (b / self.batches_per_epoch)),
            "global_step": float(self.global_step),
            "samples_seen": float(self.samples_seen),
            # the LR the epoch's last optimizer step used (after the very last step the
            # optimizer holds an unused value one past the end of the schedule)
            "lr": float(self.step_log[-1]["lr"] if self.step_log else self._current_lr()),
            "train_loss": self.epoch_loss_sum / max(self.epoch_loss_steps, 1),
        }
        if b < self.batches_per_epoch:
            return metrics
        self.epoch += 1
        self.batch_in_epoch = 0
        self.epoch_loss_sum, self.epoch_loss_steps = 0.0, 0
        metrics["epoch"] = float(self.epoch)
        if self.val_data is not None:
            val = self.evaluate(self.val_data, prefix="val_")
            self.best_val_auroc = max(self.best_val_auroc, _nan_to_neg_inf(val["val_auroc"]))
            val["best_val_auroc"] = self.best_val_auroc
            metrics.update(val)
            self._log_scalars(val, "val/")
        return metrics

    def _micro_batch(
        self, order: np.ndarray, b: int, window_samples: int
    ) -> tuple[torch.Tensor, int]:
        """The generic step: forward and backward of micro-batch ``b`` through autograd."""
        bs = self.cfg.train.batch_size
        x, y = self.train_data.get_batch(order[b * bs : (b + 1) * bs])
        x = as_float32(x.to(self.device, non_blocking=True))  # float16/8 travel as such
        y = y.to(self.device, non_blocking=True)
        with torch.autocast(
            self.device.type, dtype=self.autocast_dtype, enabled=self.autocast_dtype is not None
        ):
            logits = self.forward(x)
        loss = (
            nn.functional.binary_cross_entropy_with_logits(logits.float(), y, reduction="sum")
            / window_samples
        )
        self._backward(loss)
        return loss.detach(), len(y)

    def _queue_step(self) -> None:
        """The deferred path's optimizer step: queued on the device; the schedule and
        ``global_step`` move on the host at once, the loss is checked at the next flush."""
        lr = self._current_lr()
        self.device_steps.optimizer_step(lr)
        self.scheduler.step()
        self.global_step += 1
        self._queued.append((self.global_step - 1, self.epoch, lr))

    def _flush_queued(self, on_step: Callable[[ProbeTrainer], None] | None = None) -> None:
        """Reads back the queued steps' losses and gradient norms (one sync), logs them in
        order, and stops at the first non-finite loss as the per-step path would."""
        if not self._queued:
            return
        values = self.device_steps.flush()
        queued, self._queued = self._queued, []
        for (step, epoch, lr), (loss, grad_norm) in zip(queued, values.tolist(), strict=True):
            if not math.isfinite(loss):
                # the steps queued after it ran too; a diverged run is not resumed
                self.diverged = True
                self.global_step = step
                self._raise_diverged(loss, step)
            self.epoch_loss_sum += loss
            self.epoch_loss_steps += 1
            self._log_step(step, lr, loss, grad_norm, epoch)
            if on_step is not None:
                on_step(self)

    def _raise_diverged(self, loss: float, step: int) -> None:
        self._close_logs()
        raise Diverged(
            f"training loss is {loss} at global_step {step} (max_lr={self.cfg.schedule.max_lr})"
        )

    def _current_lr(self) -> float:
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

    def _backward(self, loss: torch.Tensor) -> None:
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
        else:
            loss.backward()

    def _optimizer_step(self, loss: float) -> bool:
        """One optimizer step; returns False when fp16's GradScaler skipped it."""
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        clip = self.cfg.optim.grad_clip
        if clip:
            params = [p for g in self.optimizer.param_groups for p in g["params"]]
            grad_norm = torch.nn.utils.clip_grad_norm_(params, clip)
        elif self.fused is not None:  # its gradients sit in one buffer
            grad_norm = self.fused.grad_norm()
        else:  # the norm is logged; a clip coefficient of 1.0 would change nothing
            params = [p for g in self.optimizer.param_groups for p in g["params"]]
            grad_norm = torch.nn.utils.get_total_norm(
                [p.grad for p in params if p.grad is not None]
            )
        lr = self._current_lr()  # the LR this step uses
        self._stepped = False  # set by the optimizer's post-step hook
        if self.scaler is not None:
            self.scaler.step(self.optimizer)  # skips optimizer.step() on inf/nan gradients
            self.scaler.update()
        elif self._direct_adamw is not None:
            self._direct_adamw.step()  # the same update; it calls no step hooks
            self._stepped = True
        else:
            self.optimizer.step()
        if self.fused is not None:
            self.fused.new_window()  # it overwrites its gradient buffer: nothing to zero
        else:
            self.optimizer.zero_grad(set_to_none=True)
        if not self._stepped:
            return False  # neither the schedule nor global_step moves for a skipped step
        self.scheduler.step()
        self.global_step += 1
        self._log_step(self.global_step - 1, lr, loss, float(grad_norm))
        return True

    @torch.no_grad()
    def predict(
        self, data: BatchSource, batch_size: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(labels, probabilities) for every row of ``data``, in order."""
        self._set_train_mode(False)
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
        self._set_train_mode(True)
        return np.concatenate(ys), np.concatenate(ps)

    def evaluate(self, data: BatchSource, prefix: str = "val_") -> dict[str, float]:
        """Window-level metrics, and recording-level ones when the data has recording ids."""
        y, p = self.predict(data)
        metrics = binary_metrics(y, p, prefix)
        recordings = getattr(data, "recording_ids", None)
        if recordings is not None:
            _, ry, rp = recording_level(y, p, np.asarray(recordings))
            metrics.update(binary_metrics(ry, rp, f"{prefix}rec_"))
        return metrics

    def _set_train_mode(self, training: bool) -> None:
        self.head.train(training)
        if self.adapter is not None:
            self.adapter.train(training)
        # the encoder stays in eval mode whatever the phase

    # ---- state -----------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue exactly where this run is (at a step boundary)."""
        self._flush_queued()  # the epoch's loss sum and the log include every step
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
        if self.device_steps is not None:
            self.device_steps.reset()
            self._queued.clear()
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
        self._flush_queued()  # the queued steps join the log first
        if self._logs is not None:  # the log reaches the disk before the checkpoint does
            self._logs.flush()
        path = save_atomic(self.state_dict(), Path(folder) / checkpoint_name(self.global_step))
        prune_checkpoints(folder, self.cfg.train.keep_checkpoints)
        return path

    def load_checkpoint(self, path: str | Path) -> None:
        self.load_state_dict(load_checkpoint_file(path), source=str(path))

    # ---- logging ---------------------------------------------------------------------
    def _log_step(
        self, step: int, lr: float, loss: float, grad_norm: float, epoch: int | None = None
    ) -> None:
        record = {
            "global_step": step,
            "epoch": self.epoch if epoch is None else epoch,
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
