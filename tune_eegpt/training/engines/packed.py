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
    Heads are numbered as ``trainers`` is ordered."""

    name = NAME

    def __init__(self, trainers: Sequence[ProbeTrainer]) -> None:
        self.trainers = list(trainers)
        first = self.trainers[0]
        self.rows: FeatureRows = first.train_rows
        self.device = first.device
        self.batch_size = first.cfg.train.batch_size
        n, s, d = first.head.feature_shape
        h = first.head.probe1.out_features
        self.n, self.kd, self.h, self.width = n, s * d, h, n * s * d
        self.max_norm1 = first.head.probe1.max_norm
        self.max_norm2 = first.head.probe2.max_norm
        k = len(self.trainers)
        sizes = [h * self.kd, h, n * h, 1]
        self._sizes = sizes
        params = torch.cat(
            [torch.cat([p.detach().reshape(-1) for p in _head_params(t.head)]) for t in trainers]
        ).view(k, -1)
        self.adamw = StackedAdamW.zeros_like(params.to(self.device))
        for t in trainers:
            # no parameter has a gradient: a no-op that tells the scheduler's step-order
            # check that this optimizer steps (the engine steps it on its behalf)
            t.optimizer.step()
        self._load_optimizer_state()
        self.w1, self.b1, self.w2, self.b2 = self._views(self.adamw.params)
        self.g_w1, self.g_b1, self.g_w2, self.g_b2 = self._views(self.adamw.grads)
        self.window_loss = torch.zeros(k, dtype=torch.float64, device=self.device)
        self.clip = torch.tensor(
            [t.cfg.optim.grad_clip or math.inf for t in trainers], device=self.device
        )
        self.scale = torch.tensor(
            [1.0 / (1.0 - t.head.drop.p) for t in trainers], device=self.device
        )
        # groups: heads that read the same rows in the same order with the same masks
        keys = [(t.sampler_seed, t.epoch, t.head.drop.p) for t in trainers]
        self.groups: list[tuple[tuple, torch.Tensor]] = []
        for key in dict.fromkeys(keys):
            members = [i for i, other in enumerate(keys) if other == key]
            self.groups.append((key, torch.tensor(members, device=self.device)))
        self._y = torch.empty(k, self.width, device=self.device)  # Y of each head, (K, F)
        self._dsum = torch.empty(k, device=self.device)
        self._loss = torch.empty(k, device=self.device)
        self._orders: list[torch.Tensor] = []
        self._labels = self.rows.labels.to(self.rows.index.device)

    def _views(self, flat: torch.Tensor) -> list[torch.Tensor]:
        k = flat.shape[0]
        w1, b1, w2, b2 = flat.split(self._sizes, dim=1)
        return [w1.view(k, self.h, self.kd), b1, w2.view(k, self.n, self.h), b2.view(k)]

    # ---- state in and out of the trainers ----------------------------------------------
    def _load_optimizer_state(self) -> None:
        for i, trainer in enumerate(self.trainers):
            state = trainer.optimizer.state
            params = _head_params(trainer.head)
            if not all(p in state and "exp_avg" in state[p] for p in params):
                continue  # no step taken yet: zeros, as torch's first step starts from
            for name, stacked in (
                ("exp_avg", self.adamw.exp_avg),
                ("exp_avg_sq", self.adamw.exp_avg_sq),
            ):
                stacked[i] = torch.cat([state[p][name].reshape(-1) for p in params])
            self.adamw.steps[i] = float(state[params[0]]["step"])

    def store(self) -> None:
        """Each trainer's head parameters and AdamW state set to this engine's."""
        for i, trainer in enumerate(self.trainers):
            params = _head_params(trainer.head)

            def chunks(stacked: torch.Tensor, i: int = i) -> tuple[torch.Tensor, ...]:
                return stacked[i].split(self._sizes)

            with torch.no_grad():
                for p, value in zip(params, chunks(self.adamw.params), strict=True):
                    p.copy_(value.view(p.shape))
            step = float(self.adamw.steps[i])
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
        self._orders = [
            torch.from_numpy(np.asarray(orders[int(members[0])], dtype=np.int64)).to(where)
            for _, members in self.groups
        ]

    def micro_batch(self, b: int, window_samples: Sequence[int]) -> int:
        """Accumulates micro-batch ``b``'s gradients into every head; returns its rows.
        ``window_samples[i]``: the sample count of head i's accumulation window."""
        self._renorm()
        w1, w2 = self.w1, self.w2
        col = w2.sum(1)  # (K, H)
        v = torch.bmm(w2, w1).view(len(self.trainers), self.width)  # (K, F): both maps in one
        c = self.b2 + (col * self.b1).sum(1)  # (K,)
        rows = 0
        for (seed_epoch_p, members), order in zip(self.groups, self._orders, strict=True):
            seed, epoch, p = seed_epoch_p
            index = order[b * self.batch_size : (b + 1) * self.batch_size]
            rows = len(index)
            z = self.rows.gather(index)  # (B, F) in the stored dtype
            if p:
                half_dropout_(z, seed, epoch, b)
            x = to_float32(z, torch.empty(z.shape, device=self.device))  # (B, F)
            y = self._labels[index].to(self.device).view(-1, 1)  # (B, 1)
            scale = float(self.scale[members[0]])
            v_g, c_g = v.index_select(0, members), c.index_select(0, members)
            logits = torch.addmm(c_g, x, v_g.t(), alpha=scale)  # (B, Kg)
            loss = F.binary_cross_entropy_with_logits(
                logits, y.expand_as(logits), reduction="none"
            ).sum(0)
            d = torch.sigmoid(logits).sub_(y)  # window_samples * dL/dlogit, (B, Kg)
            self._y.index_copy_(0, members, torch.mm(d.t(), x))  # (Kg, F)
            self._dsum.index_copy_(0, members, d.sum(0))
            self._loss.index_copy_(0, members, loss)
        ws = torch.tensor(window_samples, dtype=torch.float32, device=self.device)
        self.window_loss.add_(self._loss.double() / ws.double())
        alpha = self.scale / ws  # (K,)
        db2 = self._dsum / ws  # (K,)
        ys = (self._y * alpha.unsqueeze(1)).view(-1, self.n, self.kd)  # (K, N, S*D)
        self.g_w1.baddbmm_(w2.transpose(1, 2), ys)
        self.g_w2.baddbmm_(ys, w1.transpose(1, 2)).add_(self.b1.unsqueeze(1) * db2.view(-1, 1, 1))
        self.g_b1.addcmul_(col, db2.unsqueeze(1))
        self.g_b2.add_(db2)
        return rows

    def _renorm(self) -> None:
        """Max-norm of every weight row, as ``torch.renorm`` does (factor
        max_norm / (norm + 1e-7) where the norm exceeds max_norm)."""
        for w, max_norm in ((self.w1, self.max_norm1), (self.w2.flatten(1), self.max_norm2)):
            norm = torch.linalg.vector_norm(w, dim=-1, keepdim=True)
            w.mul_(torch.where(norm > max_norm, max_norm / (norm + 1e-7), 1.0))

    def window_losses(self, heads: Sequence[int]) -> list[float]:
        """The summed loss of each of ``heads``' accumulation windows (one host sync)."""
        return self.window_loss[list(heads)].tolist()

    def optimizer_step(self, heads: Sequence[int]) -> list[tuple[bool, float]]:
        """One AdamW step of each of ``heads`` at its trainer's current lr and betas;
        their gradients and window losses start again from zero. Returns (stepped,
        gradient norm before clipping) per head."""
        k = len(self.trainers)
        rows = None if len(heads) == k else torch.tensor(list(heads), device=self.device)
        grads = self.adamw.grads if rows is None else self.adamw.grads[rows]
        norm = torch.linalg.vector_norm(grads, dim=1)  # (n,)
        clip = self.clip if rows is None else self.clip[rows]
        coef = (clip / (norm + 1e-6)).clamp_(max=1.0)
        if rows is None:
            grads.mul_(coef.unsqueeze(1))
        else:
            self.adamw.grads[rows] = grads * coef.unsqueeze(1)
        groups = [self.trainers[i].optimizer.param_groups[0] for i in heads]
        hyper = torch.tensor(
            [[g["lr"], g["betas"][0], g["betas"][1], g["eps"], g["weight_decay"]] for g in groups],
            dtype=torch.float64,
            device=self.device,
        )
        self.adamw.step(rows, *hyper.unbind(1))
        if rows is None:
            self.adamw.grads.zero_()
            self.window_loss.zero_()
        else:
            self.adamw.grads.index_fill_(0, rows, 0.0)
            self.window_loss.index_fill_(0, rows, 0.0)
        return [(True, value) for value in norm.tolist()]
