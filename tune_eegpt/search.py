"""``python -m tune_eegpt.search``: search the probe's schedule with Ray Tune, Optuna TPE and ASHA.

With no arguments it runs the built-in default end to end: the synthetic TUAB-like
corpus, the small encoder, the ``paper`` space, 16 trials. With its searcher
(``optuna_searcher.py``), its status blocks (``search_progress.py``) and the data
preparation on Ray (``prepare_on_ray.py``) the modules of the library that import ray.

Seams: :func:`resolve` turns arguments into (run config, space), checking every mistake
before any work; :func:`run_search` takes the trainable and Tune callbacks as parameters,
so tests and benchmarks run the real search with their own.
"""

from __future__ import annotations

import argparse
import errno
import json
import logging
import os
import shutil
import sys
import time
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from importlib import resources
from pathlib import Path
from typing import Any

from search_spaces import SearchSpace, load_space
from tune_eegpt.atomic_write import DiskFullError, atomic_write_text, disk_full_cause, readable_size
from tune_eegpt.cli_parser import ArgumentParser
from tune_eegpt.config import ConfigError, RunConfig, require_real_inputs
from tune_eegpt.data.tuab_index import index_tuab
from tune_eegpt.end_state import end_state
from tune_eegpt.search_report import TrialOutcome, search_summary_lines
from tune_eegpt.shell_command import module_command

METRIC, MODE = "val_auroc", "max"
SEARCH_INFO = "tune_eegpt_search.json"  # beside Tune's files: what analysis needs to know
OPTUNA_TRIALS = "optuna_trials.csv"  # the study as Optuna saw it: states, values
DEFAULT_CONFIG = "synthetic_default.yaml"
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as a shell reports a command stopped by Ctrl-C
logger = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(
        prog=module_command("tune_eegpt.search"),
        allow_abbrev=False,
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
        "--pack",
        type=int,
        default=16,
        help="trials each node's device worker trains together in one pass, at most; 0: "
        "every trial trains in its own process instead (default: %(default)s)",
    )
    p.add_argument(
        "--cpus-per-trial",
        type=float,
        default=1.0,
        help="with --pack 0: CPUs each trial reserves (default: %(default)s)",
    )
    p.add_argument(
        "--gpus-per-trial",
        type=float,
        default=0.0,
        help="with --pack 0: GPUs each trial reserves; fractions share a GPU, e.g. 0.25 "
        "(default: %(default)s)",
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
    return p


def resolve(args: argparse.Namespace) -> tuple[RunConfig, SearchSpace]:
    """Command-line arguments -> (run config, search space), every mistake found before
    any data is prepared or Ray is started (ConfigError, FileNotFoundError, ValueError)."""
    check_args(args)
    cfg = base_run_config(args)
    space = load_space(args.space)
    cfg = cfg.with_overrides(space.fixed, source=f"space {space.name}: fixed")
    require_real_inputs(cfg, source=f"--config {args.config}" if args.config else "the run config")
    space.check_values(cfg)
    from tune_eegpt.pipeline import check_encoder_checkpoint

    check_encoder_checkpoint(cfg)  # before the data: a bad file is seconds, not hours
    if args.resume:
        storage = storage_path(args.storage)
        if not args.name:
            args.name = newest_experiment(storage)
        elif "://" not in storage and not (Path(storage) / args.name / "tuner.pkl").is_file():
            raise FileNotFoundError(
                f"--resume --name {args.name}: no experiment {Path(storage) / args.name} "
                f"(no tuner.pkl there); experiments under --storage {args.storage}: "
                f"{_experiments(storage) or 'none'}"
            )
        if "://" not in storage:
            refuse_finished(f"{storage}/{args.name}")
    return cfg, space


class ExperimentFinished(Exception):
    """``--resume`` of an experiment in which every trial has ended: nothing to do."""


def refuse_finished(experiment: str) -> None:
    """Raises ExperimentFinished when every trial the search asked for has ended (none
    errored, none still to run): Tune would restore it, run nothing and print nothing."""
    info_path = Path(experiment) / SEARCH_INFO
    if not info_path.is_file():
        return
    wanted = json.loads(info_path.read_text()).get("num_samples")
    from ray.tune import ExperimentAnalysis

    try:
        trials = ExperimentAnalysis(experiment).trials
    except Exception:  # an unreadable state is for Tune's restore to report
        return
    if wanted and len(trials) >= wanted and all(t.status == "TERMINATED" for t in trials):
        raise ExperimentFinished(
            f"{experiment}: this search has finished (all {len(trials)} trials ended), "
            f"nothing to resume. Its results: {module_command('analysis', 'report', experiment)}"
            "; for more trials, start a new search (another --name)"
        )


def base_run_config(args: argparse.Namespace) -> RunConfig:
    if args.config is not None:
        if not args.config.is_file():
            raise FileNotFoundError(f"--config {args.config}: no such file")
        cfg = RunConfig.from_yaml(args.config)
    else:
        cfg = RunConfig.from_yaml(str(resources.files("tune_eegpt") / "configs" / DEFAULT_CONFIG))
    overrides: dict[str, Any] = {}
    if args.epochs is not None:
        overrides["epochs"] = args.epochs
    if args.data_root is not None:
        overrides["data_root"] = str(Path(args.data_root).expanduser().resolve())
    if args.cache_dir is not None:
        overrides["cache_dir"] = (
            args.cache_dir
            if "://" in args.cache_dir
            else str(Path(args.cache_dir).expanduser().resolve())
        )
    if args.checkpoint is not None:
        overrides["checkpoint"] = str(Path(args.checkpoint).expanduser().resolve())
        overrides["encoder"] = "large"
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
    if args.epochs is not None and args.epochs < 1:
        bad("--epochs", args.epochs, "an integer >= 1")
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
    if args.pack < 0:
        bad("--pack", args.pack, "an integer >= 0 (0: no device worker)")
    if args.max_failures < 0:
        bad("--max-failures", args.max_failures, "an integer >= 0")
    if args.resume and not args.name and "://" in args.storage:
        raise ConfigError(f"--resume with --storage {args.storage}: give the experiment's --name")
    if args.data_root is not None:
        root = Path(args.data_root).expanduser()
        if not root.is_dir():
            raise FileNotFoundError(f"--data-root {args.data_root}: no such folder")
        if not len(index_tuab(root)):  # names only: no file is opened
            raise FileNotFoundError(
                f"--data-root {args.data_root}: no TUAB recording in this folder (expected "
                "{train,eval}/{normal,abnormal}/**/*.edf); give TUAB's 'edf' folder"
            )
    if args.checkpoint is not None and not Path(args.checkpoint).expanduser().is_file():
        raise FileNotFoundError(f"--checkpoint {args.checkpoint}: no such file")


def storage_path(storage: str) -> str:
    return storage if "://" in storage else str(Path(storage).expanduser().resolve())


def _experiments(storage: str) -> list[str]:
    return sorted(p.parent.name for p in Path(storage).glob("*/tuner.pkl"))


def newest_experiment(storage: str) -> str:
    found = sorted(Path(storage).glob("*/tuner.pkl"), key=lambda p: p.stat().st_mtime)
    if not found:
        raise FileNotFoundError(f"--resume: no experiment under {storage}; give --name")
    return found[-1].parent.name


def resume_command(argv: list[str], name: str) -> str:
    """The command that resumes this search: the same flags, with --resume --name NAME."""
    rest, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--name":
            skip = True
        elif arg != "--resume" and not arg.startswith("--name="):
            rest.append(arg)
    return module_command("tune_eegpt.search", "--resume", "--name", name, *rest)


def interrupted_line(experiment: str, argv: Sequence[str] | None, name: str) -> str:
    """What to type after an interrupt: resume the experiment, or (if Tune had not saved
    one yet) run the same search again."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if "://" in experiment or (Path(experiment) / "tuner.pkl").is_file():
        return f"interrupted; resume with:\n  {resume_command(argv, name)}"
    again = resume_command(argv, name).replace(" --resume", "", 1)
    return f"interrupted before the experiment was saved; nothing to resume. Run again:\n  {again}"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    try:
        cfg, space = resolve(args)
    except ExperimentFinished as exc:
        print(exc)
        return 0
    except (ConfigError, FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.name is None:
        args.name = f"{space.name}-{datetime.now():%Y%m%d-%H%M%S}"
    try:
        return run_search(args, cfg, space, argv=argv)
    except KeyboardInterrupt:  # outside Tune's own SIGINT handling: data, Ray start
        experiment = f"{storage_path(args.storage).rstrip('/')}/{args.name}"
        print(f"\n{interrupted_line(experiment, argv, args.name)}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except DiskFullError as exc:  # preparing the data: one sentence, nothing half-written
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except (ConfigError, FileNotFoundError, ValueError) as exc:  # found preparing the data
        print(f"error: {exc}", file=sys.stderr)
        return 2


def run_search(
    args: argparse.Namespace,
    cfg: RunConfig,
    space: SearchSpace,
    trainable: type | None = None,
    callbacks: Sequence[Any] = (),
    argv: Sequence[str] | None = None,
) -> int:
    """Runs (or resumes) the search ``args`` describe; ``trainable`` defaults to
    ProbeTrainable, ``callbacks`` are Tune callbacks added to the run. Returns the exit
    code: 0 done, 1 every trial crashed, 130 interrupted."""
    quiet_third_party_notices()
    phases = PhaseTimer()
    import ray
    from ray import tune

    from tune_eegpt.prepare_on_ray import prepare_on_ray

    if trainable is None:
        from trainables import ProbeTrainable, WorkerTrial

        trainable = WorkerTrial if args.pack else ProbeTrainable
    phases.lap("imports")
    storage = storage_path(args.storage)
    name = args.name or f"{space.name}-{datetime.now():%Y%m%d-%H%M%S}"
    if not ray.is_initialized():
        if args.address:
            ray.init(address=args.address)
        else:
            ray.init(num_cpus=os.cpu_count(), include_dashboard=False, configure_logging=False)
    phases.lap("Ray start")
    # decoding as Ray tasks over every node, the encoder on a GPU node (prepare_on_ray.py)
    print(f"preparing data (cache: {cfg.data.cache_dir})", flush=True)
    prepared = prepare_on_ray(
        cfg, check_windows=lambda windows: check_trials_fit(cfg, space, windows)
    )
    phases.lap("data")
    registry = None
    if getattr(trainable, "uses_worker", False):
        from trainables.worker_registry import start_registry
        from trainables.worker_trial import TRIAL_CPU

        registry = start_registry(args.pack)  # a device worker per node, on first use
        resources = {"cpu": TRIAL_CPU, "gpu": 0}
        max_concurrent = args.max_concurrent or worker_concurrency(ray.nodes(), args.pack)
    else:
        resources = {"cpu": args.cpus_per_trial, "gpu": args.gpus_per_trial}
        max_concurrent = args.max_concurrent or concurrent_trials(ray.cluster_resources(), args)
    trainable = tune.with_resources(
        tune.with_parameters(trainable, base_config=cfg.to_dict(), prepared=prepared.to_dict()),
        resources,
    )
    experiment = f"{storage.rstrip('/')}/{name}"
    interrupt = InterruptNotice()
    with interrupt:
        if args.resume:
            print(f"resuming {experiment}", flush=True)
            from tune_eegpt.optuna_journal import JOURNAL, repair_journal

            if dropped := repair_journal(experiment):
                print(f"{JOURNAL}: dropped its last record, cut short ({dropped} bytes)")
            tuner = tune.Tuner.restore(
                experiment,
                trainable=trainable,
                resume_unfinished=True,
                resume_errored=True,
                storage_filesystem=storage_filesystem(storage),
            )
        else:
            tuner, study = build_tuner(
                args, cfg, space, trainable, storage, name, max_concurrent, callbacks
            )
            write_search_info(experiment, args, cfg, space)
        resume = resume_command(list(sys.argv[1:] if argv is None else argv), name)
        try:
            with full_storage_said(experiment, resume):
                tuner.fit()
        finally:
            passes = stop_workers(registry)
    phases.lap("trials")
    with full_storage_said(experiment, resume):
        trials = tune.ExperimentAnalysis(experiment).trials
        outcomes = trial_outcomes(trials, list(space.params))
        if any(o.ended == "crashed" for o in outcomes) and storage_full(experiment):
            raise OSError(errno.ENOSPC, "trials crashed with the storage full")
        interrupted = interrupt.seen or any(o.ended == "running" for o in outcomes)
        study = end_study(experiment, name, None if args.resume else study, not interrupted)
        if study is not None:
            write_study(study, experiment)
    print(engine_line(experiment, passes))
    for line in search_summary_lines(
        outcomes, args.threshold, phases.total(), experiment, list(space.params), interrupted
    ):
        print(line)
    print(f"time: {phases}")
    if interrupted:
        print(interrupted_line(experiment, argv, name), flush=True)
        return EXIT_INTERRUPTED
    return 0 if any(o.ended != "crashed" for o in outcomes) else 1


def check_trials_fit(cfg: RunConfig, space: SearchSpace, window_cache: str) -> None:
    """Each trial's schedule against the corpus, once its size is known and before the
    feature pass: a pct_start too short for some corner of the space is refused here, not
    in the trials that draw it."""
    from tune_eegpt.pipeline import train_window_count

    n_train = train_window_count(cfg, window_cache)
    if n_train is not None:
        space.check_schedules(cfg, n_train)


def storage_filesystem(storage: str):
    """How Tune writes the experiment: on a local disk, each file whole or not at all (a
    full disk leaves the last state that was saved, which --resume reads); None (Tune's
    choice, pyarrow's filesystem for the URI) for object storage, where an object appears
    whole anyway."""
    if "://" in storage:
        return None
    from tune_eegpt.atomic_storage import atomic_local_filesystem

    return atomic_local_filesystem()


@contextmanager
def full_storage_said(experiment: str, resume: str) -> Iterator[None]:
    """Turns an error that a full storage caused (ENOSPC in its chain, or a local storage
    with less room left than one trial checkpoint takes) into the search's one line."""
    try:
        yield
    except Exception as exc:
        if disk_full_cause(exc) is None and not storage_full(experiment):
            raise
        raise storage_full_error(experiment, resume) from exc


def storage_full_error(experiment: str, resume: str) -> DiskFullError:
    """The one-line error for a search whose storage ran out of space."""
    free = (
        ""
        if "://" in experiment
        else f" ({readable_size(shutil.disk_usage(experiment).free)} free)"
    )
    return DiskFullError(
        f"no space left on the device of the search's storage{free}: Tune could not save "
        f"the trials' checkpoints and results in {experiment}, so the trials that tried "
        "stopped. The experiment is kept as Tune last saved it. Free some space and resume "
        f"with: {resume}"
    )


def storage_full(experiment: str) -> bool:
    """Less room left beside a local experiment than its largest checkpoint file takes."""
    if "://" in experiment or not Path(experiment).is_dir():
        return False
    sizes = [p.stat().st_size for p in Path(experiment).glob("*/checkpoint_*/*") if p.is_file()]
    return shutil.disk_usage(experiment).free < max(sizes, default=1 << 20)


def worker_concurrency(nodes: list[dict[str, Any]], pack: int) -> int:
    """Trials at once with device workers: one per CPU of the cluster (each is a Python
    process, a few seconds of start-up on a small machine), at most ``pack`` per node."""
    alive = [n for n in nodes if n.get("Alive") and n.get("Resources", {}).get("CPU", 0)]
    return max(1, sum(min(pack, int(n["Resources"]["CPU"])) for n in alive))


def stop_workers(registry: Any) -> list[int]:
    """Ends the search's device workers; returns the trial count of each pass they ran."""
    if registry is None:
        return []
    import ray

    try:
        sizes = ray.get(registry.pack_sizes.remote(), timeout=60)
    except (ray.exceptions.RayError, TimeoutError):
        sizes = []
    ray.kill(registry)  # and with it the workers it started
    return sizes


def engine_line(experiment: str, passes: list[int]) -> str:
    """Which step engine the trials trained with, and how many trials a pass held."""
    engines: dict[str, int] = {}
    for result in Path(experiment).glob("*/result.json") if "://" not in experiment else []:
        first = result.open().readline()
        if first:
            name = json.loads(first).get("engine", "unknown")
            engines[name] = engines.get(name, 0) + 1
    used = ", ".join(f"{name} ({n} trials)" for name, n in sorted(engines.items())) or "unknown"
    if not passes:
        return f"step engine: {used}; each trial trained in its own process"
    return (
        f"step engine: {used}; {len(passes)} passes of the device workers, "
        f"{sum(passes) / len(passes):.1f} trials per pass on average, {max(passes)} at most"
    )


def quiet_third_party_notices() -> None:
    """The plain-Python commands that start Ray (search, analysis confirm) show our lines,
    not Ray's token-authentication notice or Optuna's experimental warnings."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # Tune's classic table, our columns
    # snapshot the experiment state at least every second, so that a driver killed hard
    # loses at most the trials it started in its last second
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "1")
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    # "Token authentication is enabled/disabled for this Ray cluster...": Ray's default
    # stays as it is, only the notice goes
    logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(
        logging.ERROR
    )
    import optuna

    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


class InterruptNotice(logging.Filter):
    """While active, notes that Tune saw Ctrl-C and drops its own resume hint
    (``Tuner.restore(...)``, which is not how this command resumes) and its list of the
    trials that did not complete: the summary says both in our words."""

    HIDDEN = ("Experiment has been interrupted", "Trials did not complete")
    LOGGERS = ("ray.tune.tune", "ray.tune")

    def __init__(self) -> None:
        super().__init__()
        self.seen = False

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if message.startswith("Stop signal received"):
            self.seen = True
        return not message.startswith(self.HIDDEN)

    def __enter__(self) -> InterruptNotice:
        for name in self.LOGGERS:
            logging.getLogger(name).addFilter(self)
        return self

    def __exit__(self, *exc: object) -> None:
        for name in self.LOGGERS:
            logging.getLogger(name).removeFilter(self)


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


def build_tuner(
    args: argparse.Namespace,
    cfg: RunConfig,
    space: SearchSpace,
    trainable: Any,
    storage: str,
    name: str,
    max_concurrent: int,
    callbacks: Sequence[Any] = (),
):
    import optuna
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search import ConcurrencyLimiter

    from tune_eegpt.optuna_journal import journal_storage
    from tune_eegpt.optuna_searcher import PrunedAwareOptunaSearch
    from tune_eegpt.search_progress import ExperimentReporter, HParamsWithFixed, fixed_hparams

    n_startup = min(10, max(3, args.num_samples // 3))
    start = space.start_point(cfg)
    journal = journal_storage(f"{storage.rstrip('/')}/{name}")
    searcher = PrunedAwareOptunaSearch(
        space=space.params,
        metric=METRIC,
        mode=MODE,
        sampler=optuna.samplers.TPESampler(seed=args.seed, n_startup_trials=n_startup),
        points_to_evaluate=[start] if start else None,
        storage=journal,
        study_name=name if journal is not None else None,
    )
    study = searcher.study
    searcher = ConcurrencyLimiter(searcher, max_concurrent=max_concurrent)
    scheduler = ASHAScheduler(
        time_attr="epoch",  # rungs in epochs: the same data for every accum_steps
        max_t=cfg.train.epochs,
        grace_period=min(args.grace_period, cfg.train.epochs),
        reduction_factor=args.reduction_factor,
    )
    params = list(space.params)
    reporter = ExperimentReporter(
        parameter_columns=params,
        metric_columns=["epoch", "val_auroc", "best_val_auroc", "diverged"],
        max_report_frequency=15,
        sort_by_metric=True,
    )
    tuner = tune.Tuner(
        trainable,
        param_space=dict(space.fixed),
        tune_config=tune.TuneConfig(
            metric=METRIC,
            mode=MODE,
            search_alg=searcher,
            scheduler=scheduler,
            num_samples=args.num_samples,
            reuse_actors=True,
        ),
        run_config=tune.RunConfig(
            name=name,
            storage_path=storage,
            storage_filesystem=storage_filesystem(storage),
            checkpoint_config=tune.CheckpointConfig(
                checkpoint_frequency=1,
                checkpoint_at_end=True,
                num_to_keep=1,  # the best by val_auroc; Tune also keeps the latest
                checkpoint_score_attribute=METRIC,
                checkpoint_score_order=MODE,
            ),
            failure_config=tune.FailureConfig(max_failures=args.max_failures),
            callbacks=[HParamsWithFixed(fixed_hparams(cfg, space.params)), *callbacks],
            # the trainer's per-step logs (steps.csv, TensorBoard) live in each trial's
            # working directory; copy them to the trial's folder in the storage
            sync_config=tune.SyncConfig(sync_artifacts=True),
            progress_reporter=reporter,
            verbose=1,
        ),
    )
    return tuner, study


def end_study(experiment: str, name: str, in_memory: Any, ended: bool) -> Any:
    """The search's Optuna study after ``tuner.fit``: the journal's, else ``in_memory``.
    When every trial has ``ended``, trials a killed driver had asked for and Tune never
    kept are told FAIL."""
    from tune_eegpt.optuna_journal import close_lost_trials, load_journal_study

    study = load_journal_study(experiment, name)
    if study is None:
        return in_memory
    lost = close_lost_trials(study) if ended else 0
    if lost:
        print(f"optuna: {lost} trial(s) asked for by the killed driver, never run: told FAIL")
    return study


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
        "pack": args.pack,
    }
    write_text(experiment, SEARCH_INFO, json.dumps(info, indent=2, default=str))


def write_text(experiment: str, name: str, text: str) -> None:
    """Writes ``experiment/name`` on local disk (atomically) or through pyarrow's
    filesystems for a URI (s3://, gs://...), where an object appears whole."""
    if "://" not in experiment:
        atomic_write_text(Path(experiment) / name, text)
        return
    import pyarrow.fs as pafs

    fs, root = pafs.FileSystem.from_uri(experiment)
    fs.create_dir(root, recursive=True)
    with fs.open_output_stream(f"{root.rstrip('/')}/{name}") as out:
        out.write(text.encode())


def trial_outcomes(trials: list, params: list[str]) -> list[TrialOutcome]:
    """Tune's trials (as ExperimentAnalysis reads them back) -> how each one ended."""
    outcomes = []
    for trial in trials:
        last = trial.last_result or None
        best = trial.metric_analysis.get(METRIC, {}).get("max", float("nan"))
        outcomes.append(
            TrialOutcome(
                trial_id=trial.trial_id,
                config={k: (trial.config or {}).get(k) for k in params},
                best_val_auroc=float(best),
                ended=end_state(last, trial.status, trial.status == "ERROR"),
            )
        )
    return outcomes


if __name__ == "__main__":
    sys.exit(main())
