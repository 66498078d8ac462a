"""`python -m tune_eegpt.data`: build a window cache, write the synthetic corpus, inspect a
cache. See `python -m tune_eegpt.data <command> --help`."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from tune_eegpt.atomic_write import DiskFullError
from tune_eegpt.cli_parser import ArgumentParser
from tune_eegpt.config import DataConfig, RunConfig
from tune_eegpt.data.build import MANIFEST, EmptyCacheError, build_window_cache, damaged_shards
from tune_eegpt.data.default_cache import default_workers
from tune_eegpt.data.shards import repair_hint
from tune_eegpt.data.storage import Location
from tune_eegpt.data.summary import format_summary
from tune_eegpt.data.synthetic import SyntheticSpec, write_synthetic_corpus
from tune_eegpt.shell_command import module_command


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return args.run(args)
    except DiskFullError as exc:  # one sentence, not a traceback; nothing half-written kept
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except (EmptyCacheError, FileNotFoundError, FileExistsError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _prepare(args: argparse.Namespace) -> int:
    cfg = RunConfig.from_yaml(args.config).data if args.config else DataConfig()
    if args.out is None:  # where train and search look for it: <data.cache_dir>/windows
        args.out = str(Location(cfg.cache_dir).child("windows"))
    if args.address is None:
        result = build_window_cache(
            cfg, args.data_root, args.out, workers=args.workers, verify=True
        )
        print(result.path)
        return 0
    # Ray lives above the data package: imported only when asked for
    from tune_eegpt.prepare_on_ray import connect, ray_runner

    started = connect(args.address, num_cpus=args.workers)
    try:
        result = build_window_cache(cfg, args.data_root, args.out, runner=ray_runner(), verify=True)
    finally:
        if started:
            import ray

            ray.shutdown()
    print(result.path)
    return 0


def _synth(args: argparse.Namespace) -> int:
    spec = SyntheticSpec(subjects=args.subjects, seed=args.seed, effect=args.effect)
    plan = write_synthetic_corpus(args.out, spec)
    counts = plan.groupby(["split", "label_name"]).size().to_dict()
    print(
        f"wrote {len(plan)} recordings of {spec.subjects} subjects "
        f"({plan.duration_s.sum() / 3600:.2f} h) to {args.out}: "
        + ", ".join(f"{s}/{lab} {n}" for (s, lab), n in sorted(counts.items()))
    )
    return 0


def _info(args: argparse.Namespace) -> int:
    path = Path(args.dir).expanduser()
    candidates = (
        [path]
        if (path / MANIFEST).is_file()
        else sorted(p for p in path.glob("*") if (p / MANIFEST).is_file())
    )
    if not candidates:
        raise FileNotFoundError(f"no complete window cache at or directly under {path}")
    damaged = 0
    for cache_dir in candidates:
        manifest = json.loads((cache_dir / MANIFEST).read_text())
        print(format_summary(manifest, cache_dir))
        if args.verify:
            damaged += _verify(cache_dir, manifest)
    if damaged:
        print(
            f"error: {damaged} damaged shard(s); {repair_hint()}",
            file=sys.stderr,
        )
        return 1
    return 0


def _verify(cache_dir: Path, manifest: dict) -> int:
    """Reads every shard against its manifest's size and CRC-32; prints what it found."""
    started = time.perf_counter()
    found = damaged_shards(Location(cache_dir), manifest, full=True)
    for _, shard, why in found:
        print(f"damaged: {shard}: {why}")
    shards = manifest.get("shards", [])
    size = sum(e.get("bytes", 0) for e in shards) / 1e9
    unchecked = sum("crc32" not in e for e in shards)
    note = f"; {unchecked} written before checksums, size only" if unchecked else ""
    print(
        f"verified {len(shards)} shards ({size:.2f} GB) in {time.perf_counter() - started:.1f} s: "
        f"{len(found) or 'none'} damaged{note}"
    )
    return len(found)


def _parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog=module_command("tune_eegpt.data"),
        description="TUAB-style EDF corpus -> memory-mapped Arrow window cache.",
        allow_abbrev=False,  # "--data" must not be taken for "--data-root"
    )
    commands = parser.add_subparsers(required=True, metavar="command")

    prepare = commands.add_parser(
        "prepare",
        help="build (or reuse) the window cache of an EDF tree",
        description="Index {train,eval}/{normal,abnormal}/**/*.edf under --data-root, read and "
        "preprocess every recording with MNE (channels, band-pass, notch, resample, windows), "
        "and write the window cache to <out>/<key>/ with a manifest of rejected files and the "
        "subject-wise split. An unchanged corpus and settings reuse the cache at once; an "
        "interrupted build resumes. Prints the cache directory last.",
        allow_abbrev=False,
    )
    prepare.add_argument("--data-root", required=True, help="TUAB root (or its edf/ folder)")
    prepare.add_argument(
        "--out",
        default=None,
        help="folder that holds caches, one per key: a local folder, a shared "
        "mount, or a URI (s3://..., gs://..., file://...); default: <data.cache_dir>/windows "
        "of --config (~/.cache/tune-eegpt/windows without one), where train and search "
        "look for it",
    )
    prepare.add_argument(
        "--workers",
        type=int,
        default=default_workers(),
        help="parallel reader processes, or the CPUs of local Ray with "
        "--address local (default: %(default)s)",
    )
    prepare.add_argument(
        "--address",
        default=None,
        help="decode as Ray tasks: 'auto' or HOST:PORT joins a running cluster "
        "(every node decodes; --data-root and --out must be reachable from all "
        "of them), 'local' starts Ray on this machine. Without it: a process "
        "pool on this machine, no Ray",
    )
    prepare.add_argument("--config", help="run config YAML; its data section is used")
    prepare.set_defaults(run=_prepare)

    synth = commands.add_parser(
        "synth",
        help="write the synthetic TUAB-like corpus (EDF files)",
        description="Write a synthetic corpus in TUAB's layout, naming and channel labels.",
        allow_abbrev=False,
    )
    synth.add_argument("--out", required=True, help="new folder to write the corpus into")
    synth.add_argument(
        "--subjects",
        type=int,
        default=SyntheticSpec.subjects,
        help="number of subjects (default: %(default)s)",
    )
    synth.add_argument(
        "--seed", type=int, default=SyntheticSpec.seed, help="generator seed (default: %(default)s)"
    )
    synth.add_argument(
        "--effect",
        type=float,
        default=SyntheticSpec.effect,
        help="class-effect strength (calibration knob; default: %(default)s)",
    )
    synth.set_defaults(run=_synth)

    info = commands.add_parser(
        "info",
        help="summarise a window cache",
        description="Summarise a cache directory, or every complete cache directly under DIR.",
        allow_abbrev=False,
    )
    info.add_argument("dir", metavar="DIR", help="a cache <out>/<key> folder or its <out> folder")
    info.add_argument(
        "--verify",
        action="store_true",
        help="read every shard and check its CRC-32 against the manifest (exit 1 if one is "
        "damaged)",
    )
    info.set_defaults(run=_info)
    return parser


if __name__ == "__main__":
    sys.exit(main())
