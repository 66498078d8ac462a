"""Cluster mode: the launcher configs pass Ray's own validation, and the search runs on a
real multi-node Ray cluster (``ray.cluster_utils.Cluster``: a head without CPUs and two
worker nodes with one fake GPU each), spreading its trials and surviving a lost node."""

from __future__ import annotations

import copy
import json
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml
from search_fixtures import run_search_cli, write_space

from tune_eegpt import search

ray = pytest.importorskip("ray")

from ray.autoscaler._private.util import prepare_config, validate_config  # noqa: E402

from trainables import ProbeTrainable  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CLUSTER_FILES = [ROOT / "cluster.yaml", *sorted((ROOT / "cluster").glob("*.yaml"))]


# ---------------------------------------------------------------- launcher configs


def validated(raw: dict) -> dict:
    """What ``ray up`` does to a config before it touches a cloud: fill in the provider's
    defaults, merge the setup commands, then check it against Ray's JSON schema."""
    config = prepare_config(copy.deepcopy(raw))
    validate_config(config)
    return config


@pytest.mark.parametrize("path", CLUSTER_FILES, ids=lambda p: p.name)
def test_cluster_files_pass_rays_validation(path):
    raw = yaml.safe_load(path.read_text())
    config = validated(raw)
    assert config["cluster_name"] == raw["cluster_name"]
    # the project is installed on every node, before Ray starts there
    for key in ("head_setup_commands", "worker_setup_commands"):
        commands = "\n".join(config[key])
        assert "scripts/setup.sh" in commands, key
    if raw["provider"]["type"] == "local":
        assert raw["provider"]["head_ip"] and raw["provider"]["worker_ips"]
        return
    head = config["available_node_types"][config["head_node_type"]]
    gpu_types = [
        t for name, t in config["available_node_types"].items() if name != config["head_node_type"]
    ]
    assert head.get("resources", {}).get("GPU", 0) == 0  # a CPU head
    assert gpu_types and all(t["min_workers"] == 0 for t in gpu_types)  # scales from zero
    assert all(t["resources"].get("GPU", 0) >= 1 for t in gpu_types)
    assert config["max_workers"] >= 1


def test_cloud_config_marks_every_value_to_change():
    text = (ROOT / "cluster.yaml").read_text()
    marked = [line for line in text.splitlines() if "CHANGE ME" in line]
    for placeholder in ("BUCKET", "YOUR_ORG", "ACCOUNT_ID", "ImageId", "region"):
        assert any(placeholder in line for line in marked), placeholder


BREAKAGES = {
    # what is broken: (how, what Ray says)
    "missing required key": (
        lambda raw, w: raw["available_node_types"][w].pop("node_config"),
        "'node_config' is a required property",
    ),
    "misspelt top-level key": (
        lambda raw, w: raw.update(max_wrokers=3),
        "'max_wrokers' was unexpected",
    ),
    "wrong type": (
        lambda raw, w: raw["available_node_types"][w].update(min_workers="zero"),
        "'zero' is not of type 'integer'",
    ),
    "head type not a node type": (
        lambda raw, w: raw.update(head_node_type="no-such-type"),
        "`head_node_type` must be one of",
    ),
    "min_workers above max_workers": (
        lambda raw, w: raw["available_node_types"][w].update(min_workers=raw["max_workers"] + 1),
        "global `max_workers` is smaller than the sum of `min_workers`",
    ),
}


@pytest.mark.parametrize("breakage", list(BREAKAGES))
def test_validation_rejects_a_broken_config(breakage):
    """The check above can fail: Ray's schema and checks reject each of these."""
    import jsonschema

    raw = yaml.safe_load((ROOT / "cluster.yaml").read_text())
    worker = next(n for n in raw["available_node_types"] if n != raw["head_node_type"])
    validated(raw)  # intact, it passes
    breaks, message = BREAKAGES[breakage]
    breaks(raw, worker)
    with pytest.raises((jsonschema.ValidationError, ValueError)) as info:
        validated(raw)
    assert message in str(info.value)


@pytest.mark.slow
def test_prepare_caches_builds_what_the_search_will_use(tiny_base):
    """cluster/prepare_caches.py takes the search's flags and prepares (on local Ray, here)
    the caches that the search will find complete."""
    import contextlib
    import importlib.util
    import io

    from tune_eegpt.pipeline import prepare_data

    spec = importlib.util.spec_from_file_location(
        "prepare_caches", ROOT / "cluster" / "prepare_caches.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    _, config = tiny_base
    # not capsys: the search-space loader sets up Optuna's log handler on the stream
    # current at that moment, which capsys would close under the next tests
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert module.main(["--config", str(config)]) == 0
    out = printed.getvalue()
    cfg, _ = search.resolve(search.build_parser().parse_args(["--config", str(config)]))
    prepared = prepare_data(cfg, progress=False)
    assert f"window cache:  {prepared.window_cache}" in out
    assert f"feature cache: {prepared.feature_cache}" in out
    assert module.main(["--num-samples", "0"]) == 2


# ---------------------------------------------------------------- multi-node search


class NodeTaggedTrainable(ProbeTrainable):
    """ProbeTrainable that says which Ray node ran each epoch (``node_id``).
    ``step_pause_s`` stretches an epoch so that a node can be removed mid-trial."""

    step_pause_s = 0.0

    def step(self):
        result = super().step()
        if self.step_pause_s:
            time.sleep(self.step_pause_s)
        result["node_id"] = ray.get_runtime_context().get_node_id()
        return result


class SlowNodeTaggedTrainable(NodeTaggedTrainable):
    step_pause_s = 1.0


@pytest.fixture(scope="module")
def cluster():
    """A head with no CPU (nothing but the driver's services runs there) and two worker
    nodes of 2 CPUs and one (fake) GPU each. Yields (cluster, {node_id: node})."""
    from ray import cloudpickle
    from ray.cluster_utils import Cluster

    # The trainables above live in this test module, which Ray's workers cannot import:
    # ship them by value.
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    with pytest.MonkeyPatch.context() as mp:
        # Cluster() would write its address to /tmp/ray/ray_current_cluster, where any
        # other ray.init() on this machine (other test runs) would pick it up; and its
        # shutdown would delete someone else's. Keep this cluster to ourselves.
        mp.setattr(ray._private.utils, "write_ray_address", lambda *a, **k: None)
        mp.setattr(ray._common.utils, "reset_ray_address", lambda *a, **k: None)
        c = Cluster(
            initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False}
        )
        workers = [c.add_node(num_cpus=2, num_gpus=1) for _ in range(2)]
        c.wait_for_nodes()
        ray.init(address=c.address, configure_logging=False)
        try:
            yield c, {w.node_id: w for w in workers}
        finally:
            ray.shutdown()
            c.shutdown()
            cloudpickle.unregister_pickle_by_value(sys.modules[__name__])


def trial_rows(experiment: Path) -> dict[str, list[dict]]:
    rows = {}
    for result_file in experiment.glob("*/result.json"):
        try:
            text = result_file.read_text()
        except FileNotFoundError:
            continue
        lines = []
        for line in text.splitlines():
            try:
                lines.append(json.loads(line))
            except json.JSONDecodeError:  # a line being written right now
                break
        rows[result_file.parent.name] = lines
    return rows


def search_args(config, space, storage, name, samples, epochs):
    return [
        "--config",
        str(config),
        "--space",
        str(space),
        "--num-samples",
        str(samples),
        "--epochs",
        str(epochs),
        "--grace-period",
        str(epochs),  # ASHA stops none
        "--pack",  # one process per trial: these trials reserve half a GPU each
        "0",
        "--gpus-per-trial",
        "0.5",
        "--cpus-per-trial",
        "1",
        "--max-failures",
        "3",
        # without it Tune keeps one trial pending at a time (its default for searchers
        # other than random search), and trials trickle in one by one
        "--max-concurrent",
        str(samples),
        "--storage",
        str(storage),
        "--name",
        name,
        "--address",
        "auto",
    ]


def final_trials(experiment: Path):
    from ray.tune import ExperimentAnalysis

    return ExperimentAnalysis(str(experiment)).trials


@pytest.fixture
def lr_space(tmp_path):
    return write_space(
        tmp_path, "lr", {"max_lr": {"distribution": "loguniform", "low": 1e-3, "high": 1e-2}}
    )


@pytest.mark.slow
def test_search_spreads_trials_over_the_gpu_nodes(cluster, tiny_base, lr_space, tmp_path):
    c, workers = cluster
    _, config = tiny_base
    args = search_args(config, lr_space, tmp_path, "spread", samples=4, epochs=3)
    # --address auto is what a user types on the head node; here the driver is already
    # connected to the test cluster, which run_search keeps.
    assert run_search_cli(args, SlowNodeTaggedTrainable) == 0
    rows = trial_rows(tmp_path / "spread")
    assert len(rows) == 4
    per_node = {}
    for name, history in rows.items():
        nodes = {r["node_id"] for r in history}
        assert len(nodes) == 1, name  # no trial moved
        per_node.setdefault(nodes.pop(), []).append(name)
    # 0.5 GPU per trial and one GPU per node: two trials at a time on each worker node,
    # none on the head (no CPU, no GPU there)
    assert set(per_node) == set(workers), per_node
    print(f"\ntrials per node: { {n[:8]: len(t) for n, t in per_node.items()} }")
    trials = final_trials(tmp_path / "spread")
    assert len(trials) == 4 and all(t.status == "TERMINATED" for t in trials)
    assert all(h[-1]["schedule_done"] and h[-1]["epoch"] == 3 for h in rows.values())


@pytest.mark.slow
def test_trials_of_a_lost_node_resume_from_checkpoints_elsewhere(
    cluster, tiny_base, lr_space, tmp_path
):
    c, workers = cluster
    _, config = tiny_base
    epochs = 6
    experiment = tmp_path / "lost"
    victim: dict[str, object] = {}

    search_over = threading.Event()

    def remove_a_node_mid_trial():
        # As soon as a trial has checkpointed its 2nd epoch on some node (and has epochs
        # left), take that node away, as a reclaimed spot instance would go.
        while not search_over.wait(0.2):
            for history in trial_rows(experiment).values():
                if history and history[-1]["epoch"] >= 2 and not history[-1]["schedule_done"]:
                    node_id = history[-1]["node_id"]
                    c.remove_node(workers[node_id])
                    victim["id"] = node_id
                    return

    remover = threading.Thread(target=remove_a_node_mid_trial, daemon=True)
    remover.start()
    args = search_args(config, lr_space, tmp_path, "lost", samples=4, epochs=epochs)
    try:
        code = run_search_cli(args, SlowNodeTaggedTrainable)
    finally:
        search_over.set()
        remover.join(timeout=30)
    assert code == 0
    assert "id" in victim, "no node was removed"
    lost = victim["id"]
    (survivor,) = set(workers) - {lost}

    trials = final_trials(experiment)
    assert len(trials) == 4  # every trial accounted for
    assert all(t.status == "TERMINATED" for t in trials), [t.status for t in trials]
    rows = trial_rows(experiment)
    assert set(rows) == {Path(t.path).name for t in trials}
    resumed = []
    for name, history in rows.items():
        by_epoch = {r["epoch"]: r for r in history}  # a replayed epoch: keep the last row
        assert sorted(by_epoch) == [float(e) for e in range(1, epochs + 1)], name
        steps = [by_epoch[e]["global_step"] for e in sorted(by_epoch)]
        assert steps == [steps[0] * e for e in range(1, epochs + 1)], (name, steps)
        assert history[-1]["schedule_done"], name
        on_lost = [r for r in history if r["node_id"] == lost]
        if not on_lost or on_lost[-1]["schedule_done"]:  # never there, or done in time
            continue
        assert history[-1]["node_id"] == survivor, name
        moved = history[len(on_lost)]  # the first epoch run on the surviving node
        assert history[: len(on_lost)] == on_lost  # lost node first, then the survivor
        # from its last checkpoint: it goes on at the epoch after the last one reported
        # there, or replays that one if the node died before its checkpoint was written;
        # global_step continues where the checkpoint left it
        last_there = on_lost[-1]["epoch"]
        assert last_there <= moved["epoch"] <= last_there + 1, (name, moved["epoch"])
        assert moved["global_step"] == steps[0] * moved["epoch"]
        assert moved["training_iteration"] == moved["epoch"]
        resumed.append((name, last_there, moved["epoch"]))
    # the trial whose 2nd epoch triggered the removal had a checkpoint: not from scratch
    assert any(after >= 2 for _, _, after in resumed), resumed
    print(
        f"\nnode {lost[:8]} removed; resumed on {survivor[:8]} (trial, last epoch on the "
        f"lost node, first epoch after): {resumed}"
    )
