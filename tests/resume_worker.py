"""Run by test_resume and test_packed_engine in fresh processes: train a probe whole, or stop
it at a step and resume it from its checkpoint.

Usage: resume_worker.py [packed] MODE OUT [STOP_STEP]. Without ``packed``: the toy probe
of probe_fixtures (the autograd engine); ``packed``: a probe on feature rows that takes
the packed engine (packed_fixtures)."""

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from packed_fixtures import probe_trainer  # noqa: E402

from probe_fixtures import toy_trainer  # noqa: E402

args = sys.argv[1:]
packed = args[0] == "packed"
mode, out, *stop = args[1:] if packed else args
out = Path(out)
if packed:
    settings = dict(n=150, batch_size=8, accum_steps=3, epochs=3, log_dir=out / "run")
    trainer = probe_trainer(**settings)
    assert trainer.engine_name == "packed", trainer.engine_reason
else:
    settings = dict(n=70, batch_size=8, accum_steps=3, epochs=4, dropout=0.3, log_dir=out / "run")
    trainer = toy_trainer(**settings)
if mode == "stop":
    trainer.train_epoch()
    trainer.train_epoch(stop_at_step=int(stop[0]))  # stops mid-epoch
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
