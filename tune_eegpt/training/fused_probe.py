"""The probe's forward and backward on cached features, without autograd.

``LinearProbeHead`` is dropout, ``probe1`` (S*D -> hidden, per patch), flatten, ``probe2``
(hidden*N -> 1), and nothing non-linear in between. So for a row z (N, K=S*D) with
dropout mask m (kept values scaled by 2):

    logit = sum_{n,k} 2 m z [n,k] * V[n,k] + c,   V = W2r @ W1 (N, K),  c = b2 + W2r.sum(0) @ b1

with W2r = probe2.weight viewed as (N, hidden). One matrix-vector product per micro-batch
replaces the two matmuls (16x fewer FLOPs at hidden 16), and the gradients follow from one
more, Y = sum_b dL/dlogit_b * 2 m z_b (N, K):

    dW1 = W2r^T Y,   dW2r = Y W1^T + b1 * sum_b dL/dlogit_b,   db1 = W2r.sum(0) * sum_b ...,
    db2 = sum_b dL/dlogit_b,   dL/dlogit_b = (sigmoid(logit_b) - y_b) / window_samples.

The same loss (BCE with logits, summed over the micro-batch, divided by the accumulation
window's sample count), the same max-norm renormalisation of both weights before each
micro-batch, the same gradients accumulated into ``.grad``; the trainer's optimizer step,
schedule step and ``global_step`` are untouched. The results equal autograd's up to
float32 rounding (another summation order), and the dropout bits come from
``dropout_bits`` rather than torch's generator (same distribution, different values).

Rows are prepared a chunk of micro-batches at a time (gather, dropout on the stored
float16 bits, one cast to float32), a few MB that stay in cache for the steps that use
them.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from tune_eegpt.config import RunConfig
from tune_eegpt.models.probe import LinearProbeHead
from tune_eegpt.training.dropout_bits import device_seed, half_dropout_, half_dropout_device_
from tune_eegpt.training.feature_rows import FeatureRows
from tune_eegpt.training.float8 import to_float32

CHUNK_BYTES = 4 << 20  # float32 rows prepared at once


def fused_probe_config_blocker(cfg: RunConfig) -> str | None:
    """What in ``cfg`` alone keeps a run off the fused step (None: nothing; the data and
    the head are checked by ``fused_probe_applies`` once built)."""
    if cfg.train.precision != "fp32":
        return f"precision {cfg.train.precision} (the fused step is float32)"
    if cfg.probe.adapter:
        return "an encoder or adapter runs in front of the head"
    if cfg.probe.dropout not in (0.0, 0.5):
        return f"dropout {cfg.probe.dropout:g} (the bit masks make p = 0.5 or 0 only)"
    return None


def fused_probe_applies(head: nn.Module, rows: FeatureRows | None) -> str | None:
    """None when ``FusedProbeStep`` can train ``head`` on ``rows``; else the reason not."""
    if type(head) is not LinearProbeHead:
        return f"the head is a {type(head).__name__}, not a LinearProbeHead"
    if rows is None:
        return "the training data are not stored feature rows"
    if tuple(rows.feature_shape) != head.feature_shape:
        return f"feature rows of shape {rows.feature_shape}, head expects {head.feature_shape}"
    if head.drop.p not in (0.0, 0.5):
        return f"dropout {head.drop.p:g} (the bit masks make p = 0.5 or 0 only)"
    return None


class FusedProbeStep:
    """Forward + backward of a LinearProbeHead for one micro-batch of the epoch's order."""

    def __init__(
        self,
        head: LinearProbeHead,
        rows: FeatureRows,
        seed: int,
        batch_size: int,
        chunk_bytes: int = CHUNK_BYTES,
    ) -> None:
        self.head, self.rows, self.seed, self.batch_size = head, rows, seed, batch_size
        self.device = head.probe1.weight.device
        self.chunk_batches = max(1, chunk_bytes // (batch_size * rows.width * 4))
        self.scale = 1.0 / (1.0 - head.drop.p)  # 2 or 1: exact, folded into the products
        self._n_patches = head.feature_shape[0]
        self._on_cpu = self.device.type == "cpu"
        # Detached aliases (same storage) of the parameters, for the step's arithmetic.
        # The trainer moves the head to its device before building this step.
        p1, p2 = head.probe1, head.probe2
        self._w1, self._b1 = p1.weight.detach(), p1.bias.detach()  # (H, K), (H,)
        self._w2_row, self._b2 = p2.weight.detach(), p2.bias.detach()  # (1, N*H), (1,)
        self._w2 = self._w2_row.view(self._n_patches, -1)  # (N, H)
        self._max_norm1, self._max_norm2 = p1.max_norm, p2.max_norm
        self._v = torch.empty(self._n_patches, rows.width // self._n_patches, device=self.device)
        self._ys = torch.empty(1, rows.width, device=self.device)
        self._order: torch.Tensor | None = None
        self._epoch = -1
        self.staged_chunk, self.staged_rows = -1, 0  # what stage() last prepared
        self._z = self._x = self._y = self._index = self._labels = None
        if not self._on_cpu:  # one micro-batch per chunk: the unit a CUDA graph replays
            self.chunk_batches = 1
        if rows.table.device.type != "cpu":  # the device's dropout stream (dropout_bits)
            self.generator = torch.Generator(device=rows.table.device)
        # All gradients live in one flat buffer: written in place (no allocation, no
        # zero_grad) and normed in one op. The parameters' .grad are views of it.
        params = [head.probe1.weight, head.probe1.bias, head.probe2.weight, head.probe2.bias]
        self._params = params
        self.grads = torch.zeros(sum(p.numel() for p in params), device=self.device)
        self._grad_views = [
            g.view(p.shape)
            for g, p in zip(self.grads.split([p.numel() for p in params]), params, strict=True)
        ]
        self._g_w2 = self._grad_views[2].view(self._n_patches, -1)  # (N, H)
        self.window_starts = True  # the next micro-batch starts an accumulation window

    def new_window(self) -> None:
        """After an optimizer step: the next micro-batch's gradients replace these."""
        self.window_starts = True

    def grad_norm(self) -> torch.Tensor:
        return torch.linalg.vector_norm(self.grads)

    def start_epoch(self, order: np.ndarray, epoch: int) -> None:
        order = torch.from_numpy(np.asarray(order, dtype=np.int64))
        self._order = order.to(self.rows.index.device)  # where the rows are gathered
        self._epoch, self.staged_chunk = epoch, -1

    def micro_batch(self, b: int, window_samples: int) -> tuple[torch.Tensor | float, int]:
        """Accumulates micro-batch ``b``'s gradients; returns (its loss: a float on a CPU,
        a detached tensor elsewhere; rows)."""
        chunk, i = divmod(b, self.chunk_batches)
        if chunk != self.staged_chunk:
            self.fill(self.stage(chunk))
        lo, hi = i * self.batch_size, min((i + 1) * self.batch_size, self.staged_rows)
        return self.compute(lo, hi, window_samples), hi - lo

    def stage(self, chunk: int) -> int:
        """Host-side work before ``fill``: the chunk's order into the index buffer, the
        dropout generator keyed; returns the chunk's row count. What ``fill`` and
        ``compute`` do afterwards reads only buffers of fixed address (a CUDA graph can
        replay them: training/device_steps.py)."""
        rows_per_chunk = self.chunk_batches * self.batch_size
        index = self._order[chunk * rows_per_chunk : (chunk + 1) * rows_per_chunk]
        n = len(index)
        if self._z is None:  # buffers reused for every chunk: no allocation, no page faults
            where = self.rows.table.device
            self._z = torch.empty(
                rows_per_chunk, self.rows.width, dtype=self.rows.dtype, device=where
            )
            self._index = torch.empty(rows_per_chunk, dtype=torch.int64, device=where)
            self._labels = self.rows.labels.to(where)
            self._y = torch.empty(rows_per_chunk, 1, device=self.device)
            self._x = torch.empty(self.batch_size, self.rows.width, device=self.device)
        self._index[:n].copy_(index)
        self.staged_chunk, self.staged_rows = chunk, n
        if self._drops and self._z.device.type != "cpu":
            self.generator.manual_seed(device_seed(self.seed, self._epoch, chunk))
        return n

    def fill(self, n: int) -> None:
        """The staged chunk's rows gathered, dropped out (stored dtype), and labels."""
        index = self._index[:n]
        z = self.rows.gather(index, out=self._z[:n])  # (R, N*K) in the stored dtype
        if self._drops:
            if z.device.type == "cpu":
                half_dropout_(z, self.seed, self._epoch, self.staged_chunk)
            else:
                half_dropout_device_(z, self.generator)
        labels = torch.index_select(self._labels, 0, index)
        self._y[:n].copy_(labels.view(-1, 1), non_blocking=True)

    def compute(self, lo: int, hi: int, window_samples: int) -> torch.Tensor | float:
        """Loss and gradients of rows ``lo:hi`` of the filled chunk."""
        # cast here, one micro-batch at a time: its float32 rows stay in cache for both
        # matrix-vector products
        x = to_float32(self._z[lo:hi], out=self._x[: hi - lo])  # (B, N*K) float32
        return self._loss_and_grads(x, self._y[lo:hi], window_samples)

    @property
    def _drops(self) -> bool:
        return bool(self.head.drop.p) and self.head.training

    def _loss_and_grads(
        self, x: torch.Tensor, y: torch.Tensor, window_samples: int
    ) -> torch.Tensor | float:
        """``x`` (B, N*K) float32 rows before the x2 of dropout, ``y`` (B, 1) labels.
        Returns the loss: a float on a CPU, a tensor elsewhere (no host sync).

        Few calls, on detached aliases of the parameters (no autograd, no no_grad
        context, no module attribute look-ups): on one CPU thread each call costs
        microseconds, as much as the arithmetic of a 64-row micro-batch."""
        w1, b1, w2 = self._w1, self._b1, self._w2
        w1.renorm_(p=2, dim=0, maxnorm=self._max_norm1)  # as the modules do before forward
        self._w2_row.renorm_(p=2, dim=0, maxnorm=self._max_norm2)
        col = w2.sum(0)  # (H,)
        v = torch.mm(w2, w1, out=self._v)  # (N, K): both maps in one
        c = torch.addmv(self._b2, col.view(1, -1), b1)  # (1,)
        # mm-based, not mv: on CPU mv takes slower kernels for these shapes
        logits = torch.addmm(c, x, v.view(-1, 1), alpha=self.scale)  # (B, 1)
        loss = F.binary_cross_entropy_with_logits(logits, y, reduction="sum")
        d = torch.sigmoid(logits).sub_(y)  # window_samples * dL/dlogit, (B, 1)
        # Y = sum_b dL/dlogit_b * 2 m z_b (N, K), as ys * scale / window_samples
        ys = torch.mm(d.view(1, -1), x, out=self._ys).view(self._n_patches, -1)
        if self._params[0].grad is not self._grad_views[0]:  # a zero_grad since: attach
            for p, g in zip(self._params, self._grad_views, strict=True):
                p.grad = g
            self.window_starts = True
        if self._on_cpu:  # dL/db2 as a float: scalar factors, no extra calls
            self._add_grads(col, ys, d.sum().item() / window_samples, window_samples)
            self.window_starts = False
            return loss.item() / window_samples
        self._add_grads_device(col, ys, d.sum(0).div_(window_samples), window_samples)
        self.window_starts = False
        return loss.div_(window_samples)

    def _add_grads(self, col: torch.Tensor, ys: torch.Tensor, db2: float, ws: int) -> None:
        w1, b1, w2 = self._w1, self._b1, self._w2
        g_w1, g_b1, _, g_b2 = self._grad_views
        g_w2, alpha = self._g_w2, self.scale / ws
        if self.window_starts:
            torch.addmm(g_w1, w2.t(), ys, beta=0.0, alpha=alpha, out=g_w1)
            torch.mul(col, db2, out=g_b1)
            torch.addmm(b1.view(1, -1), ys, w1.t(), beta=db2, alpha=alpha, out=g_w2)
            g_b2.fill_(db2)
        else:
            g_w1.addmm_(w2.t(), ys, alpha=alpha)
            g_b1.add_(col, alpha=db2)
            g_w2.addmm_(ys, w1.t(), alpha=alpha).add_(b1, alpha=db2)
            g_b2.add_(db2)

    def _add_grads_device(
        self, col: torch.Tensor, ys: torch.Tensor, db2: torch.Tensor, ws: int
    ) -> None:
        w1, b1, w2 = self._w1, self._b1, self._w2
        g_w1, g_b1, _, g_b2 = self._grad_views
        g_w2, alpha = self._g_w2, self.scale / ws
        if self.window_starts:
            torch.addmm(g_w1, w2.t(), ys, beta=0.0, alpha=alpha, out=g_w1)
            torch.mul(col, db2, out=g_b1)
            torch.addmm(b1 * db2, ys, w1.t(), alpha=alpha, out=g_w2)
            g_b2.copy_(db2)
        else:
            g_w1.addmm_(w2.t(), ys, alpha=alpha)
            g_b1.addcmul_(col, db2)
            g_w2.addmm_(ys, w1.t(), alpha=alpha).addcmul_(b1.expand_as(g_w2), db2)
            g_b2.add_(db2)
