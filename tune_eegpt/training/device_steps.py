"""The fused probe's micro-batches and optimizer steps queued without a host sync,
replayed from CUDA graphs where they can be.

On a GPU a probe step is a few microseconds of kernels behind tens of launches and two
host syncs (the loss, for the divergence check and the log, and the gradient norm, for
the log). Here nothing waits for the device during an epoch:

- each optimizer step writes its window's loss and its gradient norm into device
  buffers; the trainer reads them all back with one sync (``flush``) at the points where
  it needs them: the end of an epoch, a checkpoint, a stop, a full buffer;
- AdamW reads its learning rate from a device tensor (``DirectAdamW.step(lr=...)``, the
  same kernel as ``optimizer.step()``; on a CPU bit-identical values, tested; on CUDA the
  kernel reads the lr as float32, so the last bits may differ from the per-step path's),
  and its step counters live on the device (``capturable=True``);
- on CUDA, one full micro-batch (gather, dropout, cast, loss and gradients, window loss)
  and one optimizer step (gradient norm or clip, log slots, AdamW) are each captured once
  in a CUDA graph and replayed: one launch each instead of tens. The dropout generator is
  re-seeded before each replay with the chunk's key (a graph reads its generator's seed
  and offset at replay), so a replay draws the mask the eager call would.

What runs eagerly instead: everything on a CPU (the tests run this path there: the
same values as ``FusedProbeStep`` with per-step syncs), a short micro-batch or window
(the last of an epoch), the first optimizer step (AdamW has no state to capture yet), and
every step when capture is off or impossible (the reason is kept in
``capture_skipped_because``).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import numpy as np
import torch

from tune_eegpt.training.adamw_step import DirectAdamW
from tune_eegpt.training.device_features import same_device
from tune_eegpt.training.fused_probe import FusedProbeStep

LOG_SLOTS = 4096  # optimizer steps between forced flushes
# torch's notice when a capturable optimizer steps outside a capture: true of the first step
_UNCAPTURED = "This instance was constructed with capturable=True"


def capture_blocker(fused: FusedProbeStep, want: bool) -> str | None:
    """None when the fused step's micro-batches and optimizer steps can be captured."""
    if not want:
        return "CUDA graphs are off (train.cuda_graphs=false)"
    if fused.device.type != "cuda":
        return f"the head is on {fused.device.type}, CUDA graphs need a CUDA device"
    if not same_device(fused.rows.table.device, fused.device):
        return "the feature rows are on the host (they do not fit the GPU)"
    if not hasattr(torch.cuda.CUDAGraph, "register_generator_state"):
        return "this torch cannot capture a private dropout generator in a CUDA graph"
    return None


class DeviceSteps:
    def __init__(
        self,
        fused: FusedProbeStep,
        optimizer: torch.optim.AdamW,
        grad_clip: float | None,
        capture_skipped_because: str | None,
    ) -> None:
        """``capture_skipped_because``: ``capture_blocker``'s answer (None: capture)."""
        self.fused, self.optimizer, self.grad_clip = fused, optimizer, grad_clip
        self.adamw = DirectAdamW(optimizer)
        self.params = [p for g in optimizer.param_groups for p in g["params"]]
        device = fused.device
        # float64: on a CPU the same sums as the per-step path's Python floats
        self.window_loss = torch.zeros(1, dtype=torch.float64, device=device)
        # the step's learning rate, set before it: CUDA's fused AdamW reads a float32 lr
        # tensor; on a CPU a float64 one gives the very update of a Python float lr
        lr_dtype = torch.float32 if device.type == "cuda" else torch.float64
        self.lr = torch.zeros(1, dtype=lr_dtype, device=device)
        self.log_slots = LOG_SLOTS
        self.losses = torch.zeros(self.log_slots, dtype=torch.float64, device=device)
        self.norms = torch.zeros(self.log_slots, dtype=torch.float64, device=device)
        self._slot = torch.zeros(1, dtype=torch.int64, device=device)
        self.pending = 0  # steps written to the log slots since the last flush
        self.capture_skipped_because = capture_skipped_because
        self._graphs: dict[str, torch.cuda.CUDAGraph] = {}
        self._warmed: set[str] = set()
        self._pool = None  # one memory pool for the graphs: they never run at once

    def micro_batch(self, b: int, window_samples: int, full_window_samples: int) -> int:
        """Queues micro-batch ``b``: its loss joins the window's; returns its rows."""
        fused = self.fused
        first = fused.window_starts  # the window's first micro-batch
        chunk = b // fused.chunk_batches
        if self.capture_skipped_because is None and chunk != fused.staged_chunk:
            n = fused.stage(chunk)
            if self._capturable(n, window_samples, full_window_samples):
                body = lambda: self._full_micro_batch(window_samples, first)  # noqa: E731
                self._replay("first" if first else "next", body)
                return n
            fused.fill(n)
        loss, rows = fused.micro_batch(b, window_samples)  # finds its chunk staged
        self._add_loss(loss, first)
        return rows

    def optimizer_step(self, lr: float) -> None:
        """Queues one optimizer step at ``lr``: gradient norm (clip), log slots, AdamW."""
        self.lr.fill_(lr)
        if self.full:
            raise RuntimeError("flush() the logged steps first: every log slot is in use")
        if self.capture_skipped_because is None and self.adamw.applies and self._has_state():
            self._replay("step", self._step)
        else:
            with warnings.catch_warnings():  # the first step, before there is state to capture
                warnings.filterwarnings("ignore", message=_UNCAPTURED, category=UserWarning)
                self._step()
        self.pending += 1
        self.fused.new_window()

    @property
    def full(self) -> bool:
        """Every log slot holds a step: ``flush`` before the next ``optimizer_step``."""
        return self.pending >= self.log_slots

    def flush(self) -> np.ndarray:
        """(pending, 2): the loss and gradient norm of each step queued since the last
        flush, in order; one host sync."""
        if not self.pending:
            return np.zeros((0, 2), dtype=np.float64)
        values = torch.stack([self.losses[: self.pending], self.norms[: self.pending]], 1)
        out = values.double().cpu().numpy()
        self._slot.zero_()
        self.pending = 0
        return out

    def reset(self) -> None:
        """After a state was loaded: the queued steps are dropped, and the captured graphs
        with them (they point at the optimizer's old state tensors)."""
        self._graphs.clear()
        self._warmed.clear()
        self._slot.zero_()
        self.pending = 0

    # ---- the captured bodies ---------------------------------------------------------
    def _full_micro_batch(self, window_samples: int, first: bool) -> None:
        fused = self.fused
        fused.fill(fused.batch_size)
        self._add_loss(fused.compute(0, fused.batch_size, window_samples), first)

    def _add_loss(self, loss: torch.Tensor | float, first: bool) -> None:
        if first:
            self.window_loss.zero_()
        self.window_loss.add_(loss)

    def _step(self) -> None:
        if self.grad_clip:
            norm = torch.nn.utils.clip_grad_norm_(self.params, self.grad_clip)
        else:
            norm = self.fused.grad_norm()
        self.losses.index_copy_(0, self._slot, self.window_loss)
        self.norms.index_copy_(0, self._slot, norm.view(1).double())
        self._slot.add_(1)
        self.adamw.step(lr=self.lr)

    # ---- capture -----------------------------------------------------------------------
    def _capturable(self, n: int, window_samples: int, full_window_samples: int) -> bool:
        return (
            n == self.fused.batch_size
            and window_samples == full_window_samples
            and self._has_state()  # after the first step: the same kernels as every other
        )

    def _has_state(self) -> bool:
        state = self.optimizer.state
        return all(p in state for p in self.params)

    def _replay(self, name: str, body: Callable[[], None]) -> None:
        """Runs ``body`` as graph ``name``: its first time eagerly on a side stream (the
        warm-up CUDA asks for before a capture), then captured once and replayed."""
        graph = self._graphs.get(name)
        if graph is None:
            if name not in self._warmed:
                self._warm_up(body)
                self._warmed.add(name)
                return
            graph = self._graphs[name] = self._capture(body)
        graph.replay()
        if name != "step":
            self.fused.window_starts = False  # what the captured body did on the host

    def _warm_up(self, body: Callable[[], None]) -> None:
        current = torch.cuda.current_stream(self.fused.device)
        side = torch.cuda.Stream(self.fused.device)
        side.wait_stream(current)
        with torch.cuda.stream(side):
            body()  # this call's real work
        current.wait_stream(side)

    def _capture(self, body: Callable[[], None]) -> torch.cuda.CUDAGraph:
        fused = self.fused
        starts = fused.window_starts
        if self._pool is None:
            self._pool = torch.cuda.graph_pool_handle()
        graph = torch.cuda.CUDAGraph()
        graph.register_generator_state(fused.generator)
        # thread_local: a CUDA call from another thread of this process (a logger, Ray's)
        # does not invalidate this capture
        with torch.cuda.graph(graph, pool=self._pool, capture_error_mode="thread_local"):
            body()  # recorded, not run: the replay that follows does the work
        fused.window_starts = starts
        return graph
