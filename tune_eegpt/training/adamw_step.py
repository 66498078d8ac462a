"""``AdamW(fused=True).step()`` without its Python wrapper, for the fused probe step.

``optimizer.step()`` spends ~40-90 us per call on one CPU thread around a kernel that
takes a few: the profiler hooks, step hooks, grouping the tensors by device and dtype,
re-collecting the state lists. The fused probe takes 32 such steps per epoch on the
default corpus, so that wrapper alone was ~10 % of an epoch. ``DirectAdamW.step`` makes
the same two calls the wrapper ends in (``_foreach_add_`` on the step counters, then
``_fused_adamw_`` with the group's current lr, betas, eps and weight decay) on the
optimizer's own state tensors, so the update is bit-identical to ``optimizer.step()`` and
the optimizer's ``state_dict`` (checkpoints, resume) is untouched.

It applies to one param group of AdamW(fused=True) without amsgrad, maximize or
differentiable (capturable is fine: its step counters live on the parameters' device,
where the same two calls update them; training/device_steps.py captures them in a CUDA
graph); anything else, and any step before the state exists (the first one, or
a parameter without a gradient), goes through ``optimizer.step()``.
Step hooks registered on the optimizer are not called on the direct path.
"""

from __future__ import annotations

import torch

_PLAIN = {
    "amsgrad": False,
    "maximize": False,
    "differentiable": False,
    "decoupled_weight_decay": True,
}


class DirectAdamW:
    def __init__(self, optimizer: torch.optim.AdamW) -> None:
        self.optimizer = optimizer
        groups = optimizer.param_groups
        self.applies = (
            type(optimizer) is torch.optim.AdamW
            and len(groups) == 1
            and groups[0].get("fused") is True
            and all(groups[0].get(k) == v for k, v in _PLAIN.items())
            and hasattr(torch, "_fused_adamw_")
        )

    def step(self, lr: torch.Tensor | None = None) -> None:
        """One update with the group's lr, or with ``lr`` (a float32 tensor on the
        parameters' device, which a captured step reads at replay)."""
        group = self.optimizer.param_groups[0]
        lists = self._state_lists(group["params"]) if self.applies else None
        if lists is None:
            self.optimizer.step()
            return
        params, grads, exp_avgs, exp_avg_sqs, steps = lists
        beta1, beta2 = group["betas"]
        torch._foreach_add_(steps, 1)
        torch._fused_adamw_(
            params,
            grads,
            exp_avgs,
            exp_avg_sqs,
            [],
            steps,
            amsgrad=False,
            lr=group["lr"] if lr is None else lr,
            beta1=beta1,
            beta2=beta2,
            weight_decay=group["weight_decay"],
            eps=group["eps"],
            maximize=False,
            grad_scale=None,
            found_inf=None,
        )

    def _state_lists(self, params: list[torch.Tensor]) -> tuple | None:
        """The kernel's argument lists (a dozen dict look-ups: rebuilt every step, so a
        ``load_state_dict`` is never missed); None while some parameter has no state yet
        or no gradient."""
        state = self.optimizer.state
        entries = [state.get(p) for p in params]
        grads = [p.grad for p in params]
        if not all(entries) or any(g is None for g in grads):
            return None
        return (
            params,
            grads,
            [e["exp_avg"] for e in entries],
            [e["exp_avg_sq"] for e in entries],
            [e["step"] for e in entries],
        )
