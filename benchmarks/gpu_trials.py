"""Many probe trials sharing one copy of the features on one GPU: rows/s per trial and in
all, GPU memory per trial, and the ratio to the GPU's memory-bandwidth floor.

    python benchmarks/gpu_trials.py --rows 747000 --trials 1 16 --epochs 2 \
        [--graphs on|off] [--feature-dtype float16|float8_e4m3] [--json FILE]

A holder process fills a (rows, 16 x 4 x 512) float16 feature table on the GPU (random
values, TUAB's train split size by default: 747k rows = 49 GB) and hands out CUDA IPC
handles (tune_eegpt.training.device_features.export_rows), as the per-GPU holder actor
does in a search. For each N in ``--trials``, N trial processes open the same table and
run the real ``ProbeTrainer`` (fused probe step, default probe, ``--batch-size``) for
``--epochs`` epochs at the same time; each reports its epoch seconds (CUDA-synchronised)
and its own peak GPU memory (the shared table is not counted: the holder allocated it).
The floor: reading the table once at the bandwidth of a device-to-device copy.
``--graphs off`` launches every kernel of the sync-free step queue eagerly instead of
replaying CUDA graphs (``train.cuda_graphs``; training/device_steps.py): the comparison
says what the capture buys.

``--device cpu`` runs the same logic with a shared-memory table (a small smoke test of
the script; CPU timings say nothing about a GPU). ``--feature-dtype float8_e4m3`` stores
the table as float8 (``model.feature_dtype``): half the bytes per row.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.multiprocessing as mp

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tune_eegpt.config import RunConfig  # noqa: E402
from tune_eegpt.models.probe import LinearProbeHead  # noqa: E402
from tune_eegpt.training.device_features import export_rows, import_rows  # noqa: E402
from tune_eegpt.training.feature_rows import FeatureRows  # noqa: E402
from tune_eegpt.training.trainer import ProbeTrainer  # noqa: E402

SHAPE = (16, 4, 512)  # the large encoder's features per window
DTYPES = {"float16": torch.float16, "float8_e4m3": torch.float8_e4m3fn}  # model.feature_dtype


def make_table(rows: int, device: str, dtype: torch.dtype = torch.float16) -> FeatureRows:
    width = SHAPE[0] * SHAPE[1] * SHAPE[2]
    item = torch.empty(0, dtype=dtype).element_size()
    table = torch.empty(rows, width * item, dtype=torch.uint8, device=device)
    generator = torch.Generator(device=device).manual_seed(0)
    for start in range(0, rows, 8192):
        part = table[start : start + 8192].view(dtype)
        values = torch.randn(part.shape, generator=generator, device=device)
        part.copy_(values.to(dtype))
    labels = (torch.rand(rows, generator=generator, device=device) < 0.5).float()
    index = torch.arange(rows, device=device)
    if device == "cpu":
        for t in (table, labels, index):
            t.share_memory_()
    return FeatureRows(table, index, labels, dtype, SHAPE, "benchmark")


def holder(rows: int, device: str, dtype: str, exports, stop) -> None:
    table = make_table(rows, device, DTYPES[dtype])
    if device == "cuda":
        torch.cuda.synchronize()
        copy = torch.empty_like(table.table[: min(rows, 65536)])
        for _ in range(2):
            torch.cuda.synchronize()
            start = time.perf_counter()
            copy.copy_(table.table[: len(copy)])
            torch.cuda.synchronize()
            seconds = time.perf_counter() - start
        bandwidth = 2 * copy.numel() / seconds  # read + write bytes per second
    else:
        bandwidth = float("nan")
    for _ in range(64):
        exports.put((export_rows(table, "benchmark"), bandwidth))
    stop.get()


def trial(
    exported, device: str, epochs: int, batch_size: int, graphs: bool, ready, go, results
) -> None:
    rows = import_rows(exported)
    settings = {"device": device, "epochs": epochs + 1, "batch_size": batch_size}
    cfg = RunConfig().with_overrides(
        {**settings, "encoder": "none", "cuda_graphs": graphs}, source="benchmark"
    )
    torch.manual_seed(0)
    head = LinearProbeHead(SHAPE[0], SHAPE[2], num_summary=SHAPE[1])
    trainer = ProbeTrainer(cfg, head, rows, None)
    assert trainer.fused is not None, trainer.fused_skipped_because
    queue = trainer.device_steps
    capture = "no queue" if queue is None else queue.capture_skipped_because or "captured"
    trainer.train_epoch(stop_at_step=20)  # warm-up: kernels, allocator, graph capture
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    ready.put(1)
    go.get()
    seconds = []
    trainer.batch_in_epoch = 0  # whole epochs from here (the warm-up steps are not timed)
    for _ in range(epochs):
        sync()
        start = time.perf_counter()
        trainer.train_epoch()
        sync()
        seconds.append(time.perf_counter() - start)
    peak = torch.cuda.max_memory_allocated() if device == "cuda" else 0
    results.put({"epoch_s": seconds, "peak_bytes": peak, "capture": capture})


def main() -> None:
    parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=747_000)
    parser.add_argument("--trials", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    parser.add_argument("--graphs", choices=["on", "off"], default="on")
    parser.add_argument("--feature-dtype", choices=sorted(DTYPES), default="float16")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    ctx = mp.get_context("spawn")
    exports, stop = ctx.Queue(), ctx.Queue()
    keeper = ctx.Process(
        target=holder, args=(args.rows, args.device, args.feature_dtype, exports, stop)
    )
    keeper.start()
    item = torch.empty(0, dtype=DTYPES[args.feature_dtype]).element_size()
    width_bytes = SHAPE[0] * SHAPE[1] * SHAPE[2] * item
    table_gb = args.rows * width_bytes / 1e9
    report = {
        "rows": args.rows,
        "table_gb": table_gb,
        "batch_size": args.batch_size,
        "graphs": args.graphs,
        "feature_dtype": args.feature_dtype,
        "runs": [],
    }
    try:
        for n in args.trials:
            ready, go, results = ctx.Queue(), ctx.Queue(), ctx.Queue()
            procs = []
            for _ in range(n):
                exported, bandwidth = exports.get(timeout=600)
                p = ctx.Process(
                    target=trial,
                    args=(
                        exported,
                        args.device,
                        args.epochs,
                        args.batch_size,
                        args.graphs == "on",
                        ready,
                        go,
                        results,
                    ),
                )
                p.start()
                procs.append(p)
            for _ in procs:
                ready.get(timeout=600)
            start = time.perf_counter()
            for _ in procs:
                go.put(1)
            outcomes = [results.get(timeout=900) for _ in procs]
            wall = time.perf_counter() - start
            for p in procs:
                p.join(timeout=60)
            epoch_s = statistics.median(s for o in outcomes for s in o["epoch_s"])
            floor_s = args.rows * width_bytes / bandwidth
            run = {
                "trials": n,
                "epoch_s_per_trial": epoch_s,
                "rows_per_s_per_trial": args.rows / epoch_s,
                "rows_per_s_all": n * args.rows * args.epochs / wall,
                "peak_gib_per_trial": max(o["peak_bytes"] for o in outcomes) / 2**30,
                "bandwidth_gb_s": bandwidth / 1e9,
                "epoch_over_bandwidth_floor": epoch_s / floor_s,
                "capture": sorted({o["capture"] for o in outcomes}),
            }
            report["runs"].append(run)
            print(
                f"{n:3d} trials: epoch {epoch_s:7.2f} s per trial, "
                f"{run['rows_per_s_per_trial']:9.0f} rows/s per trial, "
                f"{run['rows_per_s_all']:10.0f} rows/s in all, "
                f"{run['peak_gib_per_trial']:.2f} GiB own peak per trial, "
                f"{run['epoch_over_bandwidth_floor']:.0f}x the bandwidth floor "
                f"({table_gb:.1f} GB at {bandwidth / 1e9:.0f} GB/s); graphs: {run['capture']}",
                flush=True,
            )
    finally:
        stop.put(1)
        keeper.join(timeout=60)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
