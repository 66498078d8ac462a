"""The packed engine (training/engines/packed.py): the same gradients as autograd, the same
dropout distribution, bit-exact resume, metrics within noise of the autograd engine, and a
trial's results independent of the trials that share its pass."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from packed_fixtures import feature_data, probe_head, probe_trainer
from torch.nn import functional as F

from tune_eegpt.training.batches import RowSubset
from tune_eegpt.training.dropout_bits import half_dropout_, keep_bits, unpack_keep
from tune_eegpt.training.engines import packed
from tune_eegpt.training.feature_rows import feature_rows
from tune_eegpt.training.train_loop import train_together

WORKER = Path(__file__).with_name("resume_worker.py")


def head_grads(engine: packed.PackedHeads, i: int, head: torch.nn.Module) -> list[torch.Tensor]:
    params = [head.probe1.weight, head.probe1.bias, head.probe2.weight, head.probe2.bias]
    chunks = engine.adamw.grads[i].split([p.numel() for p in params])
    return [c.view(p.shape) for c, p in zip(chunks, params, strict=True)]


def test_gradients_and_loss_equal_autograd_on_the_same_mask() -> None:
    trainer = probe_trainer(n=40, batch_size=16, seed=7)
    trainer.head.probe1.weight.data.mul_(4.0)  # rows above max-norm 1: the renorm must act
    reference = copy.deepcopy(trainer.head)
    trainer.epoch = 3
    engine = packed.build([trainer])
    order = np.random.default_rng(0).permutation(40)
    engine.start_epoch([order])
    assert engine.micro_batch(1, [24]) == 16  # rows 16..31 of the order
    (loss,) = engine.window_losses([0])

    # autograd on the same rows with the same mask (seed 7, epoch 3, micro-batch 1)
    x, y = trainer.train_data.get_batch(order[16:32])
    kept = (
        half_dropout_(
            x.reshape(16, -1).clone(), seed=7, epoch=3, first_batch=1, batch_rows=16
        ).float()
        * 2
    )
    reference.eval()  # no dropout of its own: the mask is applied above
    logits = reference(kept.view(x.shape).to(trainer.device))
    expected = F.binary_cross_entropy_with_logits(logits, y.to(logits.device), reduction="sum") / 24
    expected.backward()
    assert loss == pytest.approx(expected.item(), rel=1e-5, abs=1e-6)
    engine.store()
    for (name, p), q in zip(trainer.head.named_parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-7, msg=f"renormed {name}")
    for g, q in zip(head_grads(engine, 0, trainer.head), reference.parameters(), strict=True):
        torch.testing.assert_close(g, q.grad, rtol=1e-4, atol=1e-6)
    assert trainer.head.probe1.weight.norm(dim=1).max() <= 1.0 + 1e-6


def test_accumulated_micro_batches_add_their_gradients() -> None:
    trainer = probe_trainer(n=32, batch_size=16, dropout=0.0)
    trainer.head = probe_head(dropout=0.0).to(trainer.device)
    trainer.optimizer = torch.optim.AdamW(trainer.head.parameters())
    reference = copy.deepcopy(trainer.head)
    engine = packed.build([trainer])
    order = np.arange(32)
    engine.start_epoch([order])
    engine.micro_batch(0, [32])
    engine.micro_batch(1, [32])
    x, y = trainer.train_data.get_batch(order)
    logits = reference(x.float().to(trainer.device))
    (
        F.binary_cross_entropy_with_logits(logits, y.to(logits.device), reduction="sum") / 32
    ).backward()
    for g, q in zip(head_grads(engine, 0, trainer.head), reference.parameters(), strict=True):
        torch.testing.assert_close(g, q.grad, rtol=1e-4, atol=1e-6)


def test_dropout_bits_keep_each_element_with_probability_one_half() -> None:
    x = torch.ones(2000, 1000, dtype=torch.float16)
    half_dropout_(x, seed=3, epoch=1, first_batch=0)
    assert set(x.unique().tolist()) == {0.0, 1.0}  # kept values untouched, no scaling here
    kept = x.float()
    n = kept.numel()
    assert abs(kept.mean().item() - 0.5) < 4 * 0.5 / n**0.5  # 4 standard errors
    # neighbours (same byte, next byte) and rows are uncorrelated
    for a, b in ((kept[:, :-1], kept[:, 1:]), (kept[:, :-8], kept[:, 8:]), (kept[:-1], kept[1:])):
        corr = np.corrcoef(a.flatten().numpy(), b.flatten().numpy())[0, 1]
        assert abs(corr) < 4 / a.numel() ** 0.5
    # a function of (seed, epoch, micro-batch) only
    again = half_dropout_(torch.ones(2000, 1000, dtype=torch.float16), 3, 1, 0)
    for other_key in ((3, 1, 1), (3, 2, 0), (4, 1, 0)):
        other = half_dropout_(torch.ones(2000, 1000, dtype=torch.float16), *other_key)
        assert not torch.equal(other, x), other_key
    assert torch.equal(again, x)
    x32 = half_dropout_(torch.ones(5, 24), 3, 1, 0)  # float32 rows, width not a multiple of 8
    assert set(x32.unique().tolist()) == {0.0, 1.0}


def test_a_micro_batch_draws_the_same_mask_alone_or_in_a_chunk() -> None:
    # what makes masks independent of the engine's chunk size (a speed setting)
    chunk = keep_bits(4, 1, first_batch=3, rows=3 * 16 + 5, batch_rows=16, width=100)
    alone = [keep_bits(4, 1, b, rows=16, batch_rows=16, width=100) for b in (3, 4, 5)]
    short = keep_bits(4, 1, 6, rows=5, batch_rows=16, width=100)  # the epoch's last, short
    assert np.array_equal(chunk, np.concatenate([*alone, short]))
    assert not np.array_equal(alone[0], alone[1])


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32, torch.float8_e4m3fn])
def test_the_device_unpacking_draws_the_host_masks(dtype) -> None:
    # what a GPU runs (the packed bits unpacked by torch), here on a CPU, against NumPy
    bits = keep_bits(5, 2, 9, rows=7, batch_rows=7, width=83)
    expected = np.unpackbits(bits, axis=1, count=83, bitorder="little")
    assert np.array_equal(unpack_keep(torch.from_numpy(bits), 83).numpy(), expected)
    values = torch.randn(7, 83).to(dtype)
    on_host = half_dropout_(values.clone(), 5, 2, 9, host_unpack=True)
    by_table = half_dropout_(values.clone(), 5, 2, 9, host_unpack=False)
    assert torch.equal(on_host.view(torch.uint8), by_table.view(torch.uint8))
    assert torch.equal(
        on_host.float() == 0, torch.from_numpy(expected == 0) | (values.float() == 0)
    )


def test_feature_rows_of_a_row_subset_gather_what_get_batch_returns() -> None:
    data = feature_data(30)
    subset = RowSubset(data, np.arange(3, 30, 2))
    rows = feature_rows(subset)
    index = np.array([5, 0, 13, 5])
    x, y = subset.get_batch(index)
    assert torch.equal(rows.gather(torch.from_numpy(index)).view(x.shape), x)
    assert torch.equal(rows.labels[torch.from_numpy(index)], y)


def test_the_engine_is_chosen_with_its_reason() -> None:
    assert probe_trainer(n=40).engine_name == "packed"
    generic = probe_trainer(n=40, fast_path=False)
    assert generic.engine_name == "autograd" and "packed: not asked for" in generic.engine_reason
    bf16 = probe_trainer(n=40, precision="bf16")
    assert bf16.engine_name == "autograd" and "precision bf16" in bf16.engine_reason
    odd = probe_trainer(n=40)
    odd.head.drop.p = 0.3
    assert "dropout 0.3" in packed.blocker(odd)
    from probe_fixtures import toy_trainer

    assert "not a LinearProbeHead" in toy_trainer().engine_reason


# Trials that differ in everything a search varies, and in seed: each trained alone, then
# all together in passes of one engine. Their heads stay independent.
PACK = [
    dict(seed=0, max_lr=3e-3, accum_steps=1, pct_start=0.3),
    dict(seed=0, max_lr=1e-3, accum_steps=3, pct_start=0.2),  # same rows and masks as above
    dict(seed=1, max_lr=5e-3, accum_steps=2, pct_start=0.4, weight_decay=0.05),
    dict(seed=2, max_lr=2e-3, accum_steps=1, pct_start=0.25, dropout=0.0),
    dict(seed=0, max_lr=8e-4, accum_steps=2, pct_start=0.3, grad_clip=0.05),
]


def pack_trainers(data, val) -> list:
    from packed_fixtures import probe_config

    from tune_eegpt.training.trainer import ProbeTrainer

    out = []
    for settings in PACK:
        cfg = probe_config(epochs=3, batch_size=16, **settings)
        head = probe_head(settings["seed"], dropout=cfg.probe.dropout)
        out.append(ProbeTrainer(cfg, head, data, val))
    return out


def test_a_trials_results_do_not_depend_on_the_trials_that_share_its_pass() -> None:
    """Bound: weights within 1e-5 relative (float32 rounding of wider products, over 3
    epochs of ~24 AdamW steps); per-epoch metrics equal to 4 decimals."""
    data, val = feature_data(200, seed=0), feature_data(100, seed=9)
    alone = pack_trainers(data, val)
    together = pack_trainers(data, val)
    assert len({packed.pack_key(t) for t in together}) == 1
    alone_metrics = [[t.train_epoch() for _ in range(3)] for t in alone]
    together_metrics = [train_together(together) for _ in range(3)]
    for i, (a, t) in enumerate(zip(alone, together, strict=True)):
        assert a.global_step == t.global_step
        for epoch in range(3):
            mine, theirs = alone_metrics[i][epoch], together_metrics[epoch][i]
            for key in ("val_auroc", "val_bal_acc", "val_pr_auc", "train_loss", "lr"):
                assert round(mine[key], 4) == round(theirs[key], 4), (i, epoch, key)
        for (name, p), q in zip(
            a.head.state_dict().items(), t.head.state_dict().values(), strict=True
        ):
            torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-7, msg=f"trial {i} {name}")
        assert [s["lr"] for s in a.step_log] == [s["lr"] for s in t.step_log]
        losses = [s["loss"] for s in a.step_log], [s["loss"] for s in t.step_log]
        np.testing.assert_allclose(*losses, rtol=1e-5)
        sa, st = a.optimizer.state_dict()["state"], t.optimizer.state_dict()["state"]
        for k in sa:
            assert float(sa[k]["step"]) == float(st[k]["step"])
            torch.testing.assert_close(sa[k]["exp_avg"], st[k]["exp_avg"], rtol=1e-4, atol=1e-9)


def test_the_engines_validation_predictions_are_the_heads_own() -> None:
    # one product for every head of a pass instead of each head's forward over val
    data, val = feature_data(200, seed=0), feature_data(300, seed=9)
    trainers = pack_trainers(data, val)
    train_together(trainers)
    engine = packed.build(trainers)
    predicted = engine.predict_validation(range(len(trainers)))
    assert sorted(predicted) == list(range(len(trainers)))
    for i, t in enumerate(trainers):
        y, p = t.predict(val)  # the module's forward, after the engine's renorm
        np.testing.assert_array_equal(predicted[i][0], y)
        np.testing.assert_allclose(predicted[i][1], p, rtol=1e-5, atol=1e-6)


def test_trainers_that_cannot_share_a_pass_are_refused() -> None:
    data = feature_data(200)
    a = probe_trainer(n=200)
    b = probe_trainer(n=200, batch_size=32)
    with pytest.raises(ValueError, match="cannot share a pass"):
        train_together([a, b])
    del data


@pytest.mark.slow
def test_packed_resume_in_a_fresh_process_is_bit_identical(tmp_path: Path) -> None:
    # 150 rows / batch 8 = 19 micro-batches, accum 3 -> 7 steps per epoch; step 10 is in
    # the middle of epoch 2.
    for args in (("full",), ("stop", 10), ("resume",)):
        command = [sys.executable, str(WORKER), "packed", args[0], str(tmp_path)]
        command += [str(a) for a in args[1:]]
        subprocess.run(command, check=True, timeout=120)
    full = torch.load(tmp_path / "full.pt", weights_only=False)
    resumed = torch.load(tmp_path / "resume.pt", weights_only=False)
    assert [s["global_step"] for s in resumed["steps"]] == list(range(10, 21))
    assert resumed["steps"] == full["steps"][10:]  # the same LRs, losses and grad norms
    assert resumed["metrics"] == full["metrics"][1:]
    for name, value in full["head"].items():
        assert torch.equal(resumed["head"][name], value), name


@pytest.mark.slow
def test_packed_engine_reaches_the_autograd_engines_auroc_within_noise() -> None:
    """The packed engine draws other dropout bits and sums in another order than the
    autograd engine, the reference (``fast_path=False``). Over 8 seeds (800 training rows,
    6 epochs, batch 32, 2,000 validation rows each), the mean validation AUROC of the two
    agrees within 0.005."""
    fast, generic = [], []
    for seed in range(8):
        for fast_path, out in ((True, fast), (False, generic)):
            trainer = probe_trainer(
                n=800, n_val=2000, seed=seed, fast_path=fast_path, epochs=6, batch_size=32
            )
            while not trainer.finished:
                metrics = trainer.train_epoch()
            out.append(metrics["val_auroc"])
    assert 0.7 < np.mean(generic) < 0.9  # a problem where the AUROC can move
    assert abs(np.mean(fast) - np.mean(generic)) <= 0.005, (fast, generic)
