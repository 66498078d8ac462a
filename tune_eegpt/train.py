"""One probe run: ``python -m tune_eegpt.train --config X.yaml [--resume CKPT] [--out DIR]``.

What a search trial runs, on its own: builds (or reuses) the data caches, trains the
probe with the per-step OneCycle schedule, prints each epoch's metrics and checkpoints
at every epoch end (and every ``train.checkpoint_every_steps`` optimizer steps).

A run folder holds one run. A second ``train`` into a folder that already has checkpoints
is refused unless it resumes that run (``--resume <out>/checkpoints``): silently starting
over would overwrite its checkpoints and mix two runs in its logs, and silently writing
somewhere else would leave the user looking in the wrong folder.
"""

from __future__ import annotations

import argparse
import shlex
import signal
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tune_eegpt.atomic_write import DiskFullError, disk_full_cause, disk_full_error
from tune_eegpt.cli_parser import ArgumentParser
from tune_eegpt.config import ConfigError, RunConfig, outcome_fields_of, require_real_inputs
from tune_eegpt.doctor.report import check_run
from tune_eegpt.shell_command import module_command
from tune_eegpt.training.checkpoint import (
    CheckpointError,
    checkpoint_name,
    checkpoint_step,
    list_checkpoints,
    load_checkpoint_file,
)

EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report it
_SHOWN = ("global_step", "lr", "train_loss", "val_auroc", "val_bal_acc", "val_pr_auc")


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(
        prog=module_command("tune_eegpt.train"),
        description=__doc__.split("\n")[0],
        allow_abbrev=False,
    )
    p.add_argument("--config", type=Path, required=True, help="run config YAML")
    p.add_argument(
        "--resume",
        type=Path,
        help="a trainer checkpoint (step-*.pt) or a checkpoints folder (its latest); "
        "required to continue in a folder that already holds a run",
    )
    p.add_argument("--out", type=Path, help="run folder (default: the config's log.out_dir)")
    p.add_argument(
        "--workers", type=int, default=1, help="processes decoding EDF for the cache (default: 1)"
    )
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        cfg, out, resume = _check_inputs(args)
    except (ConfigError, CheckpointError, FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        return _run(cfg, out, resume, args.workers)
    except KeyboardInterrupt:
        print(
            "interrupted before training started: nothing to resume; the same command "
            "continues where the data preparation stopped",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED


Resume = tuple[Path, dict[str, Any]]  # a checkpoint's path and its loaded state


def _check_inputs(args: argparse.Namespace) -> tuple[RunConfig, Path, Resume | None]:
    """Everything that can be checked before the data is prepared: the config, its real
    inputs, the run folder, the checkpoint to resume from."""
    if args.workers < 1:
        raise ConfigError(f"--workers={args.workers} is not allowed: expected an integer >= 1")
    cfg = RunConfig.from_yaml(args.config)
    if args.out is not None:
        cfg = cfg.with_overrides({"out_dir": str(args.out)}, source="--out")
    require_real_inputs(cfg, source=str(args.config))
    from tune_eegpt.pipeline import check_encoder_checkpoint

    check_encoder_checkpoint(cfg)  # before the data: a bad file is seconds, not hours
    out = Path(cfg.log.out_dir).expanduser()
    if out.exists() and not out.is_dir():
        raise ConfigError(f"run folder {out} is a file, not a folder: give --out a folder")
    held = list_checkpoints(out / "checkpoints")
    resume = None
    if args.resume is not None:
        if not args.resume.exists():
            raise FileNotFoundError(f"--resume {args.resume}: no such file or folder")
        ckpt = _resolve_checkpoint(args.resume)
        if held and ckpt.parent.resolve() != (out / "checkpoints").resolve():
            raise ConfigError(
                f"--resume {args.resume} is not from {out}, which holds another run "
                f"(checkpoints up to {held[-1].name}): give the resumed run a new folder "
                f"with --out, or resume {out / 'checkpoints'}"
            )
        state = load_checkpoint_file(ckpt)  # small: read now, before any data work
        if state.get("config_fingerprint") != cfg.fingerprint():
            theirs = outcome_fields_of(state.get("config", {}))
            differing = ", ".join(
                f"{k} (checkpoint {theirs.get(k)!r}, now {cfg.outcome_fields().get(k)!r})"
                for k in cfg.outcome_differences(theirs)
            )
            raise CheckpointError(
                f"--resume {ckpt} was made under a different config; differing fields: {differing}"
            )
        resume = ckpt, state
    elif held:
        raise ConfigError(
            f"{out} already holds a run (checkpoints up to {held[-1].name}): continue it "
            f"with --resume {out / 'checkpoints'}, or give a new folder with --out"
        )
    return cfg, out, resume


def _resolve_checkpoint(path: Path) -> Path:
    if path.is_dir():
        found = list_checkpoints(path)
        if not found:
            raise CheckpointError(f"--resume {path}: no trainer checkpoint (step-*.pt) in it")
        return found[-1]
    return path


def _run(cfg: RunConfig, out: Path, resume: Resume | None, workers: int) -> int:
    from tune_eegpt.pipeline import build_trainer, prepare_data
    from tune_eegpt.training.trainer import Diverged

    try:
        out.mkdir(parents=True, exist_ok=True)
        cfg.to_yaml(out / "config.yaml")
        prepared = prepare_data(cfg, workers=workers)
        trainer = build_trainer(cfg, prepared, log_dir=out)
        if resume is not None:
            path, state = resume
            trainer.load_state_dict(state, source=str(path))
            print(
                f"resumed from {path}: epoch {trainer.epoch}, global_step "
                f"{trainer.global_step} ({steps_taken(trainer.global_step)}; "
                f"the next is step {trainer.global_step})"
            )
            _drop_later_checkpoints(out / "checkpoints", trainer.global_step)
    except DiskFullError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except (ConfigError, CheckpointError, FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(
        f"{len(trainer.train_data)} training rows, {trainer.batches_per_epoch} batches/epoch, "
        f"{trainer.steps_per_epoch} optimizer steps/epoch, {trainer.total_steps} in all"
    )
    print(f"step engine: {trainer.engine_reason}")
    try:
        while not trainer.finished:
            started = time.perf_counter()
            metrics = trainer.train_epoch()
            trainer.save_checkpoint(out / "checkpoints")
            shown = "  ".join(f"{k} {metrics[k]:.4g}" for k in _SHOWN if k in metrics)
            took = time.perf_counter() - started
            print(f"epoch {int(metrics['epoch'])}/{cfg.train.epochs}  {shown}  ({took:.1f} s)")
    except Diverged as exc:
        print(f"diverged: {exc}", file=sys.stderr)
        return 3
    except KeyboardInterrupt:
        with _sigint_ignored():  # a second Ctrl-C now would only print a traceback
            trainer.close()
            print(interrupted_line(out, trainer.global_step), file=sys.stderr)
        return EXIT_INTERRUPTED
    except OSError as exc:
        if disk_full_cause(exc) is None:
            raise
        try:
            trainer.close()
        except OSError:
            pass  # its last flush may meet the full disk too; the logs' readers allow that
        if not isinstance(exc, DiskFullError):  # from the logs: the error names no file
            exc = disk_full_error(out, what="the run's logs")
        stopped = interrupted_line(out, trainer.global_step).replace("interrupted", "stopped", 1)
        print(f"error: {exc}\n{stopped}", file=sys.stderr)
        return 1
    finally:
        trainer.close()
    print(f"best val_auroc {trainer.best_val_auroc:.4f}; checkpoints and logs in {out}")
    print("\n".join(check_run(out)))  # the schedule doctor on this run's own logs
    return 0


def interrupted_line(out: Path, global_step: int) -> str:
    """Where an interrupted run stands and the exact command that continues it, in the
    README's counting: global_step N = N optimizer steps taken, logged as steps 0..N-1."""
    command = module_command("tune_eegpt.train", "--config", str(out / "config.yaml"))
    found = list_checkpoints(out / "checkpoints")
    where = f"interrupted at global_step {global_step} ({steps_taken(global_step)})"
    if not found:
        return f"{where}, before the first checkpoint; start again with: {command}"
    resumes_at = checkpoint_step(found[-1])
    return (
        f"{where}; last checkpoint {found[-1]} (global_step {resumes_at}: the run goes on "
        f"from step {resumes_at}); resume with: {command} --resume {shlex.quote(str(found[-1]))}"
    )


def steps_taken(global_step: int) -> str:
    """How many optimizer steps a global_step is, and which rows of steps.csv hold them."""
    if global_step == 0:
        return "no optimizer step taken"
    if global_step == 1:
        return "1 optimizer step taken, logged as step 0"
    return f"{global_step} optimizer steps taken, logged as steps 0..{global_step - 1}"


def _drop_later_checkpoints(folder: Path, global_step: int) -> None:
    """Checkpoints after the resumed one belong to the continuation being replaced (its
    logs are dropped too); left in place, they would be kept over the new ones."""
    later = [p for p in list_checkpoints(folder) if p.name > checkpoint_name(global_step)]
    for path in later:
        path.unlink()
    if later:
        names = ", ".join(p.name for p in later)
        print(f"removed {len(later)} later checkpoint(s) of the replaced continuation: {names}")


@contextmanager
def _sigint_ignored():
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


if __name__ == "__main__":
    sys.exit(main())
