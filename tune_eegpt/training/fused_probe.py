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

from tune_eegpt.models.probe import LinearProbeHead, renorm_rows_
from tune_eegpt.training.dropout_bits import half_dropout_
from tune_eegpt.training.feature_rows import FeatureRows

CHUNK_BYTES = 4 << 20  # float32 rows prepared at once


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
        self._order: torch.Tensor | None = None
        self._epoch = -1
        self._chunk = -1
        self._x = self._y = None

    def start_epoch(self, order: np.ndarray, epoch: int) -> None:
        self._order = torch.from_numpy(np.asarray(order, dtype=np.int64)).to(self.device)
        self._epoch, self._chunk = epoch, -1

    def micro_batch(self, b: int, window_samples: int) -> tuple[torch.Tensor, int]:
        """Accumulates micro-batch ``b``'s gradients; returns (its loss, detached; rows)."""
        chunk, i = divmod(b, self.chunk_batches)
        if chunk != self._chunk:
            self._prepare(chunk)
        x = self._x[i * self.batch_size : (i + 1) * self.batch_size]  # (B, N*K) float32
        y = self._y[i * self.batch_size : (i + 1) * self.batch_size]
        return self._loss_and_grads(x, y, window_samples), len(y)

    def _prepare(self, chunk: int) -> None:
        rows_per_chunk = self.chunk_batches * self.batch_size
        index = self._order[chunk * rows_per_chunk : (chunk + 1) * rows_per_chunk]
        z = self.rows.gather(index)  # (R, N*K) in the stored dtype, a fresh copy
        if self.head.drop.p and self.head.training:
            half_dropout_(z, self.seed, self._epoch, chunk)
        self._x = z.to(self.device, torch.float32)
        self._y = self.rows.labels[index].to(self.device)
        self._chunk = chunk

    @torch.no_grad()
    def _loss_and_grads(
        self, x: torch.Tensor, y: torch.Tensor, window_samples: int
    ) -> torch.Tensor:
        head = self.head
        p1, p2 = head.probe1, head.probe2
        renorm_rows_(p1.weight, p1.max_norm)  # as the modules do before each forward
        renorm_rows_(p2.weight, p2.max_norm)
        n_patches = head.feature_shape[0]
        w1, b1 = p1.weight, p1.bias  # (H, K), (H,)
        w2 = p2.weight.view(n_patches, -1)  # (N, H)
        col = w2.sum(0)  # (H,)
        v = (w2 @ w1).view(-1)  # (N*K,)
        c = p2.bias + col @ b1  # (1,)
        logits = torch.addmv(c.expand(len(x)), x, v, alpha=self.scale)  # (B,)
        loss = F.binary_cross_entropy_with_logits(logits, y, reduction="sum") / window_samples
        d = torch.sigmoid(logits).sub_(y).div_(window_samples)  # dL/dlogit, (B,)
        db2 = d.sum().view(1)
        y_sum = torch.mv(x.t(), d).mul_(self.scale).view(n_patches, -1)  # (N, K)
        _accumulate(p1.weight, w2.t() @ y_sum)
        _accumulate(p1.bias, col * db2)
        _accumulate(p2.weight, torch.addmm(b1 * db2, y_sum, w1.t()).view(1, -1))
        _accumulate(p2.bias, db2)
        return loss


def _accumulate(param: nn.Parameter, grad: torch.Tensor) -> None:
    if param.grad is None:
        param.grad = grad
    else:
        param.grad.add_(grad)
