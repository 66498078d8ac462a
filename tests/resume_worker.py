"""Run by test_resume in fresh processes: train the same toy probe whole, or stop it at a
step and resume it from its checkpoint. Usage: resume_worker.py MODE OUT [STOP_STEP]."""

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from probe_fixtures import toy_trainer  # noqa: E402

mode, out = sys.argv[1], Path(sys.argv[2])
settings = dict(n=70, batch_size=8, accum_steps=3, epochs=4, dropout=0.3, log_dir=out / "run")
trainer = toy_trainer(**settings)
if mode == "stop":
    trainer.train_epoch()
    trainer.train_epoch(stop_at_step=int(sys.argv[3]))  # stops mid-epoch
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
