"""``python -m analysis {report,confirm,evaluate,notebook} EXPERIMENT_DIR``: a search -> a
decision.

report    table of the configurations reaching the threshold, Parquet frames, plots,
          the best configuration as a run config YAML with its schedule dry run
confirm   the top-k configurations rerun with several seeds (Ray Tune, no ASHA)
evaluate  the confirmed winner scored once on the test split, with bootstrap intervals
notebook  analysis/trials.ipynb run headless on the experiment; the executed copy is
          written into the output folder
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tune_eegpt.cli_parser import ArgumentParser
from tune_eegpt.config import ConfigError
from tune_eegpt.shell_command import module_command


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(
        allow_abbrev=False,
        prog=module_command("analysis"),
        description="Analyse a tune_eegpt search: which schedules reach the target AUROC, "
        "do they hold over seeds, and what does the winner score on the held-out eval set.",
    )
    sub = p.add_subparsers(dest="command", required=True)

    def common(cmd: argparse.ArgumentParser) -> None:
        cmd.add_argument("experiment", help="experiment directory (local path or URI)")
        cmd.add_argument("--out", type=Path, help="output folder (None: EXPERIMENT_DIR/analysis)")
        cmd.add_argument(
            "--threshold",
            type=float,
            help="val_auroc to reach (None: the search's, else 0.869)",
        )

    def command(name: str, help: str) -> argparse.ArgumentParser:
        cmd = sub.add_parser(
            name,
            help=help,
            allow_abbrev=False,
            formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        )
        common(cmd)
        return cmd

    command("report", "table, Parquet frames, plots, exported config")

    confirm = command("confirm", "rerun the top-k configurations over seeds")
    confirm.add_argument("--top-k", type=int, default=3, help="configurations to confirm")
    confirm.add_argument("--seeds", type=int, default=5, help="seeds per configuration")
    confirm.add_argument("--cpus-per-trial", type=float, default=1.0, help="CPUs per run")
    confirm.add_argument("--gpus-per-trial", type=float, default=0.0, help="GPUs per run")
    confirm.add_argument(
        "--max-concurrent", type=int, default=None, help="runs at once (None: as resources allow)"
    )
    confirm.add_argument(
        "--address", help="an existing Ray cluster ('auto' on its head node); None: start Ray"
    )

    evaluate = command("evaluate", "score the confirmed winner on the test split once")
    evaluate.add_argument(
        "--restore",
        action="store_true",
        help="restore the search's best checkpoint of the winner instead of training it",
    )
    evaluate.add_argument(
        "--allow-unconfirmed",
        action="store_true",
        help="score the best configuration even when none was confirmed",
    )
    evaluate.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples")
    evaluate.add_argument("--bootstrap-seed", type=int, default=0, help="bootstrap seed")
    evaluate.add_argument(
        "--again", action="store_true", help="score the test split again (it was scored before)"
    )
    command("notebook", "run analysis/trials.ipynb on the experiment, keep the executed copy")
    return p


def check_args(args: argparse.Namespace) -> None:
    """Mistakes in the flags, found before any experiment is read or Ray started."""
    limits = {
        "threshold": (lambda v: 0 < v < 1, "an AUROC in (0, 1)"),
        "top_k": (lambda v: v >= 1, "an integer >= 1"),
        "seeds": (lambda v: v >= 1, "an integer >= 1"),
        "cpus_per_trial": (lambda v: v > 0, "a number > 0"),
        "gpus_per_trial": (lambda v: v >= 0, "a number >= 0 (fractions allowed)"),
        "max_concurrent": (lambda v: v >= 1, "an integer >= 1"),
        "resamples": (lambda v: v >= 1, "an integer >= 1"),
    }
    for name, (ok, allowed) in limits.items():
        value = getattr(args, name, None)
        if value is not None and not ok(value):
            flag = "--" + name.replace("_", "-")
            raise ConfigError(f"{flag}={value!r} is not allowed: expected {allowed}")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from analysis.load import load_experiment
    from analysis.report import default_out_dir, run_report

    try:
        check_args(args)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    out = args.out if args.out is not None else default_out_dir(args.experiment)
    try:
        if args.command == "report":
            return run_report(args.experiment, out, args.threshold)
        experiment = load_experiment(args.experiment)
        if args.command == "notebook":
            return notebook_command(args.experiment, out, args.threshold)
        if args.command == "confirm":
            from analysis.confirm import run_confirmation

            _, summary, lines = run_confirmation(
                experiment,
                out,
                args.threshold,
                args.top_k,
                args.seeds,
                args.cpus_per_trial,
                args.gpus_per_trial,
                args.max_concurrent,
                args.address,
            )
            print("\n".join(lines))
            return 0 if summary["confirmed"].any() else 1
        from analysis.evaluate import evaluate_winner

        _, lines = evaluate_winner(
            experiment,
            out,
            args.restore,
            args.allow_unconfirmed,
            args.resamples,
            args.bootstrap_seed,
            args.again,
        )
        print("\n".join(lines))
        return 0
    except (ConfigError, FileNotFoundError, FileExistsError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def notebook_command(experiment: str, out: Path, threshold: float | None) -> int:
    from analysis.notebook import NotebookFailed, run_notebook

    print(f"running analysis/trials.ipynb on {experiment} ...", flush=True)
    try:
        executed = run_notebook(experiment, out, threshold)
    except NotebookFailed as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"executed notebook: {executed}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
