import subprocess
import sys
from pathlib import Path

import pytest
import torch

WORKER = Path(__file__).with_name("resume_worker.py")


def run_worker(*args):
    subprocess.run([sys.executable, str(WORKER), *map(str, args)], check=True, timeout=120)


@pytest.mark.slow
def test_resume_in_a_fresh_process_is_bit_identical(tmp_path):
    # 70 rows / batch 8 = 9 batches, accum 3 -> 3 steps per epoch; stop at step 5 is
    # in the middle of epoch 2, with dropout drawing from the restored RNG afterwards.
    run_worker("full", tmp_path)
    run_worker("stop", tmp_path, 5)
    run_worker("resume", tmp_path)
    full = torch.load(tmp_path / "full.pt", weights_only=False)
    resumed = torch.load(tmp_path / "resume.pt", weights_only=False)
    assert resumed["global_step"] == full["global_step"] == 12
    assert [s["global_step"] for s in resumed["steps"]] == list(range(5, 12))
    assert resumed["steps"] == full["steps"][5:]  # the same LRs, losses and grad norms
    assert resumed["metrics"] == full["metrics"][1:]  # epochs 2..4, validation included
    for name, value in full["head"].items():
        assert torch.equal(resumed["head"][name], value), name
