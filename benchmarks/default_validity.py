"""Does the built-in default tell the truth? Validation against test, over split seeds.

    python benchmarks/default_validity.py [--cache-dir DIR] \
        [--json benchmarks/results/default_validity.json]

Fixed schedules, no search: the synthetic default config (``synthetic_default.yaml``),
10 epochs, train seed 0, max_lr 1e-4 / 1e-3 / 1e-2, for split seeds 0-4. Each run trains
the probe for its whole schedule and is scored at the end on validation and on the test
split (TUAB's eval folder), at window level (AUROC). Prints the table, the means and
standard deviations over split seeds, the val-test gap, the corpus's make-up (subjects,
recordings and mislabelled recordings per split) and a PASS/FAIL line per target:

- winner region (max_lr 1e-3 and 1e-2): |mean test - mean val| <= 0.02, std of val <= 0.02;
- the threshold 0.869 separates max_lr 1e-4 from 1e-3 on every split seed, val and test.

``--set field=value`` changes a config field for every run (e.g. ``synthetic_subjects=60``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tune_eegpt.config import RunConfig  # noqa: E402
from tune_eegpt.data.synthetic import SPEC_FILE  # noqa: E402
from tune_eegpt.pipeline import (  # noqa: E402
    PreparedData,
    build_trainer,
    open_window_cache,
    prepare_data,
    split_sources,
)
from tune_eegpt.training.metrics import binary_metrics  # noqa: E402

THRESHOLD = 0.869
GAP_LIMIT = 0.02
STD_LIMIT = 0.02
DEFAULT_CONFIG = ROOT / "tune_eegpt" / "configs" / "synthetic_default.yaml"


def run_one(cfg: RunConfig, prepared: PreparedData) -> dict[str, float]:
    trainer = build_trainer(cfg, prepared)
    try:
        while not trainer.finished:
            trainer.train_epoch()
        cache = open_window_cache(prepared.window_cache, cfg.data.split_seed, cfg.data.val_fraction)
        scores = {}
        for split in ("val", "test"):
            y, p = trainer.predict(split_sources(prepared, cache, split))
            scores[split] = binary_metrics(y, p)["auroc"]
    finally:
        trainer.close()
    return scores


def corpus_make_up(cfg: RunConfig, prepared: PreparedData) -> pd.DataFrame:
    """Subjects, recordings, windows and mislabelled recordings per split."""
    cache = open_window_cache(prepared.window_cache, cfg.data.split_seed, cfg.data.val_fraction)
    meta = cache.meta
    corpus = Path(cfg.data.cache_dir).expanduser() / "synthetic"
    truth = {}
    for spec_file in corpus.glob(f"*/{SPEC_FILE}"):
        record = json.loads(spec_file.read_text())
        if record["spec"]["subjects"] == cfg.data.synthetic_subjects and (
            record["spec"]["seed"] == cfg.data.synthetic_seed
        ):
            truth = {Path(r["relpath"]).stem: r["abnormal"] for r in record["recordings"]}
    rows = []
    for split in ("train", "val", "test"):
        part = meta[meta["split"] == split]
        recs = part.groupby("recording")["label"].first()
        wrong = sum(int(truth[r]) != int(lab) for r, lab in recs.items() if r in truth)
        rows.append(
            {
                "split": split,
                "subjects": part["subject"].nunique(),
                "recordings": len(recs),
                "windows": len(part),
                "abnormal_share": round(float(part["label"].mean()), 3),
                "mislabelled_recordings": wrong,
            }
        )
    return pd.DataFrame(rows)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default=str(DEFAULT_CONFIG))
    p.add_argument("--cache-dir", default=None, help="default: the config's cache_dir")
    p.add_argument("--split-seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    p.add_argument("--max-lrs", type=float, nargs="+", default=[1e-4, 1e-3, 1e-2])
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE")
    p.add_argument("--json", default=None, help="write the figures here")
    args = p.parse_args(argv)

    overrides = {"device": "cpu", "tensorboard": False, "epochs": 10, "seed": 0}
    for item in args.set:
        name, _, value = item.partition("=")
        overrides[name] = yaml.safe_load(value)
    if args.cache_dir:
        overrides["cache_dir"] = args.cache_dir
    base = RunConfig.from_yaml(args.config).with_overrides(overrides)

    t0 = time.perf_counter()
    prepared = prepare_data(base, progress=False)
    prepare_s = time.perf_counter() - t0
    make_up = corpus_make_up(base, prepared)
    print(make_up.to_string(index=False))
    print(f"(data ready in {prepare_s:.1f} s)")

    rows = []
    t0 = time.perf_counter()
    for split_seed in args.split_seeds:
        for max_lr in args.max_lrs:
            cfg = base.with_overrides({"split_seed": split_seed, "max_lr": max_lr})
            scores = run_one(cfg, prepared)
            rows.append({"split_seed": split_seed, "max_lr": max_lr, **scores})
    train_s = time.perf_counter() - t0
    runs = pd.DataFrame(rows)

    table = runs.pivot(index="split_seed", columns="max_lr", values=["val", "test"])
    print(
        f"\nwindow AUROC at the end of {base.train.epochs} epochs (val / test), pct_start "
        f"{base.schedule.pct_start}, batch {base.train.batch_size}, train seed {base.train.seed}:"
    )
    header = "| split_seed | " + " | ".join(f"max_lr {lr:g} val / test" for lr in args.max_lrs)
    print(header + " |")
    print("|---" * (len(args.max_lrs) + 1) + "|")
    for seed in args.split_seeds:
        cells = [
            f"{table.loc[seed, ('val', lr)]:.3f} / {table.loc[seed, ('test', lr)]:.3f}"
            for lr in args.max_lrs
        ]
        print(f"| {seed} | " + " | ".join(cells) + " |")
    for name, fn in (("mean", np.mean), ("std", lambda x: np.std(x, ddof=1))):
        cells = [
            f"{fn(table[('val', lr)]):.3f} / {fn(table[('test', lr)]):.3f}" for lr in args.max_lrs
        ]
        print(f"| {name} | " + " | ".join(cells) + " |")
    gaps = [table[("test", lr)].mean() - table[("val", lr)].mean() for lr in args.max_lrs]
    print("| test - val (means) | " + " | ".join(f"{g:+.3f}" for g in gaps) + " |")
    print(f"({len(runs)} runs in {train_s:.1f} s)")

    verdicts = []
    winners = [lr for lr in args.max_lrs if 1e-3 <= lr <= 1e-2]
    if winners:
        val = runs[runs["max_lr"].isin(winners)].groupby("split_seed")[["val", "test"]].mean()
        gap = float(val["test"].mean() - val["val"].mean())
        std = max(float(np.std(table[("val", lr)], ddof=1)) for lr in winners)
        region = ", ".join(f"{w:g}" for w in winners)
        verdicts.append(
            (
                abs(gap) <= GAP_LIMIT,
                f"winner region (max_lr {region}): |mean test - mean val| = {abs(gap):.3f} "
                f"<= {GAP_LIMIT}",
            )
        )
        verdicts.append(
            (
                std <= STD_LIMIT,
                f"winner region: std of val AUROC over split seeds = {std:.3f} <= {STD_LIMIT} "
                "(the larger of the max_lrs')",
            )
        )
    if 1e-4 in args.max_lrs and 1e-3 in args.max_lrs:
        for split in ("val", "test"):
            low, high = table[(split, 1e-4)], table[(split, 1e-3)]
            ok = bool((low < THRESHOLD).all() and (high >= THRESHOLD).all())
            verdicts.append(
                (
                    ok,
                    f"threshold {THRESHOLD} separates max_lr 1e-4 (max {low.max():.3f}) from "
                    f"1e-3 (min {high.min():.3f}) on every split seed, {split}",
                )
            )
    print()
    for ok, text in verdicts:
        print(f"{'PASS' if ok else 'FAIL'}  {text}")

    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        record = {
            "config": os.path.relpath(Path(args.config).resolve(), ROOT),
            "overrides": overrides,
            "runs": rows,
            "make_up": make_up.to_dict(orient="records"),
            "verdicts": [{"pass": ok, "target": t} for ok, t in verdicts],
            "prepare_s": prepare_s,
            "train_s": train_s,
        }
        Path(args.json).write_text(json.dumps(record, indent=1) + "\n")
    return 0 if all(ok for ok, _ in verdicts) else 1


if __name__ == "__main__":
    sys.exit(main())
