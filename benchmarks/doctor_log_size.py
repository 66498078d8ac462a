"""How the schedule doctor's time and memory grow with the log: a TensorBoard run of N
optimizer steps, one LR scalar per step, read and diagnosed end to end.

    python benchmarks/doctor_log_size.py [--steps 10000 100000 1000000] [--json FILE]

Each log is written by torch.utils.tensorboard's SummaryWriter with the LR that torch's own
OneCycleLR gives at every step (max_lr 1e-3, the default pct_start and div factors), so the
doctor reads exactly what a real run of that length writes. The figure is the wall time and
peak memory of ``python -m tune_eegpt.doctor FOLDER`` in a fresh process (imports included),
and, split out, the in-process time of the read (TensorBoard's EventAccumulator) and of
the checks on what was read.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.tensorboard import SummaryWriter

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tune_eegpt.doctor.findings import Hints, examine_series  # noqa: E402
from tune_eegpt.doctor.inputs import read_inputs  # noqa: E402


def write_log(folder: Path, steps: int) -> float:
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1e-3)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=1e-3, total_steps=steps)
    writer = SummaryWriter(str(folder), max_queue=10_000, flush_secs=600)
    start = time.perf_counter()
    for step in range(steps):
        writer.add_scalar("train/lr", opt.param_groups[0]["lr"], step)
        opt.step()
        sched.step()
    writer.close()
    return time.perf_counter() - start


def cli_run(folder: Path) -> tuple[float, float, str]:
    """Wall seconds, peak RSS (MB) and the verdict of the doctor in a fresh process."""
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "tune_eegpt.doctor", str(folder)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    wall = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return wall, peak, proc.stdout.strip().splitlines()[-1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    p.add_argument("--steps", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    p.add_argument("--json", help="write the figures here too")
    args = p.parse_args()
    rows = []
    print(
        f"{'steps':>9} {'file MB':>8} {'write s':>8} {'read s':>7} {'checks s':>8} "
        f"{'cli s':>6} {'peak MB':>8}  verdict"
    )
    for steps in sorted(args.steps):  # ascending: RUSAGE_CHILDREN's peak is a running max
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp) / "run"
            written = write_log(folder, steps)
            size = sum(f.stat().st_size for f in folder.iterdir()) / 1e6
            start = time.perf_counter()
            (series,), _ = read_inputs([str(folder)])
            read = time.perf_counter() - start
            start = time.perf_counter()
            examine_series(series, Hints())
            checks = time.perf_counter() - start
            wall, peak, verdict = cli_run(folder)
        row = {
            "steps": steps,
            "file_mb": round(size, 1),
            "write_s": round(written, 1),
            "read_s": round(read, 2),
            "checks_s": round(checks, 2),
            "cli_s": round(wall, 2),
            "peak_mb": round(peak),
            "verdict": verdict,
        }
        rows.append(row)
        print(
            f"{steps:>9} {size:>8.1f} {written:>8.1f} {read:>7.2f} {checks:>8.2f} "
            f"{wall:>6.2f} {peak:>8.0f}  {verdict}",
            flush=True,
        )
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
