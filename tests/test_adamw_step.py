"""DirectAdamW (training/adamw_step.py): the same update as AdamW(fused=True).step(),
bit for bit, also across a state_dict round trip."""

from __future__ import annotations

import copy

import torch

from tune_eegpt.training.adamw_step import DirectAdamW


def _pair() -> tuple[torch.nn.Module, torch.optim.AdamW]:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 4), torch.nn.Linear(4, 1))
    opt = torch.optim.AdamW(model.parameters(), lr=0.01, weight_decay=0.05, fused=True)
    return model, opt


def _set_grads(model: torch.nn.Module, step: int) -> None:
    gen = torch.Generator().manual_seed(step)
    for p in model.parameters():
        p.grad = torch.randn(p.shape, generator=gen)


def test_direct_steps_equal_optimizer_steps_bit_for_bit() -> None:
    ref_model, ref_opt = _pair()
    model = copy.deepcopy(ref_model)
    opt = torch.optim.AdamW(model.parameters(), lr=0.01, weight_decay=0.05, fused=True)
    direct = DirectAdamW(opt)
    assert direct.applies
    for step in range(6):
        lr = 0.01 * (step + 1) / 6  # the lr changes every step, as under OneCycleLR
        for o in (ref_opt, opt):
            o.param_groups[0]["lr"] = lr
        _set_grads(ref_model, step)
        _set_grads(model, step)
        ref_opt.step()
        direct.step()
    for p, q in zip(model.parameters(), ref_model.parameters(), strict=True):
        assert torch.equal(p, q)
        for key in ("exp_avg", "exp_avg_sq", "step"):
            assert torch.equal(opt.state[p][key], ref_opt.state[q][key]), key

    # a fresh optimizer loading the state continues on the direct path, bit for bit
    resumed = torch.optim.AdamW(model.parameters(), lr=0.01, weight_decay=0.05, fused=True)
    resumed.load_state_dict(copy.deepcopy(opt.state_dict()))
    direct = DirectAdamW(resumed)
    _set_grads(ref_model, 99)
    _set_grads(model, 99)
    ref_opt.step()
    direct.step()
    for p, q in zip(model.parameters(), ref_model.parameters(), strict=True):
        assert torch.equal(p, q)
    assert resumed.state[next(model.parameters())]["step"].item() == 7


def test_other_optimizers_are_not_taken_directly() -> None:
    model, _ = _pair()
    params = list(model.parameters())
    assert not DirectAdamW(torch.optim.AdamW(params, fused=True, amsgrad=True)).applies
    assert not DirectAdamW(torch.optim.AdamW(params, foreach=True)).applies
    assert not DirectAdamW(torch.optim.Adam(params, fused=True)).applies
