"""Run by test_fused_probe in fresh processes: the fused path trained whole, or stopped at
a step and resumed from its checkpoint. Usage: fused_resume_worker.py MODE OUT [STOP_STEP]."""

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from fused_fixtures import probe_trainer  # noqa: E402

mode, out = sys.argv[1], Path(sys.argv[2])
trainer = probe_trainer(n=150, batch_size=8, accum_steps=3, epochs=3, log_dir=out / "run")
assert trainer.fused is not None, trainer.fused_skipped_because
if mode == "stop":
    trainer.train_epoch()
    trainer.train_epoch(stop_at_step=int(sys.argv[3]))  # mid-epoch, mid-chunk
    trainer.save_checkpoint(out / "ckpt")
    sys.exit(0)
if mode == "resume":
    trainer.load_checkpoint(out / "ckpt")
metrics = []
while not trainer.finished:
    metrics.append(trainer.train_epoch())
torch.save(
    {"head": trainer.head.state_dict(), "steps": trainer.step_log, "metrics": metrics},
    out / f"{mode}.pt",
)
