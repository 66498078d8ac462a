"""Dry run of the LR schedule: ``python -m tune_eegpt.schedule --config X.yaml``.

Prints the schedule's length and its LR at milestones, writes a per-step CSV and a PNG
plot on request. Trains nothing and needs no data.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

from tune_eegpt.cli_parser import ArgumentParser
from tune_eegpt.config import ConfigError, RunConfig
from tune_eegpt.shell_command import module_command
from tune_eegpt.training.onecycle import ScheduleDryRun, dry_run, milestones
from tune_eegpt.training.schedule_plot import plot_schedule

_OVERRIDES = {
    "max_lr": float,
    "pct_start": float,
    "accum_steps": int,
    "epochs": int,
    "div_factor": float,
    "final_div_factor": float,
}


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        allow_abbrev=False,
        prog=module_command("tune_eegpt.schedule"),
        description="Dry run of the OneCycleLR schedule a probe run would use.",
    )
    parser.add_argument("--config", type=Path, help="run config YAML (defaults if omitted)")
    parser.add_argument(
        "--batches-per-epoch",
        type=int,
        required=True,
        help="training micro-batches per epoch (ceil(train windows / batch_size))",
    )
    for name, kind in _OVERRIDES.items():
        parser.add_argument(f"--{name.replace('_', '-')}", type=kind, help=f"override {name}")
    parser.add_argument("--csv", type=Path, help="write global_step,epoch,lr per optimizer step")
    parser.add_argument("--plot", type=Path, help="write a PNG of the schedule")
    return parser


def schedule_summary_lines(cfg: RunConfig, run: ScheduleDryRun, batches: int) -> list[str]:
    s, t = cfg.schedule, cfg.train
    lines = [
        f"batches per epoch   {batches}  (accum_steps {t.accum_steps}, epochs {t.epochs})",
        f"steps per epoch     {run.steps_per_epoch}  (ceil({batches} / {t.accum_steps}))",
        f"total steps         {run.total_steps}",
        f"warm-up ends        step {run.warmup_end_step:.1f}  (pct_start {s.pct_start})",
        f"initial LR          {run.initial_lr:.6g}  (max_lr / div_factor {s.div_factor:g})",
        f"peak LR             {run.peak_lr:.6g}  at step {run.peak_step}",
        f"final LR            {run.final_lr:.6g}  "
        f"(floor max_lr / div_factor / final_div_factor {s.final_div_factor:g})",
        "LR at milestones:",
    ]
    for name, step in milestones(run):
        lines.append(
            f"  step {step:>8d}  epoch {run.epoch_of(step):>4d}  lr {run.lrs[step]:.6g}  {name}"
        )
    return lines


def write_csv(run: ScheduleDryRun, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["global_step", "epoch", "lr"])
        writer.writerows((k, e, repr(lr)) for k, e, lr in run.rows())


def check_outputs(args: argparse.Namespace) -> None:
    """--batches-per-epoch is a count; --csv and --plot name files that can be written, in a
    format the plot supports."""
    if args.batches_per_epoch < 1:
        n = args.batches_per_epoch
        raise ValueError(f"--batches-per-epoch={n} is not allowed: expected an integer >= 1")
    for flag, path in (("--csv", args.csv), ("--plot", args.plot)):
        if path is not None and path.is_dir():
            raise ValueError(f"{flag} {path} is a folder: give a file name")
    if args.plot is not None:
        from matplotlib.backends.backend_agg import FigureCanvasAgg

        formats = FigureCanvasAgg.get_supported_filetypes()
        kind = args.plot.suffix.lstrip(".").lower()
        if kind not in formats:
            raise ValueError(
                f"--plot {args.plot}: unknown image type {kind or '(no suffix)'!r}; "
                f"use one of {', '.join(sorted(formats))} (.png, for example)"
            )


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        check_outputs(args)
        cfg = RunConfig.from_yaml(args.config) if args.config else RunConfig()
        overrides = {k: getattr(args, k) for k in _OVERRIDES if getattr(args, k) is not None}
        cfg = cfg.with_overrides(overrides, source="command line")
        run = dry_run(cfg.schedule, args.batches_per_epoch, cfg.train.accum_steps, cfg.train.epochs)
    except (ConfigError, FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print("\n".join(schedule_summary_lines(cfg, run, args.batches_per_epoch)))
    try:
        if args.csv:
            write_csv(run, args.csv)
            print(f"wrote {args.csv}")
        if args.plot:
            plot_schedule(run, args.plot)
            print(f"wrote {args.plot}")
    except OSError as exc:
        print(f"error: cannot write {exc.filename}: {exc.strerror}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
