"""The fused step's sync-free queue (training/device_steps.py), the path a GPU takes, run
here on a CPU: the same steps, losses, grad norms and weights as the per-step fused path,
bit for bit; divergence found at the same step; CUDA graphs where a GPU is present. Its
resume in a fresh process is tested with the fused path's (test_fused_probe.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from fused_fixtures import probe_trainer
from tune_eegpt.training import device_steps
from tune_eegpt.training.step_log import read_steps_csv
from tune_eegpt.training.trainer import Diverged

# 200 rows / batch 16 = 13 micro-batches; accum 3 -> 5 steps per epoch, the last window a
# single micro-batch of 8 rows
SETTINGS = dict(n=200, batch_size=16, accum_steps=3, epochs=3, max_lr=3e-3)


def _train(trainer) -> list[dict[str, float]]:
    metrics = []
    while not trainer.finished:
        metrics.append(trainer.train_epoch())
    return metrics


@pytest.mark.parametrize("grad_clip", [None, 0.05])
def test_the_queue_trains_exactly_as_the_per_step_path(grad_clip, monkeypatch) -> None:
    monkeypatch.setattr(device_steps, "LOG_SLOTS", 4)  # forced flushes mid-epoch too
    runs = []
    for defer in (False, True):
        trainer = probe_trainer(defer_sync=defer, grad_clip=grad_clip, **SETTINGS)
        assert (trainer.device_steps is not None) == defer
        runs.append((_train(trainer), trainer))
    (m_step, step), (m_queue, queue) = runs
    assert queue.optimizer.param_groups[0]["capturable"] is False  # nothing to capture on a CPU
    assert len(queue.step_log) == 15
    assert queue.step_log == step.step_log  # every lr, loss and grad norm, exactly
    assert m_queue == m_step  # train_loss, lr, val metrics of every epoch
    for name, value in step.head.state_dict().items():
        assert torch.equal(queue.head.state_dict()[name], value), name
    if grad_clip:  # the clip acted: some raw norms were above it
        assert max(r["grad_norm"] for r in queue.step_log) > grad_clip


def test_a_nan_loss_stops_the_queue_at_the_step_the_per_step_path_stops() -> None:
    found = []
    for defer in (False, True):
        trainer = probe_trainer(defer_sync=defer, **{**SETTINGS, "max_lr": 1e30})
        with pytest.raises(Diverged, match=r"at global_step \d+") as caught:
            _train(trainer)
        found.append((str(caught.value), trainer.global_step, trainer.step_log, trainer.diverged))
    assert found[1] == found[0]
    assert found[1][3] is True and found[1][1] == len(found[1][2]) > 0


def test_on_step_hears_of_the_first_step_at_once_and_of_every_step_in_order() -> None:
    trainer = probe_trainer(defer_sync=True, **SETTINGS)
    heard = []
    trainer.train_epoch(on_step=lambda t: heard.append((t.global_step, len(t.step_log))))
    # first flush right after step 1; the other four are read back at the end of the epoch
    assert heard[0] == (1, 1)
    assert [n for _, n in heard] == [1, 2, 3, 4, 5]


def test_a_checkpoint_mid_epoch_holds_the_queued_steps(tmp_path: Path) -> None:
    trainer = probe_trainer(defer_sync=True, log_dir=tmp_path, checkpoint_every_steps=2, **SETTINGS)
    trainer.train_epoch(stop_at_step=4)
    state = torch.load(sorted((tmp_path / "checkpoints").glob("step-*.pt"))[-1], weights_only=True)
    assert state["global_step"] == 4 and state["epoch_loss_steps"] == 4
    assert state["epoch_loss_sum"] == pytest.approx(sum(r["loss"] for r in trainer.step_log))
    logged = read_steps_csv(tmp_path / "steps.csv")
    assert [int(r["global_step"]) for r in logged] == [0, 1, 2, 3]


def test_capture_needs_a_cuda_device_and_the_switch() -> None:
    trainer = probe_trainer(defer_sync=True, **SETTINGS)
    assert "CUDA graphs need a CUDA device" in trainer.device_steps.capture_skipped_because
    off = probe_trainer(defer_sync=True, cuda_graphs=False, **SETTINGS)
    assert "train.cuda_graphs=false" in off.device_steps.capture_skipped_because
    assert probe_trainer(**SETTINGS).device_steps is None  # a CPU's default: per-step syncs


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU")
def test_graph_replays_equal_eager_launches_on_a_gpu() -> None:
    runs = []
    for graphs in (False, True):
        trainer = probe_trainer(
            defer_sync=True, device="cuda", cuda_graphs=graphs, **{**SETTINGS, "n": 400}
        )
        runs.append((_train(trainer), trainer))
    (m_eager, eager), (m_graph, graph) = runs
    assert graph.device_steps.capture_skipped_because is None
    assert sorted(graph.device_steps._graphs) == ["first", "next", "step"]
    assert graph.optimizer.param_groups[0]["capturable"] is True
    assert m_graph == m_eager
    assert graph.step_log == eager.step_log
    for name, value in eager.head.state_dict().items():
        assert torch.equal(graph.head.state_dict()[name], value), name
