"""Wall time of the default search (``python -m tune_eegpt.search``), cold and warm, and
where the driver's time goes.

    python benchmarks/default_search.py --workdir /tmp/perf_default \
        [--json benchmarks/results/default_search.json] [--no-profile]

1. cold: ``python -m tune_eegpt.search --cache-dir W/cache --storage W/runs-cold`` with an
   empty cache folder (the synthetic corpus is generated, decoded into the window cache
   and encoded into the feature cache);
2. warm: the same command again with the caches in place (new storage folder);
3. profile: the warm run once more under cProfile (``python -m cProfile -o ...``), for
   the driver's share of the time, plus the search's own phase split.

For each run: the process's wall time, the "time:" line (imports / data / Ray start /
trials), the time after the last phase (summary, Ray shutdown, exit), and, from the
experiment's results, the trial epochs' own compute time (sum of ``time_this_iter_s``),
trial start-ups (``startup_s``) and how many epochs ran, against the trials phase's wall
time at the search's concurrency.
"""

from __future__ import annotations

import argparse
import json
import os
import pstats
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PHASES = re.compile(r"^time: (.*)$", re.M)


def parse_phases(output: str) -> dict[str, float]:
    match = PHASES.findall(output)
    if not match:
        return {}
    return {k.strip(): float(v) for k, v in re.findall(r"([A-Za-z ]+?) ([\d.]+) s", match[-1])}


def experiment_figures(storage: Path) -> dict[str, Any]:
    rows = []
    for result in storage.glob("*/*/result.json"):
        rows += [json.loads(line) for line in result.read_text().splitlines() if line]
    if not rows:
        return {}
    trials = {r["trial_id"] for r in rows}
    startups = [
        r["startup_s"]
        for r in rows
        if r.get("startup_s") == r.get("startup_s")
        and "startup_s" in r
        and r.get("training_iteration") == 1
    ]
    return {
        "trials": len(trials),
        "epochs": len(rows),
        "epoch_compute_s": sum(r.get("time_this_iter_s", 0.0) for r in rows),
        "median_epoch_s": sorted(r.get("time_this_iter_s", 0.0) for r in rows)[len(rows) // 2],
        "startup_s_sum": sum(startups),
        "actors": len({r.get("pid") for r in rows}),
    }


def run_search(workdir: Path, storage: str, profile: Path | None = None) -> dict[str, Any]:
    cmd = [sys.executable]
    if profile is not None:
        cmd += ["-m", "cProfile", "-o", str(profile)]
    cmd += [
        "-m",
        "tune_eegpt.search",
        "--cache-dir",
        str(workdir / "cache"),
        "--storage",
        str(workdir / storage),
    ]
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled"}
    started = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")
    phases = parse_phases(proc.stdout)
    figures = {
        "wall_s": wall,
        "phases_s": phases,
        "after_phases_s": wall - sum(phases.values()),
        **experiment_figures(workdir / storage),
    }
    return figures


def print_run(name: str, r: dict[str, Any]) -> None:
    phases = ", ".join(f"{k} {v:.1f} s" for k, v in r["phases_s"].items())
    print(
        f"{name}: {r['wall_s']:.1f} s wall ({phases}; after the phases "
        f"{r['after_phases_s']:.1f} s: summary, Ray shutdown, exit)"
    )
    if "epochs" in r:
        print(
            f"  {r['trials']} trials in {r['actors']} actors, {r['epochs']} epochs: epoch "
            f"compute {r['epoch_compute_s']:.1f} s (median {r['median_epoch_s']:.2f} s/epoch), "
            f"trial start-ups {r['startup_s_sum']:.1f} s in total"
        )


def profile_summary(path: Path, top: int) -> list[str]:
    stats = pstats.Stats(str(path))
    total = stats.total_tt  # type: ignore[attr-defined]
    lines = [f"driver CPU profile: {total:.1f} s total in the driver process"]
    rows = []
    for (file, line, func), (_, _, tt, ct, _) in stats.stats.items():  # type: ignore[attr-defined]
        rows.append((ct, tt, f"{Path(file).name}:{line}({func})"))
    rows.sort(reverse=True)
    seen = 0
    for ct, tt, name in rows:
        if seen >= top:
            break
        lines.append(f"  cumulative {ct:7.2f} s  own {tt:6.2f} s  {name}")
        seen += 1
    lines.append("  top by own time:")
    for ct, tt, name in sorted(rows, key=lambda r: -r[1])[:10]:
        lines.append(f"  own {tt:6.2f} s  cumulative {ct:7.2f} s  {name}")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/perf_default"))
    parser.add_argument("--no-profile", action="store_true")
    parser.add_argument("--top", type=int, default=25, help="profile lines to print")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if args.workdir.exists():
        shutil.rmtree(args.workdir)
    args.workdir.mkdir(parents=True)
    report: dict[str, Any] = {"machine": f"{os.cpu_count()} CPU cores"}
    report["cold"] = run_search(args.workdir, "runs-cold")
    print_run("cold (empty cache)", report["cold"])
    report["warm"] = run_search(args.workdir, "runs-warm")
    print_run("warm (caches present)", report["warm"])
    if not args.no_profile:
        prof = args.workdir / "driver.prof"
        report["profiled_warm"] = run_search(args.workdir, "runs-prof", profile=prof)
        print_run("warm under cProfile", report["profiled_warm"])
        lines = profile_summary(prof, args.top)
        report["profile"] = lines
        print("\n".join(lines))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
