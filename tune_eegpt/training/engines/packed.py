"""The packed engine: K linear probe heads on stored feature rows, trained as stacked tensors.

``LinearProbeHead`` is dropout, ``probe1`` (S*D -> H, per patch), flatten, ``probe2``
(H*N -> 1), nothing non-linear in between. So for a row z (N, S*D) with dropout mask m
(kept values scaled by ``scale`` = 2, or 1 without dropout):

    logit = scale * sum_{n,j} (m z)[n,j] V[n,j] + c
    V = W2r @ W1 (N, S*D),   c = b2 + W2r.sum(0) @ b1

with W2r = probe2.weight viewed as (N, H). One product with V replaces the two layers, and
with Y = sum_b dL/dlogit_b * scale * (m z)_b (N, S*D) the gradients are

    dW1 = W2r^T Y,   dW2r = Y W1^T + b1 * db2,   db1 = W2r.sum(0) * db2,   db2 = sum_b dL/dlogit_b,
    dL/dlogit_b = (sigmoid(logit_b) - y_b) / window_samples

(BCE with logits summed over the micro-batch, over the accumulation window's sample count;
both weights max-norm renormalised before each micro-batch, as the modules do).

K heads: every head's parameters are one row of a (K, M) tensor (W1 | b1 | W2 | b2) and
so are its gradients and AdamW state (training/stacked_adamw.py), so one call updates
every head. Heads whose trials read the same rows in the same order with the same masks
(same seed, epoch and dropout) form a group: the group's rows are gathered, masked and
cast once, and its logits and Y are two GEMMs over the group's heads,
(B, F) x (F, Kg) and (Kg, B) x (B, F), which is where packing pays on a CPU. Heads share
no weights and every per-head quantity (window sizes, learning rate, momentum, the step
times of its accumulation) is its own, so a head's arithmetic is the arithmetic it would
get alone, up to float32 rounding of the wider products.

The heads' state moves in at construction and back out in ``store``: each trainer's head
and ``torch.optim.AdamW`` hold exactly what they would after the same steps of their own,
so checkpoints, evaluation and the scheduler stay the trainer's.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch.nn import functional as F

from tune_eegpt.models.probe import LinearProbeHead
from tune_eegpt.training.dropout_bits import half_dropout_
from tune_eegpt.training.feature_rows import FeatureRows
from tune_eegpt.training.float8 import to_float32
from tune_eegpt.training.stacked_adamw import StackedAdamW

if TYPE_CHECKING:
    from tune_eegpt.training.trainer import ProbeTrainer

NAME = "packed"
CHUNK_BYTES = 4 << 20  # float32 rows of micro-batches staged at once (speed only)
PRIORITY = 10  # chosen before the autograd reference wherever it applies


def blocker(trainer: ProbeTrainer) -> str | None:
    """None when this engine can train ``trainer``; else why not, in words."""
    head, cfg = trainer.head, trainer.cfg
    if trainer.encoder is not None or trainer.adapter is not None:
        return "an encoder or adapter runs in front of the head"
    if cfg.train.precision != "fp32":
        return f"precision {cfg.train.precision} (the packed engine is float32)"
    if type(head) is not LinearProbeHead:
        return f"the head is a {type(head).__name__}, not a LinearProbeHead"
    if type(trainer.optimizer) is not torch.optim.AdamW or len(trainer.optimizer.param_groups) != 1:
        return "the optimizer is not one AdamW parameter group"
    if head.drop.p not in (0.0, 0.5):
        return f"dropout {head.drop.p:g} (the bit masks make p = 0.5 or 0 only)"
    rows = trainer.train_rows
    if rows is None:
        return "the training data are not stored feature rows"
    if tuple(rows.feature_shape) != head.feature_shape:
        return f"feature rows of shape {rows.feature_shape}, head expects {head.feature_shape}"
    return None


def pack_key(trainer: ProbeTrainer) -> tuple:
    """Trainers with equal keys can share a pass: same rows, batches and head shape."""
    head = trainer.head
    return (
        NAME,
        trainer.train_rows_key,
        trainer.cfg.train.batch_size,
        head.feature_shape,
        head.probe1.out_features,
        head.probe1.max_norm,
        head.probe2.max_norm,
        str(trainer.device),
        trainer.batch_in_epoch,
    )


def build(trainers: Sequence[ProbeTrainer]) -> PackedHeads:
    return PackedHeads(trainers)


def _head_params(head: LinearProbeHead) -> list[torch.nn.Parameter]:
    return [head.probe1.weight, head.probe1.bias, head.probe2.weight, head.probe2.bias]


class PackedHeads:
    """The micro-batches and optimizer steps of ``trainers``' heads, as stacked tensors.
    Heads are numbered as ``trainers`` is ordered; inside, they are stored group by group
    (row ``self.row[i]`` holds head i), so that a group's heads are one slice."""

    def __init__(self, trainers: Sequence[ProbeTrainer]) -> None:
        first = trainers[0]
        self.rows: FeatureRows = first.train_rows
        self.device = first.device
        self.batch_size = first.cfg.train.batch_size
        n, s, d = first.head.feature_shape
        h = first.head.probe1.out_features
        self.n, self.kd, self.h, self.width = n, s * d, h, n * s * d
        self.max_norm1 = first.head.probe1.max_norm
        self.max_norm2 = first.head.probe2.max_norm
        self._sizes = [h * self.kd, h, n * h, 1]
        # groups: heads that read the same rows in the same order with the same masks
        keys = [(t.sampler_seed, t.epoch, t.head.drop.p) for t in trainers]
        distinct = list(dict.fromkeys(keys))
        order = sorted(range(len(trainers)), key=lambda i: distinct.index(keys[i]))
        self.trainers = [trainers[i] for i in order]  # in row order
        self._head_of_row = order
        self.row = np.empty(len(trainers), dtype=np.int64)  # head -> row
        self.row[order] = np.arange(len(trainers))
        self._in_order = order == list(range(len(trainers)))
        self.groups: list[tuple[tuple, slice]] = []
        start = 0
        for key in distinct:
            end = start + keys.count(key)
            self.groups.append((key, slice(start, end)))
            start = end
        k = len(self.trainers)
        params = torch.cat(
            [
                torch.cat([p.detach().reshape(-1) for p in _head_params(t.head)])
                for t in self.trainers
            ]
        ).view(k, -1)
        self.adamw = StackedAdamW.zeros_like(params.to(self.device))
        for t in self.trainers:
            if not getattr(t, "packed_step_announced", False):
                # no parameter has a gradient: a no-op that tells the scheduler's
                # step-order check that this optimizer steps (the engine steps for it)
                t.optimizer.step()
                t.packed_step_announced = True
        self._load_optimizer_state()
        self.w1, self.b1, self.w2, self.b2 = self._views(self.adamw.params)
        self.g_w1, self.g_b1, self.g_w2, self.g_b2 = self._views(self.adamw.grads)
        self.window_loss = torch.zeros(k, dtype=torch.float64, device=self.device)
        clips = np.array([t.cfg.optim.grad_clip or math.inf for t in self.trainers])
        self.clip = torch.tensor(clips, dtype=torch.float32, device=self.device)
        self.clips_any = bool(np.isfinite(clips).any())
        self.scale = torch.tensor(
            [1.0 / (1.0 - t.head.drop.p) for t in self.trainers], device=self.device
        )
        self._y = torch.empty(k, self.width, device=self.device)  # Y of each head, (K, F)
        self._dsum = torch.empty(k, device=self.device)
        self._loss = torch.empty(k, device=self.device)
        self._orders: list[torch.Tensor] = []
        self._labels = self.rows.labels.to(self.rows.index.device)
        where = self.rows.table.device
        bs = self.batch_size
        # rows are gathered and masked a chunk of micro-batches at a time (a few MB that
        # stay in cache for the steps that use them; the masks do not depend on it), into
        # buffers reused all pass long: no allocation, no page faults
        self.chunk_batches = max(1, CHUNK_BYTES // (bs * self.width * 4))
        staged = self.chunk_batches * bs
        self._z = [
            torch.empty(staged, self.width, dtype=self.rows.dtype, device=where)
            for _ in self.groups
        ]
        self._y_rows = [torch.empty(staged, 1, device=self.device) for _ in self.groups]
        self._staged = [-1] * len(self.groups)  # the chunk each group's buffer holds
        self._staged_rows = [0] * len(self.groups)
        self._x = torch.empty(bs, self.width, device=self.device)
        self._window_factors: dict[tuple[int, ...], tuple[torch.Tensor, ...]] = {}

    def _views(self, flat: torch.Tensor) -> list[torch.Tensor]:
        k = flat.shape[0]
        w1, b1, w2, b2 = flat.split(self._sizes, dim=1)
        return [w1.view(k, self.h, self.kd), b1, w2.view(k, self.n, self.h), b2.view(k)]

    # ---- state in and out of the trainers ----------------------------------------------
    def _load_optimizer_state(self) -> None:
        for r, trainer in enumerate(self.trainers):
            state = trainer.optimizer.state
            params = _head_params(trainer.head)
            if not all(p in state and "exp_avg" in state[p] for p in params):
                continue  # no step taken yet: zeros, as torch's first step starts from
            for name, stacked in (
                ("exp_avg", self.adamw.exp_avg),
                ("exp_avg_sq", self.adamw.exp_avg_sq),
            ):
                stacked[r] = torch.cat([state[p][name].reshape(-1) for p in params])
            self.adamw.steps[r] = float(state[params[0]]["step"])

    def store(self) -> None:
        """Each trainer's head parameters and AdamW state set to this engine's."""
        for r, trainer in enumerate(self.trainers):
            params = _head_params(trainer.head)

            def chunks(stacked: torch.Tensor, r: int = r) -> tuple[torch.Tensor, ...]:
                return stacked[r].split(self._sizes)

            with torch.no_grad():
                for p, value in zip(params, chunks(self.adamw.params), strict=True):
                    p.copy_(value.view(p.shape))
            step = float(self.adamw.steps[r])
            if step == 0:
                continue
            state = trainer.optimizer.state
            for p, m, v in zip(
                params, chunks(self.adamw.exp_avg), chunks(self.adamw.exp_avg_sq), strict=True
            ):
                state[p] = {
                    "step": torch.tensor(step, dtype=torch.float32),
                    "exp_avg": m.view(p.shape).clone(),
                    "exp_avg_sq": v.view(p.shape).clone(),
                }

    # ---- one epoch -----------------------------------------------------------------------
    def start_epoch(self, orders: Sequence[np.ndarray]) -> None:
        """``orders[i]``: the order of head i's rows this epoch (one per group is used)."""
        where = self.rows.index.device
        head = self._head_of_row
        self._orders = [
            torch.from_numpy(np.asarray(orders[head[members.start]], dtype=np.int64)).to(where)
            for _, members in self.groups
        ]
        self._staged = [-1] * len(self.groups)

    def micro_batch(self, b: int, window_samples: Sequence[int]) -> int:
        """Accumulates micro-batch ``b``'s gradients into every head; returns its rows.
        ``window_samples[i]``: the sample count of head i's accumulation window."""
        self._renorm()
        w1, w2 = self.w1, self.w2
        col = w2.sum(1)  # (K, H)
        v = torch.bmm(w2, w1).view(-1, self.width)  # (K, F): both maps in one
        c = self.b2 + (col * self.b1).sum(1)  # (K,)
        rows = 0
        chunk, i = divmod(b, self.chunk_batches)
        lo = i * self.batch_size
        for g, ((_, _, p), members) in enumerate(self.groups):
            if self._staged[g] != chunk:
                self._stage(g, chunk)
            z = self._z[g][lo : lo + self.batch_size]
            rows = min(len(z), self._staged_rows[g] - lo)
            x = to_float32(z[:rows], self._x[:rows])  # (B, F) float32
            y = self._y_rows[g][lo : lo + rows]  # (B, 1)
            scale = 1.0 / (1.0 - p)
            logits = torch.addmm(c[members], x, v[members].t(), alpha=scale)  # (B, Kg)
            loss = F.binary_cross_entropy_with_logits(logits, y.expand_as(logits), reduction="none")
            torch.sum(loss, 0, out=self._loss[members])
            d = torch.sigmoid(logits).sub_(y)  # window_samples * dL/dlogit, (B, Kg)
            torch.mm(d.t(), x, out=self._y[members])  # (Kg, F)
            torch.sum(d, 0, out=self._dsum[members])
        inv_ws, inv_ws32, alpha = self._factors(window_samples)
        self.window_loss.addcmul_(self._loss, inv_ws)  # float64 sums, as the reference's
        db2 = self._dsum * inv_ws32  # (K,)
        ys = (self._y * alpha).view(-1, self.n, self.kd)  # (K, N, S*D)
        self.g_w1.baddbmm_(w2.transpose(1, 2), ys)
        self.g_w2.baddbmm_(ys, w1.transpose(1, 2)).addcmul_(
            self.b1.unsqueeze(1), db2.view(-1, 1, 1)
        )
        self.g_b1.addcmul_(col, db2.unsqueeze(1))
        self.g_b2.add_(db2)
        return rows

    def _stage(self, g: int, chunk: int) -> None:
        """Group ``g``'s rows of micro-batches chunk * C .. (chunk + 1) * C - 1: gathered,
        masked (in the stored dtype), labels beside them."""
        (seed, epoch, p), _ = self.groups[g]
        per_chunk = self.chunk_batches * self.batch_size
        index = self._orders[g][chunk * per_chunk : (chunk + 1) * per_chunk]
        n = len(index)
        z = self.rows.gather(index, out=self._z[g][:n])  # (R, F), stored dtype
        if p:
            half_dropout_(z, seed, epoch, chunk * self.chunk_batches, self.batch_size)
        self._y_rows[g][:n].copy_(self._labels[index].view(-1, 1))
        self._staged[g] = chunk
        self._staged_rows[g] = n

    def _factors(self, window_samples: Sequence[int]) -> tuple[torch.Tensor, ...]:
        """(1 / window samples (K,) float64 and float32, scale / window samples (K, 1)) per
        row; the same few values all epoch long, kept."""
        key = tuple(window_samples)
        if key not in self._window_factors:
            in_rows = [key[i] for i in self._head_of_row]
            ws = torch.tensor(in_rows, dtype=torch.float64, device=self.device)
            self._window_factors[key] = (
                1 / ws,
                (1 / ws).float(),
                (self.scale / ws.float()).unsqueeze(1),
            )
        return self._window_factors[key]

    def _renorm(self) -> None:
        """Max-norm of every weight row, as ``torch.renorm`` does (factor
        max_norm / (norm + 1e-7) where the norm exceeds max_norm). One head's rows are one
        contiguous block: torch's own renorm, one call per weight; stacked heads' are not."""
        if len(self.trainers) == 1:
            self.w1[0].renorm_(p=2, dim=0, maxnorm=self.max_norm1)
            self.w2.view(1, -1).renorm_(p=2, dim=0, maxnorm=self.max_norm2)
            return
        for w, max_norm in ((self.w1, self.max_norm1), (self.w2.flatten(1), self.max_norm2)):
            norm = torch.linalg.vector_norm(w, dim=-1, keepdim=True)
            w.mul_(torch.where(norm > max_norm, max_norm / (norm + 1e-7), 1.0))

    @torch.no_grad()
    def predict_validation(self, heads: Sequence[int]) -> dict[int, tuple[np.ndarray, np.ndarray]]:
        """(labels, probabilities) of the validation rows for each of ``heads``, as their
        modules would predict them (max-norm applied first, no dropout), all heads in one
        product per block of rows: logits (R, K) = X (R, F) x V^T + c. Empty when the
        heads' validation data are not one set of stored feature rows."""
        keys = {t.val_rows_key for t in self.trainers}
        if len(keys) != 1 or None in keys:
            return {}
        rows = self.trainers[0].val_rows
        self._renorm()
        v = torch.bmm(self.w2, self.w1).view(-1, self.width)  # (K, F)
        c = self.b2 + (self.w2.sum(1) * self.b1).sum(1)  # (K,)
        block = max(1, CHUNK_BYTES // (self.width * 4))
        probs = []
        for start in range(0, len(rows), block):
            index = torch.arange(start, min(start + block, len(rows)), device=rows.index.device)
            x = to_float32(
                rows.gather(index), torch.empty(len(index), self.width, device=self.device)
            )
            probs.append(torch.sigmoid(torch.addmm(c, x, v.t())).cpu())
        p = torch.cat(probs).numpy()  # (n, K) in row order
        y = rows.labels.cpu().numpy()
        return {i: (y, p[:, self.row[i]].astype(np.float32)) for i in heads}

    def window_losses(self, heads: Sequence[int]) -> list[float]:
        """The summed loss of each of ``heads``' accumulation windows (one host sync)."""
        return self.window_loss[torch.from_numpy(self.row[list(heads)])].tolist()

    def optimizer_step(self, heads: Sequence[int]) -> list[tuple[bool, float]]:
        """One AdamW step of each of ``heads`` at its trainer's current lr and betas;
        their gradients and window losses start again from zero. Returns (stepped,
        gradient norm before clipping) per head."""
        k = len(self.trainers)
        rows = None if len(heads) == k else self.row[list(heads)]
        index = None if rows is None else torch.from_numpy(rows).to(self.device)
        grads = self.adamw.grads if rows is None else self.adamw.grads[index]
        norm = torch.linalg.vector_norm(grads, dim=1)  # (n,)
        if self.clips_any:
            clip = self.clip if rows is None else self.clip[index]
            coef = (clip / (norm + 1e-6)).clamp_(max=1.0).unsqueeze(1)
            if rows is None:
                grads.mul_(coef)
            else:
                self.adamw.grads[index] = grads * coef
        groups = [
            self.trainers[r].optimizer.param_groups[0]
            for r in (rows if rows is not None else range(k))
        ]
        hyper = np.array(
            [[g["lr"], g["betas"][0], g["betas"][1], g["eps"], g["weight_decay"]] for g in groups]
        )
        self.adamw.step(rows, hyper)
        if rows is None:
            self.adamw.grads.zero_()
            self.window_loss.zero_()
        else:
            self.adamw.grads.index_fill_(0, index, 0.0)
            self.window_loss.index_fill_(0, index, 0.0)
        norms = norm.tolist()
        if rows is None and not self._in_order:  # in row order: back to the heads' order
            norms = [norms[r] for r in self.row[list(heads)]]
        return [(True, value) for value in norms]
