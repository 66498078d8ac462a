"""One probe run: ``python -m tune_eegpt.train --config X.yaml [--resume CKPT] [--out DIR]``.

What a search trial runs, on its own: builds (or reuses) the data caches, trains the
probe with the per-step OneCycle schedule, prints each epoch's metrics and checkpoints
at every epoch end (and every ``train.checkpoint_every_steps`` optimizer steps).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from tune_eegpt.config import ConfigError, RunConfig
from tune_eegpt.training.checkpoint import CheckpointError


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        allow_abbrev=False,
        prog="python -m tune_eegpt.train", description=__doc__.split("\n")[0]
    )
    p.add_argument("--config", type=Path, required=True, help="run config YAML")
    p.add_argument("--resume", type=Path, help="a trainer checkpoint (step-*.pt) or its folder")
    p.add_argument("--out", type=Path, help="run folder (default: the config's log.out_dir)")
    p.add_argument("--workers", type=int, default=1, help="processes decoding EDF for the cache")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        cfg = RunConfig.from_yaml(args.config)
        if args.out is not None:
            cfg = cfg.with_overrides({"out_dir": str(args.out)})
    except (ConfigError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    from tune_eegpt.pipeline import build_trainer, prepare_data
    from tune_eegpt.training.trainer import Diverged

    out = Path(cfg.log.out_dir).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    cfg.to_yaml(out / "config.yaml")
    try:
        prepared = prepare_data(cfg, workers=args.workers)
        trainer = build_trainer(cfg, prepared, log_dir=out)
        if args.resume is not None:
            trainer.load_checkpoint(args.resume)
            print(f"resumed from {args.resume}: epoch {trainer.epoch}, "
                  f"global_step {trainer.global_step}")  # fmt: skip
    except (ConfigError, CheckpointError, FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(
        f"{len(trainer.train_data)} training rows, {trainer.batches_per_epoch} batches/epoch, "
        f"{trainer.steps_per_epoch} optimizer steps/epoch, {trainer.total_steps} in all"
    )
    try:
        while not trainer.finished:
            started = time.perf_counter()
            metrics = trainer.train_epoch()
            trainer.save_checkpoint(out / "checkpoints")
            shown = "  ".join(
                f"{k} {metrics[k]:.4g}" for k in
                ("global_step", "lr", "train_loss", "val_auroc", "val_bal_acc", "val_pr_auc")
                if k in metrics
            )  # fmt: skip
            took = time.perf_counter() - started
            print(f"epoch {int(metrics['epoch'])}/{cfg.train.epochs}  {shown}  ({took:.1f} s)")
    except Diverged as exc:
        print(f"diverged: {exc}", file=sys.stderr)
        return 3
    finally:
        trainer.close()
    print(f"best val_auroc {trainer.best_val_auroc:.4f}; checkpoints and logs in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
