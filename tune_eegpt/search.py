"""``python -m tune_eegpt.search``: search the probe's schedule with Ray Tune, Optuna TPE and ASHA.

With no arguments it runs the built-in default end to end: the synthetic TUAB-like
corpus, the small encoder, the ``paper`` space, 16 trials. The only module of the
library that imports ray.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from datetime import datetime
from importlib import resources
from pathlib import Path
from typing import Any

from tune_eegpt.config import ConfigError, RunConfig
from tune_eegpt.search_report import TrialOutcome, classify, summary_lines

METRIC, MODE = "val_auroc", "max"
SEARCH_INFO = "tune_eegpt_search.json"  # beside Tune's files: what analysis needs to know
OPTUNA_TRIALS = "optuna_trials.csv"  # the study as Optuna saw it: states, values
DEFAULT_CONFIG = "synthetic_default.yaml"
logger = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m tune_eegpt.search",
        description="Search the OneCycle schedule of the EEGPT linear probe with Ray Tune "
        "(Optuna TPE proposes, ASHA stops weak trials early). With no arguments: the "
        "synthetic corpus and the small encoder, finishing in minutes on a laptop CPU.",
    )
    p.add_argument(
        "--config",
        type=Path,
        help="base run config YAML (default: the built-in "
        "synthetic default; tune_eegpt/configs/paper_aligned.yaml for TUAB)",
    )
    p.add_argument(
        "--space",
        default="paper",
        help="search space: a name in search_spaces/ "
        "(paper, wide) or the path of a space YAML file (default: %(default)s)",
    )
    p.add_argument(
        "--num-samples", type=int, default=16, help="number of trials (default: %(default)s)"
    )
    p.add_argument(
        "--max-concurrent",
        type=int,
        default=None,
        help="trials running at once (default: as many as the cluster's resources allow when "
        "the search starts; give it on an autoscaling cluster)",
    )
    p.add_argument(
        "--epochs",
        type=int,
        default=None,
        help="epochs of each trial's schedule, and ASHA's max_t (default: the config's)",
    )
    p.add_argument(
        "--grace-period",
        type=int,
        default=2,
        help="ASHA: epochs every trial gets before it can be stopped (default: %(default)s)",
    )
    p.add_argument(
        "--reduction-factor",
        type=int,
        default=3,
        help="ASHA: 1/reduction_factor of the trials go on at each rung (default: %(default)s)",
    )
    p.add_argument(
        "--threshold",
        type=float,
        default=0.869,
        help="the val_auroc a configuration must reach "
        "(default: %(default)s; paper: 0.8718 +- 0.005)",
    )
    p.add_argument("--data-root", help="TUAB 'edf' folder (train/, eval/); default: synthetic")
    p.add_argument(
        "--cache-dir",
        help="where window and feature caches live (default: the config's, ~/.cache/tune-eegpt)",
    )
    p.add_argument(
        "--checkpoint",
        help="official EEGPT checkpoint (.ckpt) or encoder state dict; selects the large encoder",
    )
    p.add_argument(
        "--trusted-checkpoint",
        action="store_true",
        help="allow --checkpoint to be unpickled (the official Lightning .ckpt needs it); "
        "only for a file from a source you trust",
    )
    p.add_argument(
        "--storage",
        default="runs",
        help="experiment storage: a local folder or "
        "a URI Ray accepts (s3://..., gs://...); shared storage on a cluster "
        "(default: %(default)s)",
    )
    p.add_argument("--name", help="experiment name (default: <space>-<date>-<time>)")
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue the interrupted experiment --name (default: the newest) under --storage",
    )
    p.add_argument(
        "--cpus-per-trial",
        type=float,
        default=1.0,
        help="CPUs each trial reserves (default: %(default)s)",
    )
    p.add_argument(
        "--gpus-per-trial",
        type=float,
        default=0.0,
        help="GPUs each trial reserves; fractions share a GPU, e.g. 0.25 (default: %(default)s)",
    )
    p.add_argument(
        "--address",
        help="an existing Ray cluster ('auto' on a cluster's head node); "
        "default: start Ray on this machine",
    )
    p.add_argument(
        "--seed", type=int, default=0, help="seed of the TPE sampler (default: %(default)s)"
    )
    p.add_argument(
        "--max-failures",
        type=int,
        default=2,
        help="restarts (from the last checkpoint) a crashing trial gets (default: %(default)s)",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=min(2, os.cpu_count() or 1),
        help="processes that decode EDF files when the window cache is built "
        "(default: %(default)s)",
    )
    return p


def base_run_config(args: argparse.Namespace) -> RunConfig:
    if args.config is not None:
        cfg = RunConfig.from_yaml(args.config)
    else:
        cfg = RunConfig.from_yaml(str(resources.files("tune_eegpt") / "configs" / DEFAULT_CONFIG))
    overrides: dict[str, Any] = {}
    if args.epochs is not None:
        overrides["epochs"] = args.epochs
    if args.data_root is not None:
        overrides["data_root"] = str(Path(args.data_root).expanduser().resolve())
    if args.cache_dir is not None:
        overrides["cache_dir"] = (args.cache_dir if "://" in args.cache_dir
                                  else str(Path(args.cache_dir).expanduser().resolve()))
    if args.checkpoint is not None:
        overrides.update(checkpoint=str(Path(args.checkpoint).expanduser().resolve()),
                         encoder="large")  # fmt: skip
    if args.trusted_checkpoint:
        overrides["trusted_checkpoint"] = True
    overrides["threads"] = max(1, int(args.cpus_per_trial))
    return cfg.with_overrides(overrides, source="command line")


def check_args(args: argparse.Namespace) -> None:
    def bad(flag: str, value: Any, allowed: str) -> None:
        raise ConfigError(f"{flag}={value!r} is not allowed: expected {allowed}")

    if args.num_samples < 1:
        bad("--num-samples", args.num_samples, "an integer >= 1")
    if args.max_concurrent is not None and args.max_concurrent < 1:
        bad("--max-concurrent", args.max_concurrent, "an integer >= 1")
    if args.grace_period < 1:
        bad("--grace-period", args.grace_period, "an integer >= 1")
    if args.reduction_factor < 2:
        bad("--reduction-factor", args.reduction_factor, "an integer >= 2")
    if not 0 < args.threshold < 1:
        bad("--threshold", args.threshold, "an AUROC in (0, 1)")
    if args.cpus_per_trial <= 0:
        bad("--cpus-per-trial", args.cpus_per_trial, "a number > 0")
    if args.gpus_per_trial < 0:
        bad("--gpus-per-trial", args.gpus_per_trial, "a number >= 0 (fractions allowed)")
    if args.max_failures < 0:
        bad("--max-failures", args.max_failures, "an integer >= 0")
    if args.resume and not args.name and "://" in args.storage:
        raise ConfigError(f"--resume with --storage {args.storage}: give the experiment's --name")


def storage_path(storage: str) -> str:
    return storage if "://" in storage else str(Path(storage).expanduser().resolve())


def newest_experiment(storage: str) -> str:
    root = Path(storage)
    found = sorted((p for p in root.glob("*/tuner.pkl")), key=lambda p: p.stat().st_mtime)
    if not found:
        raise FileNotFoundError(f"--resume: no experiment under {root}; give --name")
    return found[-1].parent.name


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        check_args(args)
        cfg = base_run_config(args)
        from search_spaces import load_space

        space = load_space(args.space)
        cfg = cfg.with_overrides(space.fixed, source=f"space {space.name}: fixed")
        if args.resume and not args.name:
            args.name = newest_experiment(storage_path(args.storage))
    except (ConfigError, FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return run_search(args, cfg, space)


def run_search(args: argparse.Namespace, cfg: RunConfig, space) -> int:
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # Tune's classic table, our columns
    # snapshot the experiment state at least every second, so that a driver killed hard
    # loses at most the trials it started in its last second
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "1")
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    phases = PhaseTimer()
    import ray
    from ray import tune

    from trainables import ProbeTrainable
    from tune_eegpt.prepare_on_ray import prepare_on_ray

    phases.lap("imports")
    storage = storage_path(args.storage)
    name = args.name or (newest_experiment(storage) if args.resume
                         else f"{space.name}-{datetime.now():%Y%m%d-%H%M%S}")  # fmt: skip
    if not ray.is_initialized():
        if args.address:
            ray.init(address=args.address)
        else:
            ray.init(num_cpus=os.cpu_count(), include_dashboard=False, configure_logging=False)
    phases.lap("Ray start")
    # decoding as Ray tasks over every node, the encoder on a GPU node (prepare_on_ray.py)
    print(f"preparing data (cache: {cfg.data.cache_dir})", flush=True)
    prepared = prepare_on_ray(cfg)
    phases.lap("data")
    max_concurrent = args.max_concurrent or concurrent_trials(ray.cluster_resources(), args)
    trainable = tune.with_resources(
        tune.with_parameters(ProbeTrainable, base_config=cfg.to_dict(),
                             prepared=prepared.to_dict(),
                             fault_injection=getattr(args, "fault_injection", None)),
        {"cpu": args.cpus_per_trial, "gpu": args.gpus_per_trial},
    )  # fmt: skip
    experiment = f"{storage.rstrip('/')}/{name}"
    if args.resume:
        print(f"resuming {experiment}", flush=True)
        tuner = tune.Tuner.restore(experiment, trainable=trainable, resume_unfinished=True,
                                   resume_errored=True)  # fmt: skip
    else:
        tuner, study = build_tuner(args, cfg, space, trainable, storage, name, max_concurrent)
        write_search_info(experiment, args, cfg, space)
    results = tuner.fit()
    phases.lap("trials")
    if not args.resume:
        write_study(study, experiment)

    outcomes = trial_outcomes(results, list(space.params))
    for line in summary_lines(outcomes, args.threshold, phases.total(), experiment,
                              list(space.params)):  # fmt: skip
        print(line)
    print(f"time: {phases}")
    return 0 if outcomes else 1


class PhaseTimer:
    """Wall time per phase of the search, for the closing summary."""

    def __init__(self) -> None:
        self.started = self.last = time.perf_counter()
        self.laps: dict[str, float] = {}

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.laps[name] = now - self.last
        self.last = now

    def total(self) -> float:
        return self.last - self.started

    def __str__(self) -> str:
        return ", ".join(f"{k} {v:.1f} s" for k, v in self.laps.items())


def concurrent_trials(resources: dict[str, float], args: argparse.Namespace) -> int:
    """Trials that fit at once on the cluster as it is now (at least one). Tune keeps only
    one trial waiting for a model-based searcher, so without this limit trials would start
    one by one and an autoscaler would see demand for one trial at a time."""
    fits = [resources.get("CPU", 0) / args.cpus_per_trial]
    if args.gpus_per_trial > 0:
        fits.append(resources.get("GPU", 0) / args.gpus_per_trial)
    return max(1, int(min(fits) + 1e-9))


def build_tuner(args, cfg: RunConfig, space, trainable, storage: str, name: str,
                max_concurrent: int):  # fmt: skip
    import optuna
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search import ConcurrencyLimiter

    n_startup = min(10, max(3, args.num_samples // 3))
    start = space.start_point(cfg)
    searcher = _optuna_searcher_class()(
        space=space.params,
        metric=METRIC,
        mode=MODE,
        sampler=optuna.samplers.TPESampler(seed=args.seed, n_startup_trials=n_startup),
        points_to_evaluate=[start] if start else None,
    )
    study = searcher._ot_study
    searcher = ConcurrencyLimiter(searcher, max_concurrent=max_concurrent)
    scheduler = ASHAScheduler(
        time_attr="epoch",  # rungs in epochs: the same data for every accum_steps
        max_t=cfg.train.epochs,
        grace_period=min(args.grace_period, cfg.train.epochs),
        reduction_factor=args.reduction_factor,
    )
    params = list(space.params)
    reporter = tune.CLIReporter(
        parameter_columns=params,
        metric_columns=["epoch", "val_auroc", "best_val_auroc", "diverged"],
        max_report_frequency=15,
        sort_by_metric=True,  # metric and mode come from TuneConfig
    )
    tuner = tune.Tuner(
        trainable,
        param_space=dict(space.fixed),
        tune_config=tune.TuneConfig(
            metric=METRIC, mode=MODE, search_alg=searcher, scheduler=scheduler,
            num_samples=args.num_samples, reuse_actors=True,
        ),
        run_config=tune.RunConfig(
            name=name,
            storage_path=storage,
            checkpoint_config=tune.CheckpointConfig(
                checkpoint_frequency=1,
                checkpoint_at_end=True,
                num_to_keep=1,  # the best by val_auroc; Tune also keeps the latest
                checkpoint_score_attribute=METRIC,
                checkpoint_score_order=MODE,
            ),
            failure_config=tune.FailureConfig(max_failures=args.max_failures),
            # the trainer's per-step logs (steps.csv, TensorBoard) live in each trial's
            # working directory; copy them to the trial's folder in the storage
            sync_config=tune.SyncConfig(sync_artifacts=True),
            progress_reporter=reporter,
            verbose=1,
        ),
    )  # fmt: skip
    return tuner, study


def write_study(study, experiment: str) -> None:
    """Optuna's view of the trials (state, value, intermediate values per epoch)."""
    rows = [
        {
            "number": t.number,
            "state": t.state.name,
            "value": t.value,
            **{f"params_{k}": v for k, v in t.params.items()},
            "intermediate_values": json.dumps(
                {int(k): v for k, v in t.intermediate_values.items()}
            ),
        }
        for t in study.get_trials(deepcopy=False)
    ]
    import pandas as pd

    write_text(experiment, OPTUNA_TRIALS, pd.DataFrame(rows).to_csv(index=False))


def write_search_info(experiment: str, args, cfg: RunConfig, space) -> None:
    """The base run config and the space, for analysis and export."""
    info = {
        "base_config": cfg.to_dict(),
        "space": space.name,
        "searched": list(space.params),
        "fixed": space.fixed,
        "threshold": args.threshold,
        "metric": METRIC,
        "mode": MODE,
        "epochs": cfg.train.epochs,
        "grace_period": args.grace_period,
        "reduction_factor": args.reduction_factor,
        "num_samples": args.num_samples,
        "seed": args.seed,
    }
    write_text(experiment, SEARCH_INFO, json.dumps(info, indent=2, default=str))


def write_text(experiment: str, name: str, text: str) -> None:
    """Writes ``experiment/name`` on local disk (atomically) or through pyarrow's
    filesystems for a URI (s3://, gs://...), where an object appears whole."""
    if "://" not in experiment:
        Path(experiment).mkdir(parents=True, exist_ok=True)
        tmp = Path(experiment) / f".{name}.tmp"
        tmp.write_text(text)
        os.replace(tmp, Path(experiment) / name)
        return
    import pyarrow.fs as pafs

    fs, root = pafs.FileSystem.from_uri(experiment)
    fs.create_dir(root, recursive=True)
    with fs.open_output_stream(f"{root.rstrip('/')}/{name}") as out:
        out.write(text.encode())


def trial_outcomes(results, params: list[str]) -> list[TrialOutcome]:
    outcomes = []
    for result in results:
        history = result.metrics_dataframe
        best = (
            float(history[METRIC].max())
            if history is not None and METRIC in history
            else float("nan")
        )
        metrics = result.metrics or {}
        outcomes.append(
            TrialOutcome(
                trial_id=metrics.get("trial_id", result.path.rsplit("/", 1)[-1]),
                config={k: result.config.get(k) for k in params},
                best_val_auroc=best,
                ended=classify(metrics, result.error is not None),
            )
        )
    return outcomes


def _optuna_searcher_class():
    """Ray's OptunaSearch, told the truth about trials that ASHA stopped.

    Out of the box Ray tells Optuna that a trial ASHA stopped is COMPLETE with its last,
    half-trained value, so TPE mixes low-fidelity scores with finished ones. Here a trial
    that ended before its schedule did (and neither diverged nor crashed) is PRUNED, with
    its per-epoch values as intermediate values; finished trials are COMPLETE; crashed
    ones FAIL. Intermediate values are keyed by epoch, so a trial replayed after a
    restart reports each epoch once. (Built in a function: ray is imported lazily.)
    """
    from optuna.trial import TrialState
    from ray.tune.search.optuna import OptunaSearch

    class PrunedAwareOptunaSearch(OptunaSearch):
        def on_trial_result(self, trial_id: str, result: dict) -> None:
            if trial_id in self._completed_trials or self.metric not in result:
                return
            ot_trial = self._ot_trials[trial_id]
            epoch = int(round(result["epoch"]))
            frozen = self._ot_study._storage.get_trial(ot_trial._trial_id)
            if epoch not in frozen.intermediate_values:
                ot_trial.report(result[self.metric], epoch)

        def on_trial_complete(
            self, trial_id: str, result: dict | None = None, error: bool = False
        ) -> None:
            if trial_id in self._completed_trials:
                return
            if result and not error:
                # Tune hands the result that made ASHA stop a trial to on_trial_complete
                # only, never to on_trial_result: record it as the last intermediate value.
                self.on_trial_result(trial_id, result)
            ot_trial = self._ot_trials[trial_id]
            value = None if not result else result.get(self.metric)
            if error or value is None:
                state, value = TrialState.FAIL, None
            elif result.get("diverged") or result.get("schedule_done"):
                state = TrialState.COMPLETE  # a diverged trial is complete at chance level
            else:
                state, value = TrialState.PRUNED, None  # stopped early by the scheduler
            try:
                self._ot_study.tell(ot_trial, value, state=state)
            except Exception as exc:  # e.g. a NaN value: keep the search going, say so
                logger.warning("Optuna refused the result of %s: %s", trial_id, exc)
            self._completed_trials.add(trial_id)

    return PrunedAwareOptunaSearch


if __name__ == "__main__":
    sys.exit(main())
