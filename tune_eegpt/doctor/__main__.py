"""python -m tune_eegpt.doctor PATH [PATH ...]: exit 0 healthy, 1 a warning or error, 2 bad
input or usage."""

from __future__ import annotations

import argparse
import json
import sys

from tune_eegpt.cli_parser import ArgumentParser
from tune_eegpt.doctor.findings import Hints
from tune_eegpt.doctor.inputs import InputError
from tune_eegpt.doctor.report import diagnose
from tune_eegpt.shell_command import module_command


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(
        prog=module_command("tune_eegpt.doctor"),
        allow_abbrev=False,
        description="Find learning-rate schedule bugs in training logs (TensorBoard, CSV, "
        "text) and checkpoints (torch.save, Lightning .ckpt).",
    )
    p.add_argument("paths", nargs="+", help="log files, TensorBoard run folders, checkpoints")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--plot", metavar="FILE", help="draw the logged LR against the fitted schedule")
    p.add_argument("--steps-per-epoch", type=int, help="batches (micro-batches) per epoch")
    p.add_argument("--epochs", type=int, help="epochs the run was configured for")
    p.add_argument("--accum", type=int, help="gradient accumulation steps")
    p.add_argument("--lr-key", help="the column or tag that holds the LR")
    p.add_argument("--step-key", help="the column that holds the optimizer step")
    p.add_argument(
        "--trusted-checkpoint",
        action="store_true",
        help="unpickle checkpoints that hold Python objects (only files you trust)",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    hints = Hints(args.steps_per_epoch, args.epochs, args.accum)
    try:
        result = diagnose(args.paths, hints, args.lr_key, args.step_key, args.trusted_checkpoint)
    except InputError as exc:
        print(f"doctor: {exc}", file=sys.stderr)
        return 2
    if args.plot:
        from tune_eegpt.doctor.plot import plot_diagnosis

        plot_diagnosis(result, result.series, args.plot)
    if args.json:
        print(json.dumps(result.to_dict(), indent=1, default=str))
    else:
        print("\n".join(result.lines()))
        if args.plot:
            print(f"plot: {args.plot}")
    return 0 if result.healthy else 1


if __name__ == "__main__":
    sys.exit(main())
