"""The search end to end on a real local Ray, with real Optuna and ASHA."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from search_fixtures import run_search_cli, search_flags, write_space

from tune_eegpt import search
from tune_eegpt.shell_command import python_command

ray = pytest.importorskip("ray")
import optuna  # noqa: E402
from ray import tune  # noqa: E402
from trainable_fixtures import (  # noqa: E402
    crash_once,
    kill_worker_once,
    lose_checkpoint_once,
    shipped_by_value,
)

from tune_eegpt.optuna_journal import JOURNAL  # noqa: E402


@pytest.fixture(scope="module")
def ray_cluster():
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    with shipped_by_value():
        ray.init(num_cpus=2, include_dashboard=False, configure_logging=False)
        yield ray.get_runtime_context().gcs_address
        ray.shutdown()


@pytest.fixture(scope="module")
def base(tiny_base):
    return tiny_base


run = run_search_cli


def tune_hparams(trial_dir: Path) -> dict:
    """The hyperparameters of a trial's HParams session, as TensorBoard reads them."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    events = EventAccumulator(str(trial_dir))
    events.Reload()
    for content in events.PluginTagToContent("hparams").values():
        data = plugin_data_pb2.HParamsPluginData.FromString(content)
        if data.HasField("session_start_info"):
            values = data.session_start_info.hparams
            return {k: getattr(v, v.WhichOneof("kind")) for k, v in values.items()}
    raise AssertionError(f"no HParams session in {trial_dir}")


class JournalReader(tune.Callback):
    """At each trial's end, another Python process opens the search's Optuna journal with
    optuna.load_study, as optuna-dashboard would, and says what it holds."""

    def __init__(self, experiment: Path, name: str, at: int = 3) -> None:
        self.experiment, self.name, self.seen, self.at, self.ended = experiment, name, [], at, 0

    def on_trial_complete(self, iteration, trials, trial, **info):
        self.ended += 1
        if self.ended != self.at:
            return  # once, mid-search, is the point: the end is checked by the test
        code = (
            "import json, optuna\n"
            "from optuna.storages import JournalStorage\n"
            "from optuna.storages.journal import JournalFileBackend\n"
            f"s = JournalStorage(JournalFileBackend({str(self.experiment / JOURNAL)!r}))\n"
            f"t = optuna.load_study(study_name={self.name!r}, storage=s).trials\n"
            "print(json.dumps({'trials': len(t), 'ended': sum(x.state.is_finished() for x in t)}))"
        )
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        self.seen.append(json.loads(done.stdout))


def trial_rows(experiment):
    rows = {}
    for result_file in experiment.glob("*/result.json"):
        lines = [json.loads(line) for line in result_file.read_text().splitlines() if line]
        rows[result_file.parent.name] = lines
    return rows


@pytest.mark.slow
def test_small_search_asha_stops_trials_and_optuna_learns_pruned(
    ray_cluster, base, tmp_path, capsys
):
    folder, config = base
    space = write_space(
        tmp_path,
        "s",
        {
            "max_lr": {"distribution": "loguniform", "low": 1e-4, "high": 3e-2},
            "pct_start": {"distribution": "uniform", "low": 0.3, "high": 0.5},
        },
    )
    reader = JournalReader(tmp_path / "small", "small")
    code = run(
        search_flags(
            config,
            space,
            tmp_path,
            "small",
            *("--num-samples", "8", "--max-concurrent", "1"),
            *("--grace-period", "1", "--reduction-factor", "2"),
        ),
        callbacks=[reader],
    )
    assert code == 0
    experiment = tmp_path / "small"
    rows = trial_rows(experiment)
    assert len(rows) == 8
    last = {name: r[-1] for name, r in rows.items()}
    stopped = [n for n, r in last.items() if not r["schedule_done"]]
    finished = [n for n, r in last.items() if r["schedule_done"]]
    assert stopped, "ASHA stopped no trial"
    assert finished
    assert all(r["epoch"] < 4 for n, r in last.items() if n in stopped)
    study = pd.read_csv(experiment / search.OPTUNA_TRIALS)
    assert (study["state"] == "PRUNED").sum() == len(stopped)
    assert (study["state"] == "COMPLETE").sum() == len(finished)
    pruned = study[study["state"] == "PRUNED"]
    assert pruned["intermediate_values"].map(lambda v: len(json.loads(v)) >= 1).all()
    assert (experiment / search.SEARCH_INFO).is_file()
    trial_dir = next(experiment.glob("*/trainer"))
    assert (trial_dir / "steps.csv").is_file()
    # the journal, read by another process while the search ran and after it ended
    (seen,) = reader.seen  # one trial at a time: the third has ended, a fourth may be asked
    assert seen["ended"] == 3 and seen["trials"] in (3, 4), seen
    journal = optuna.load_study(
        study_name="small",
        storage=optuna.storages.JournalStorage(
            optuna.storages.journal.JournalFileBackend(str(experiment / "optuna.journal"))
        ),
    )
    by_params = {(t.params["max_lr"], t.params["pct_start"]): t for t in journal.trials}
    assert len(journal.trials) == len(by_params) == 8
    assert {t.state.name for t in journal.trials} == {"COMPLETE", "PRUNED"}
    for result_rows in rows.values():
        config_of = result_rows[-1]["config"]
        ot = by_params[(config_of["max_lr"], config_of["pct_start"])]
        assert ot.state.name == ("COMPLETE" if result_rows[-1]["schedule_done"] else "PRUNED")
        assert ot.intermediate_values == {int(r["epoch"]): r["val_auroc"] for r in result_rows}
    assert list(study["state"]) == [t.state.name for t in journal.trials]  # the CSV is it
    # TensorBoard's HParams view, read with TensorBoard's own reader: the searched values
    # and the fixed ones (the base config's 4 epochs and batch 16, which no one searched)
    hparams = tune_hparams(next(iter(experiment.glob("*/events.out.tfevents.*"))).parent)
    assert {"max_lr", "pct_start", "batch_size", "epochs", "seed"} <= set(hparams)
    assert hparams["epochs"] == 4 and hparams["batch_size"] == 16
    # Tune's last status block and the summary name the same best trial and folder
    out = capsys.readouterr().out
    tune_best = re.findall(r"Current best trial: (\S+) with best_val_auroc=(\S+) ", out)[-1]
    ours = re.search(r"best trial: (\S+)  val_auroc (\S+) ", out)
    assert tune_best[0] == ours[1] and float(tune_best[1]) == pytest.approx(
        float(ours[2]), abs=5e-5
    )
    assert re.findall(r"Result logdir: (.*)", out)[-1] == str(experiment)
    assert "driver_artifacts" not in out


@pytest.mark.slow
@pytest.mark.parametrize("failure", [crash_once, lose_checkpoint_once])
def test_crashed_trial_resumes_from_checkpoint_with_same_result(
    ray_cluster, base, tmp_path, failure
):
    # lose_checkpoint_once: the checkpoint Tune restores from is gone, a newer folder holds
    # the same state (what a hard-killed driver can leave): the trial goes on from it
    folder, config = base
    space = write_space(tmp_path, "one", {"max_lr": {"distribution": "choice", "values": [3e-3]}})
    assert run(search_flags(config, space, tmp_path, "clean", "--num-samples", "1")) == 0
    marker = tmp_path / "crashed-once"
    crash = search_flags(config, space, tmp_path, "crash", "--num-samples", "1")
    assert run(crash, trainable=failure(marker, epoch=2)) == 0
    assert marker.exists()
    (clean,) = trial_rows(tmp_path / "clean").values()
    (crashed,) = trial_rows(tmp_path / "crash").values()
    by_epoch = {r["epoch"]: r for r in crashed}  # replayed epochs: keep the last row
    assert sorted(by_epoch) == [1.0, 2.0, 3.0, 4.0]
    steps = [by_epoch[e]["global_step"] for e in sorted(by_epoch)]
    assert steps == [r["global_step"] for r in clean]  # continued, never reset
    for key in ("val_auroc", "train_loss", "lr", "global_step", "samples_seen"):
        assert by_epoch[4.0][key] == clean[-1][key], key


@pytest.mark.slow
def test_a_killed_worker_s_trials_restore_from_checkpoints_and_nothing_runs_twice(
    ray_cluster, base, tmp_path, capsys
):
    folder, config = base
    space = write_space(
        tmp_path, "w", {"max_lr": {"distribution": "loguniform", "low": 1e-3, "high": 1e-2}}
    )
    flags = ("--num-samples", "4", "--grace-period", "4", "--pack", "4")
    clean = search_flags(config, space, tmp_path, "clean", *flags)
    assert run(clean) == 0
    marker = tmp_path / "worker-killed"
    assert (
        run(
            search_flags(config, space, tmp_path, "killed", *flags),
            trainable=kill_worker_once(marker),
        )
        == 0
    )
    assert marker.exists()  # the worker's pid: it was killed once
    from ray.tune import ExperimentAnalysis

    trials = ExperimentAnalysis(str(tmp_path / "killed")).trials
    assert len(trials) == 4 and all(t.status == "TERMINATED" for t in trials)
    assert sum(t.num_failures for t in trials) >= 1  # the trials of the pass errored...
    rows = trial_rows(tmp_path / "killed")
    clean_rows = {
        tuple(sorted(r[-1]["config"].items())): r for r in trial_rows(tmp_path / "clean").values()
    }
    for trial_rows_ in rows.values():
        epochs = [r["epoch"] for r in trial_rows_]
        assert epochs == [1.0, 2.0, 3.0, 4.0]  # ...restored, and no epoch reported twice
        same = clean_rows[tuple(sorted(trial_rows_[-1]["config"].items()))]
        for key in ("val_auroc", "global_step", "samples_seen", "lr"):  # as if never killed
            assert trial_rows_[-1][key] == same[-1][key], key
    assert "passes of the device workers" in capsys.readouterr().out


@pytest.mark.slow
def test_diverging_trial_is_recorded_and_search_goes_on(ray_cluster, base, tmp_path, capsys):
    folder, config = base
    space = write_space(
        tmp_path, "div", {"max_lr": {"distribution": "choice", "values": [1e20, 3e-3]}}
    )
    extra = ("--num-samples", "3", "--max-concurrent", "1")
    code = run(search_flags(config, space, tmp_path, "div", *extra))
    assert code == 0
    last = [r[-1] for r in trial_rows(tmp_path / "div").values()]
    diverged = [r for r in last if r["diverged"]]
    assert diverged and all(r["config"]["max_lr"] == 1e20 for r in diverged)
    assert all(r["training_iteration"] == 1 for r in diverged)  # stopped at once
    assert any(r["schedule_done"] for r in last)  # the others trained to the end
    out = capsys.readouterr().out
    counts = {k: sum(bool(r[k]) for r in last) for k in ("diverged", "schedule_done")}
    assert (
        f"trials: 3  finished {counts['schedule_done']}, stopped by ASHA 0, diverged "
        f"{counts['diverged']}, crashed 0\n"
    ) in out
    assert f"next: {python_command()} -m analysis report {tmp_path / 'div'}\n" in out
    # resuming it finds nothing to do, and says so instead of restoring it silently
    assert search.main(search_flags(config, space, tmp_path, "div", *extra, "--resume")) == 0
    again = capsys.readouterr().out
    assert (
        f"{tmp_path / 'div'}: this search has finished (all 3 trials ended), nothing to "
        f"resume. Its results: {python_command()} -m analysis report {tmp_path / 'div'}"
    ) in again
    assert "resuming" not in again


@pytest.mark.slow
def test_killed_driver_resumes_without_losing_or_repeating_trials(ray_cluster, base, tmp_path):
    folder, config = base
    space = write_space(
        tmp_path, "k", {"max_lr": {"distribution": "loguniform", "low": 1e-3, "high": 1e-2}}
    )
    extra = ("--num-samples", "6", "--max-concurrent", "1", "--grace-period", "4")
    cmd = search_command(config, space, tmp_path, "k", ray_cluster, *extra)
    driver = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    experiment = tmp_path / "k"
    deadline = time.time() + 180
    while time.time() < deadline:
        done = [r for r in trial_rows(experiment).values() if r and r[-1].get("schedule_done")]
        if len(done) >= 2:
            break
        time.sleep(0.5)
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    before = trial_rows(experiment)
    finished_before = {n: r for n, r in before.items() if r and r[-1].get("schedule_done")}
    assert 2 <= len(finished_before) < 6
    resumed = subprocess.run(cmd + ["--resume"], capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    from ray.tune import ExperimentAnalysis

    trials = ExperimentAnalysis(str(experiment)).trials
    assert len(trials) == 6  # every trial of the experiment, none lost
    errors = [Path(t.error_file).read_text()[-2000:] for t in trials if t.error_file]
    statuses = [(t.trial_id, t.status) for t in trials]
    assert all(t.status == "TERMINATED" for t in trials), (statuses, errors, resumed.stdout[-2000:])
    after = trial_rows(experiment)
    in_state = {Path(t.path).name for t in trials}
    assert all(after[name][-1]["schedule_done"] for name in in_state)
    for name, rows in finished_before.items():
        assert after[name] == rows  # finished trials were not run again
    # A trial started after the driver's last state snapshot is unknown to Tune: its
    # folder stays behind, outside the experiment, and its configuration runs again.
    assert len(set(after) - in_state) <= 1
    # one Optuna study across both drivers: each of Tune's trials once, complete, and a
    # trial the killed driver had asked for but Tune never kept told FAIL
    study = optuna.load_study(
        study_name="k",
        storage=optuna.storages.JournalStorage(
            optuna.storages.journal.JournalFileBackend(str(experiment / JOURNAL))
        ),
    )
    complete = [t for t in study.trials if t.state.name == "COMPLETE"]
    assert sorted(t.params["max_lr"] for t in complete) == sorted(
        t.config["max_lr"] for t in trials
    )
    assert all(t.state.name in ("COMPLETE", "FAIL") for t in study.trials)
    assert len(study.trials) - len(complete) <= 1


def search_command(config, space, storage, name, address, *extra):
    flags = search_flags(config, space, storage, name, "--address", address, *extra)
    return [sys.executable, "-m", "tune_eegpt.search", *flags]


def plain_user_env(tmp_path):
    """The environment a user's shell has: no RAY_AUTH_MODE (Ray would then print its
    token notice), and a HOME of its own for the token Ray writes."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_AUTH_MODE"}
    env["HOME"] = str(tmp_path / "home")
    env["PYTHONPATH"] = os.pathsep.join(
        [str(Path(__file__).resolve().parents[1]), env.get("PYTHONPATH", "")]
    )
    return env


QUIET = (
    "Token authentication",
    "ExperimentalWarning",
    "Tuner.restore",
    "Traceback",
    "AttributeError",
)


@pytest.mark.slow
def test_ctrl_c_during_trials_says_how_to_resume_and_exits_130(ray_cluster, base, tmp_path):
    folder, config = base
    space = write_space(
        tmp_path, "c", {"max_lr": {"distribution": "loguniform", "low": 1e-3, "high": 1e-2}}
    )
    # 40 epochs: a trial that lasts seconds, so Ctrl-C after its first report lands mid-trial
    # (at the fixture's 4 epochs a packed-engine trial ends within a fraction of a second)
    flags = ["--num-samples", "6", "--max-concurrent", "1", "--grace-period", "4", "--epochs", "40"]
    cmd = search_command(config, space, tmp_path, "ctrlc", ray_cluster, *flags)
    driver = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=plain_user_env(tmp_path),
    )
    experiment = tmp_path / "ctrlc"
    deadline = time.time() + 180
    while time.time() < deadline and not any(trial_rows(experiment).values()):
        time.sleep(0.2)
    driver.send_signal(signal.SIGINT)
    out, _ = driver.communicate(timeout=180)
    assert driver.returncode == 130, out[-3000:]
    for noise in QUIET:
        assert noise not in out, noise
    resume = search.resume_command(cmd[3:], "ctrlc")
    assert f"interrupted; resume with:\n  {resume}\n" in out
    from ray.tune import ExperimentAnalysis

    # not ended: Tune still lists it as running and it has not reported its last epoch (a
    # trial that reported schedule_done just before Ctrl-C has finished, whatever Tune says)
    trials = ExperimentAnalysis(str(experiment)).trials
    running = sum(
        t.status in ("RUNNING", "PENDING", "PAUSED")
        and not (t.last_result or {}).get("schedule_done")
        for t in trials
    )
    assert running >= 1
    summary = next(line for line in out.splitlines() if line.startswith("trials: "))
    assert summary.endswith(f", crashed 0, interrupted {running}"), summary
    assert "-m analysis report" not in out


@pytest.mark.slow
def test_ctrl_c_before_the_trials_start_is_one_clear_line(ray_cluster, base, tmp_path):
    folder, config = base
    space = write_space(tmp_path, "e", {"max_lr": {"distribution": "choice", "values": [3e-3]}})
    cmd = search_command(config, space, tmp_path, "early", ray_cluster, "--num-samples", "1")
    driver = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=plain_user_env(tmp_path),
    )
    first = ""  # Ray's own "Connecting to existing Ray cluster" line comes first
    while not first.splitlines()[-1:] or not first.splitlines()[-1].startswith("preparing data"):
        line = driver.stdout.readline()
        assert line, first
        first += line
    driver.send_signal(signal.SIGINT)
    out, _ = driver.communicate(timeout=180)
    out = first + out
    assert driver.returncode == 130, out[-3000:]
    for noise in QUIET:
        assert noise not in out, noise
    assert "interrupted" in out and f"{python_command()} -m tune_eegpt.search " in out


@pytest.mark.slow
def test_bad_flags_give_clear_errors(capsys):
    assert search.main(["--num-samples", "0"]) == 2
    assert "--num-samples=0 is not allowed: expected an integer >= 1" in capsys.readouterr().err
    assert search.main(["--gpus-per-trial", "-1"]) == 2
    assert "--gpus-per-trial=-1.0 is not allowed" in capsys.readouterr().err
    assert search.main(["--space", "nope"]) == 2
    assert "no search space named 'nope'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        search.main(["--num-samples", "many"])
