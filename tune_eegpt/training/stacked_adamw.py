"""AdamW over K stacked parameter rows, each row one trial's head with its own hyperparameters.

``torch.optim.AdamW`` takes one learning rate and one beta1 per parameter group and steps
every group at once. K probe heads trained in one pass need per-head values, changing
every step (each trial's own OneCycleLR, momentum cycled), and per-head step times (each
trial's own accumulation cadence). So the update is written here over (K, M) tensors, in
the order of torch's single-tensor AdamW (``torch/optim/adam.py``, decoupled weight decay):

    step += 1
    p  *= 1 - lr * weight_decay
    m   = lerp(m, g, 1 - beta1)
    v   = v * beta2 + (1 - beta2) * g * g
    p  -= lr / (1 - beta1**step) * m / (sqrt(v) / sqrt(1 - beta2**step) + eps)

torch computes the bias corrections as Python floats (double precision); here every
per-row factor is computed in float64 on the host (NumPy: microseconds for any K, where a
torch call on a tiny tensor costs several) and applied as float32, so the two agree to
float32 rounding, not bit for bit (tests/test_stacked_adamw.py states the bound).
The state is torch's own (``exp_avg``, ``exp_avg_sq``, ``step``), so it moves in and out
of a ``torch.optim.AdamW`` state_dict unchanged (training/engines/packed.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class StackedAdamW:
    """State of K independent AdamW optimizers, one row each. ``params``/``grads``/
    ``exp_avg``/``exp_avg_sq`` are (K, M) tensors; ``steps`` (K,) float64 on the host counts
    the steps each row took (torch keeps it as a tensor per parameter; here it only ever
    enters the bias corrections, which are computed on the host)."""

    params: torch.Tensor
    grads: torch.Tensor
    exp_avg: torch.Tensor
    exp_avg_sq: torch.Tensor
    steps: np.ndarray

    @classmethod
    def zeros_like(cls, params: torch.Tensor) -> StackedAdamW:
        zeros = [torch.zeros_like(params) for _ in range(3)]
        return cls(params, *zeros, np.zeros(params.shape[0], dtype=np.float64))

    def step(self, rows: np.ndarray | None, hyper: np.ndarray) -> None:
        """One update of the rows ``rows`` (indices; None: every row). ``hyper``
        (len(rows), 5) float64: lr, beta1, beta2, eps, weight_decay of each updated row."""
        if rows is None:
            p, g, m, v = self.params, self.grads, self.exp_avg, self.exp_avg_sq
            self.steps += 1
            step = self.steps
        else:
            index = torch.from_numpy(rows).to(self.params.device)
            p, g = self.params[index], self.grads[index]
            m, v = self.exp_avg[index], self.exp_avg_sq[index]
            step = self.steps[rows] + 1
            self.steps[rows] = step
        if len(hyper) == 1:  # one row: Python floats, no array work at all
            lr, beta1, beta2, eps, weight_decay = hyper[0].tolist()
            t = float(step[0])
            _scalar_update(
                p,
                g,
                m,
                v,
                1 - lr * weight_decay,
                1 - beta1,
                beta2,
                1 - beta2,
                lr / (1 - beta1**t),
                math.sqrt(1 - beta2**t),
                eps,
            )
        else:
            _rows_update(p, g, m, v, hyper, step)
        if rows is not None:
            self.params[index] = p
            self.exp_avg[index] = m
            self.exp_avg_sq[index] = v


def _scalar_update(p, g, m, v, decay, w1, b2, w2, size, bc2, eps) -> None:
    """torch's own single-tensor AdamW arithmetic, with Python-float factors."""
    p.mul_(decay)
    m.lerp_(g, w1)
    v.mul_(b2).addcmul_(g, g, value=w2)
    denom = (v.sqrt() / bc2).add_(eps)
    p.addcdiv_(m, denom, value=-size)


def _rows_update(p, g, m, v, hyper: np.ndarray, step: np.ndarray) -> None:
    """The update with per-row factors (n, 7), computed on the host."""
    lr, beta1, beta2, eps, weight_decay = hyper.T
    # every per-row factor on the host (n, 7): NumPy takes microseconds for any n
    factors = np.stack(
        [
            1 - lr * weight_decay,
            1 - beta1,
            beta2,
            1 - beta2,
            lr / (1 - beta1**step),  # the step size, bias-corrected
            np.sqrt(1 - beta2**step),  # sqrt of bias correction 2
            eps,
        ],
        axis=1,
    )
    if (factors == factors[0]).all():  # one value per factor: Python floats
        _scalar_update(p, g, m, v, *factors[0].tolist())
    else:
        f = torch.from_numpy(factors.astype(np.float32)).to(p.device).unsqueeze(2)
        p.mul_(f[:, 0])
        m.lerp_(g, f[:, 1])
        v.mul_(f[:, 2]).addcmul_(g, g * f[:, 3])
        denom = (v.sqrt() / f[:, 5]).add_(f[:, 6])
        p.addcdiv_(m * f[:, 4], denom, value=-1.0)
