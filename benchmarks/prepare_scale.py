"""How preparation cost grows with the corpus and with the workers (Ray decode stage).

    python benchmarks/prepare_scale.py [--scales 1 2 4] [--workers 1 2] [--workdir DIR]

For each scale k, writes a synthetic TUAB-like corpus of k x the default corpus's subjects
(60: ~3.6 h of EEG), then, for each worker count n, prepares its window cache from scratch
on a real Ray cluster of one machine (``ray.cluster_utils.Cluster``: a head with 0 CPUs and
n worker nodes of 1 CPU each; every recording one Ray task), each run in a fresh process.
Prints per run: wall time, hours of EEG per minute per core, peak RSS of the driver and of
the largest decode worker, cache bytes; then the extrapolation to TUAB on 64 cores and the
encoder stage per GPU from the GPU figures in benchmarks/README.md.

Figures: benchmarks/README.md, section 8. On a machine with few cores, n workers > cores
measures contention, not scaling.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tune_eegpt.config import DataConfig

DEFAULT_SUBJECTS = DataConfig.synthetic_subjects  # the embedded default corpus
TUAB_HOURS = 1_141  # train ~1,038 h + eval ~103 h (docs/reference: EEGPT_AND_TUAB)
TUAB_WINDOWS = 1_030_000
# benchmarks/README.md, section 5: large encoder, bf16, batch 256, one H200
LARGE_BF16_WINDOWS_PER_S = 11_566


def main() -> None:
    parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.splitlines()[0])
    parser.add_argument("--scales", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--workdir", help="corpus and caches go here (default: a temp dir)")
    parser.add_argument("--json", help="write the rows to this file too")
    parser.add_argument(
        "--one", nargs=3, metavar=("CORPUS", "OUT", "WORKERS"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(Path(args.one[0]), Path(args.one[1]), int(args.one[2]))))
        return
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="tune-eegpt-scale-"))
    rows = []
    try:
        for scale in args.scales:
            corpus, hours, gen_s = write_corpus(workdir, scale)
            print(
                f"scale {scale}x: {hours:.1f} h of EEG, corpus written in {gen_s:.0f} s", flush=True
            )
            for n in args.workers:
                out = workdir / f"cache-{scale}x-{n}w"
                done = subprocess.run(
                    [sys.executable, __file__, "--one", str(corpus), str(out), str(n)],
                    check=True,
                    capture_output=True,
                    text=True,
                )
                row = {"scale": scale, "workers": n, **json.loads(done.stdout.splitlines()[-1])}
                rows.append(row)
                print(format_row(row), flush=True)
                shutil.rmtree(out, ignore_errors=True)
            shutil.rmtree(corpus, ignore_errors=True)
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    print(table(rows))
    print(extrapolate(rows))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")


def write_corpus(workdir: Path, scale: int) -> tuple[Path, float, float]:
    from tune_eegpt.data import SyntheticSpec, write_synthetic_corpus

    corpus = workdir / f"corpus-{scale}x"
    started = time.perf_counter()
    plan = write_synthetic_corpus(corpus, SyntheticSpec(subjects=DEFAULT_SUBJECTS * scale))
    return corpus, plan["duration_s"].sum() / 3600, time.perf_counter() - started


def run_one(corpus: Path, out: Path, workers: int) -> dict:
    """One prepare on a fresh one-machine cluster of ``workers`` 1-CPU nodes."""
    import ray
    from ray.cluster_utils import Cluster

    from tune_eegpt.config import DataConfig
    from tune_eegpt.data import build_window_cache
    from tune_eegpt.prepare_on_ray import ray_runner

    # keep this cluster's address out of /tmp/ray, where other Ray users would find it
    ray._private.utils.write_ray_address = lambda *a, **k: None
    ray._common.utils.reset_ray_address = lambda *a, **k: None
    cluster = Cluster(
        initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False}
    )
    for _ in range(workers):
        cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, configure_logging=False, log_to_driver=False)
    try:
        runner = ray_runner()
        started = time.perf_counter()
        result = build_window_cache(
            DataConfig(), corpus, out, runner=runner, progress=False, verbose=False
        )
        wall = time.perf_counter() - started
    finally:
        ray.shutdown()
        cluster.shutdown()
    cache_bytes = sum(p.stat().st_size for p in Path(result.path).rglob("*") if p.is_file())
    per_node = {}
    for r in runner.results:
        per_node[r["node"]] = per_node.get(r["node"], 0) + 1
    return {
        "hours": result.manifest["hours_read"],
        "recordings": len(runner.results),
        "windows": result.manifest["windows"],
        "wall_s": round(wall, 2),
        "driver_peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "worker_peak_rss_mb": round(max(r["peak_rss_mb"] for r in runner.results)),
        "cache_mb": round(cache_bytes / 1e6, 1),
        "recordings_per_node": sorted(per_node.values()),
    }


def format_row(row: dict) -> str:
    rate = row["hours"] / (row["wall_s"] / 60) / row["workers"]
    return (
        f"{row['scale']}x, {row['workers']} worker(s): {row['hours']:.1f} h, "
        f"{row['windows']} windows in {row['wall_s']:.1f} s = {rate:.2f} h/min/core; "
        f"driver {row['driver_peak_rss_mb']} MB, worker {row['worker_peak_rss_mb']} MB, "
        f"cache {row['cache_mb']} MB, recordings per node {row['recordings_per_node']}"
    )


def table(rows: list[dict]) -> str:
    lines = [
        "| corpus | hours of EEG | workers | wall s | h EEG / min / core | driver peak RSS MB "
        "| worker peak RSS MB | cache MB |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        rate = r["hours"] / (r["wall_s"] / 60) / r["workers"]
        lines.append(
            f"| {r['scale']}x | {r['hours']:.1f} | {r['workers']} | {r['wall_s']:.1f} | "
            f"{rate:.2f} | {r['driver_peak_rss_mb']} | {r['worker_peak_rss_mb']} | "
            f"{r['cache_mb']} |"
        )
    return "\n".join(lines)


def extrapolate(rows: list[dict]) -> str:
    largest = max(r["scale"] for r in rows)
    at = {r["workers"]: r for r in rows if r["scale"] == largest}
    one = at[min(at)]
    rate = one["hours"] / (one["wall_s"] / 60)  # h of EEG per minute per core
    lines = [f"decode rate at {largest}x, {min(at)} worker: {rate:.2f} h of EEG/min/core"]
    if len(at) > 1:
        many = at[max(at)]
        speedup = one["wall_s"] / many["wall_s"]
        lines.append(
            f"speed-up {min(at)} -> {max(at)} workers: {speedup:.2f}x "
            f"(efficiency {speedup / (max(at) / min(at)):.0%})"
        )
    minutes = TUAB_HOURS / (rate * 64)
    lines.append(
        f"TUAB ({TUAB_HOURS} h) on 64 cores at that rate per core, linear: {minutes:.1f} min"
    )
    encode_s = TUAB_WINDOWS / LARGE_BF16_WINDOWS_PER_S
    lines.append(
        f"encoder stage, large, bf16, one H200: {TUAB_WINDOWS:,} / "
        f"{LARGE_BF16_WINDOWS_PER_S:,} windows/s = {encode_s:.0f} s"
    )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
