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

torch computes the bias corrections as Python floats (double precision); here they are
float64 tensors cast to the parameters' dtype at the last product, so the two agree to
float32 rounding, not bit for bit (tests/test_stacked_adamw.py states the bound).
The state is torch's own (``exp_avg``, ``exp_avg_sq``, ``step``), so it moves in and out
of a ``torch.optim.AdamW`` state_dict unchanged (training/engines/packed.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class StackedAdamW:
    """State of K independent AdamW optimizers, one row each. ``params``/``grads``/
    ``exp_avg``/``exp_avg_sq`` are (K, M); ``steps`` (K,) float64 counts the steps taken."""

    params: torch.Tensor
    grads: torch.Tensor
    exp_avg: torch.Tensor
    exp_avg_sq: torch.Tensor
    steps: torch.Tensor

    @classmethod
    def zeros_like(cls, params: torch.Tensor) -> StackedAdamW:
        k = params.shape[0]
        return cls(
            params,
            torch.zeros_like(params),
            torch.zeros_like(params),
            torch.zeros_like(params),
            torch.zeros(k, dtype=torch.float64, device=params.device),
        )

    def step(
        self,
        rows: torch.Tensor | None,
        lr: torch.Tensor,
        beta1: torch.Tensor,
        beta2: torch.Tensor,
        eps: torch.Tensor,
        weight_decay: torch.Tensor,
    ) -> None:
        """One update of the rows ``rows`` (int64 indices; None: every row). The
        hyperparameters are float64 (len(rows),) tensors, one value per updated row."""
        if rows is None:
            p, g, m, v = self.params, self.grads, self.exp_avg, self.exp_avg_sq
            self.steps += 1
            step = self.steps
        else:
            p, g = self.params[rows], self.grads[rows]
            m, v = self.exp_avg[rows], self.exp_avg_sq[rows]
            step = self.steps[rows] + 1
            self.steps[rows] = step
        dtype = p.dtype
        col = lambda t: t.to(dtype).unsqueeze(1)  # noqa: E731  (n,) -> (n, 1)
        p.mul_(col(1 - lr * weight_decay))
        m.lerp_(g, col(1 - beta1))
        v.mul_(col(beta2)).addcmul_(g, g * col(1 - beta2))
        step_size = lr / (1 - beta1**step)
        bias_correction2_sqrt = (1 - beta2**step).sqrt()
        denom = (v.sqrt() / col(bias_correction2_sqrt)).add_(col(eps))
        p.addcdiv_(m * col(-step_size), denom)
        if rows is not None:
            self.params[rows] = p
            self.exp_avg[rows] = m
            self.exp_avg_sq[rows] = v
