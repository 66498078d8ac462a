"""Run by test_resume and test_fused_probe in fresh processes: train a probe whole, or stop
it at a step and resume it from its checkpoint.

Usage: resume_worker.py [fused|deferred] MODE OUT [STOP_STEP]. Without a path: the toy
probe of probe_fixtures (generic autograd path); ``fused``: a probe on feature rows that
takes the fused step (fused_fixtures); ``deferred``: the same through the sync-free queue
a GPU uses (training/device_steps.py)."""

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from fused_fixtures import probe_trainer  # noqa: E402
from probe_fixtures import toy_trainer  # noqa: E402

args = sys.argv[1:]
fused = args[0] in ("fused", "deferred")
mode, out, *stop = args[1:] if fused else args
out = Path(out)
if fused:
    defer = args[0] == "deferred"
    settings = dict(n=150, batch_size=8, accum_steps=3, epochs=3, log_dir=out / "run")
    trainer = probe_trainer(defer_sync=defer, **settings)
    assert trainer.fused is not None, trainer.fused_skipped_because
    assert (trainer.device_steps is not None) == defer
else:
    settings = dict(n=70, batch_size=8, accum_steps=3, epochs=4, dropout=0.3, log_dir=out / "run")
    trainer = toy_trainer(**settings)
if mode == "stop":
    trainer.train_epoch()
    trainer.train_epoch(stop_at_step=int(stop[0]))  # stops mid-epoch (mid-chunk when fused)
    trainer.save_checkpoint(out / "ckpt")
    sys.exit(0)
if mode == "resume":
    trainer.load_checkpoint(out / "ckpt")
metrics = []
while not trainer.finished:
    metrics.append(trainer.train_epoch())
torch.save(
    {
        "head": trainer.head.state_dict(),
        "steps": trainer.step_log,
        "metrics": metrics,
        "global_step": trainer.global_step,
    },
    out / f"{mode}.pt",
)
