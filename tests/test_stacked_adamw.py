"""The hand-written AdamW over stacked heads (training/stacked_adamw.py), step by step
against ``torch.optim.AdamW`` driven by ``OneCycleLR`` with cycled momentum (beta1 moves
every step), with per-row hyperparameters and per-row step times."""

from __future__ import annotations

import numpy as np
import torch

from tune_eegpt.training.stacked_adamw import StackedAdamW

STEPS = 60


def torch_runs(settings, grads):
    """Each row's parameters under its own torch AdamW and OneCycleLR; returns the
    parameter values after every step of that row."""
    out = []
    for row, s in enumerate(settings):
        p = torch.nn.Parameter(torch.linspace(-1, 1, 37) * (row + 1))
        opt = torch.optim.AdamW([p], lr=s["max_lr"], eps=s["eps"], weight_decay=s["wd"])
        sched = torch.optim.lr_scheduler.OneCycleLR(
            opt, max_lr=s["max_lr"], total_steps=STEPS, pct_start=s["pct"], cycle_momentum=True
        )
        values = []
        for step in range(STEPS // s["every"]):
            p.grad = grads[row][step].clone()
            opt.step()
            sched.step()
            values.append(p.detach().clone())
        out.append((values, opt, sched))
    return out


def test_stacked_rows_follow_torch_adamw_with_cycled_betas_step_by_step() -> None:
    settings = [
        dict(max_lr=3e-3, pct=0.3, eps=1e-8, wd=0.01, every=1),
        dict(max_lr=1e-2, pct=0.2, eps=1e-6, wd=0.0, every=2),  # steps on every other tick
        dict(max_lr=5e-4, pct=0.5, eps=1e-8, wd=0.1, every=3),
    ]
    gen = torch.Generator().manual_seed(0)
    grads = [[torch.randn(37, generator=gen) * 0.1 for _ in range(STEPS)] for _ in settings]
    expected = torch_runs(settings, grads)

    params = torch.stack([torch.linspace(-1, 1, 37) * (r + 1) for r in range(len(settings))])
    adamw = StackedAdamW.zeros_like(params)
    # schedules of their own, on throwaway optimizers: the lr and beta1 each row steps at
    schedules = []
    for s in settings:
        opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=s["max_lr"])
        sched = torch.optim.lr_scheduler.OneCycleLR(
            opt, max_lr=s["max_lr"], total_steps=STEPS, pct_start=s["pct"], cycle_momentum=True
        )
        schedules.append((opt, sched))
    taken = [0] * len(settings)
    betas_seen = set()
    for tick in range(STEPS):
        rows = [r for r, s in enumerate(settings) if (tick + 1) % s["every"] == 0]
        for r in rows:
            adamw.grads[r] = grads[r][taken[r]]
        groups = [schedules[r][0].param_groups[0] for r in rows]
        hyper = np.array(
            [
                [g["lr"], g["betas"][0], g["betas"][1], settings[r]["eps"], settings[r]["wd"]]
                for r, g in zip(rows, groups, strict=True)
            ]
        )
        betas_seen.update(g["betas"][0] for g in groups)
        adamw.step(np.array(rows) if len(rows) < len(settings) else None, hyper)
        for r in rows:
            schedules[r][0].step()
            schedules[r][1].step()
            want = expected[r][0][taken[r]]
            # float32 rounding of another association of the same products
            torch.testing.assert_close(adamw.params[r], want, rtol=2e-6, atol=1e-7)
            taken[r] += 1
    assert len(betas_seen) > 20  # beta1 really cycled
    for r, (_, opt, _) in enumerate(expected):
        state = opt.state[opt.param_groups[0]["params"][0]]
        assert float(state["step"]) == adamw.steps[r] == STEPS // settings[r]["every"]
        torch.testing.assert_close(adamw.exp_avg[r], state["exp_avg"], rtol=1e-5, atol=1e-9)
        torch.testing.assert_close(adamw.exp_avg_sq[r], state["exp_avg_sq"], rtol=1e-5, atol=1e-12)
