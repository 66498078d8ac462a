"""The search and analysis command lines: one clear line for ordinary mistakes, found
before any data is prepared or Ray started; no abbreviated flags; what the summary says."""

import ast
from pathlib import Path

import pytest
from search_fixtures import write_space

from analysis.__main__ import main as analysis_main
from tune_eegpt import search
from tune_eegpt.search_report import TrialOutcome, search_summary_lines
from tune_eegpt.shell_command import python_command

ROOT = Path(__file__).resolve().parents[1]


def error_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ")
    return lines[0]


@pytest.fixture
def cache(tmp_path):
    return tmp_path / "cache"


def run_search(args, cache):
    code = search.main([*args, "--cache-dir", str(cache)])
    assert not cache.exists(), "data preparation started before the mistake was found"
    return code


def test_missing_data_root_is_one_line(tmp_path, cache, capsys):
    assert run_search(["--data-root", str(tmp_path / "nope")], cache) == 2
    assert error_line(capsys) == f"error: --data-root {tmp_path / 'nope'}: no such folder"


def test_data_root_without_edf_is_one_line(tmp_path, cache, capsys):
    empty = tmp_path / "edf"
    (empty / "train").mkdir(parents=True)
    (empty / "train" / "notes.txt").write_text("no recordings here")
    assert run_search(["--data-root", str(empty)], cache) == 2
    assert error_line(capsys).startswith(f"error: --data-root {empty}: no TUAB recording")


def test_resume_of_an_unknown_experiment_is_one_line(tmp_path, cache, capsys):
    (tmp_path / "runs" / "real").mkdir(parents=True)
    (tmp_path / "runs" / "real" / "tuner.pkl").write_bytes(b"")
    args = ["--resume", "--name", "typo", "--storage", str(tmp_path / "runs")]
    assert run_search(args, cache) == 2
    line = error_line(capsys)
    assert line.startswith(f"error: --resume --name typo: no experiment {tmp_path}/runs/typo")
    assert line.endswith("experiments under --storage " + str(tmp_path / "runs") + ": ['real']")


def test_missing_config_is_one_line(tmp_path, cache, capsys):
    assert run_search(["--config", str(tmp_path / "x.yaml")], cache) == 2
    assert error_line(capsys) == f"error: --config {tmp_path / 'x.yaml'}: no such file"


def test_the_unedited_paper_config_says_what_to_fill_in(cache, capsys):
    paper = ROOT / "tune_eegpt" / "configs" / "paper_aligned.yaml"
    assert run_search(["--config", str(paper)], cache) == 2
    line = error_line(capsys)
    assert line.startswith(f"error: --config {paper}: the large encoder needs real inputs; ")
    assert "fill in data.data_root" in line and "model.checkpoint" in line


def test_space_value_the_config_rejects_is_found_before_the_search(tmp_path, cache, capsys):
    space = write_space(
        tmp_path, "bad", {"max_lr": {"distribution": "choice", "values": [0.0, 1e-3]}}
    )
    assert run_search(["--space", str(space)], cache) == 2
    line = error_line(capsys)
    assert line.startswith(
        "error: space bad: a trial could get max_lr=0.0, which the run config rejects: "
    )
    assert "schedule.max_lr" in line


def test_space_range_end_the_config_rejects(tmp_path, cache, capsys):
    space = write_space(
        tmp_path, "wide", {"pct_start": {"distribution": "uniform", "low": 0.1, "high": 1.0}}
    )
    assert run_search(["--space", str(space)], cache) == 2
    assert "a trial could get pct_start=1.0" in error_line(capsys)


def test_the_shipped_spaces_pass_the_check():
    from search_spaces import available_spaces, load_space

    cfg = search.base_run_config(search.build_parser().parse_args([]))
    for name in available_spaces():
        space = load_space(name)
        space.check_values(cfg.with_overrides(space.fixed))


def test_abbreviated_flags_are_refused(capsys):
    with pytest.raises(SystemExit) as info:
        search.build_parser().parse_args(["--resum"])
    assert info.value.code == 2
    assert "unrecognized arguments: --resum" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        analysis_main(["confirm", "x", "--top", "2"])
    assert "unrecognized arguments: --top" in capsys.readouterr().err


def test_every_argument_parser_in_the_repository_refuses_abbreviations():
    missing = []
    folders = (
        "tune_eegpt",
        "trainables",
        "search_spaces",
        "analysis",
        "benchmarks",
        "cluster",
        "scripts",
        "tests",
    )
    paths = [p for folder in folders for p in (ROOT / folder).rglob("*.py")]
    assert len(paths) > 40
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Call):
                continue
            name = getattr(node.func, "attr", getattr(node.func, "id", ""))
            if name in ("ArgumentParser", "add_parser"):
                given = {k.arg: k.value for k in node.keywords}
                value = given.get("allow_abbrev")
                if not (isinstance(value, ast.Constant) and value.value is False):
                    missing.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not missing


def test_resume_command_repeats_the_flags():
    argv = ["--space", "wide", "--name", "old", "--num-samples", "8", "--storage", "/r x"]
    assert search.resume_command(argv, "old") == (
        f"{python_command()} -m tune_eegpt.search --resume --name old --space wide "
        "--num-samples 8 --storage '/r x'"
    )


def outcome(trial_id, auroc, ended):
    return TrialOutcome(trial_id, {"max_lr": 1e-3}, auroc, ended)


def test_summary_counts_end_states_and_names_the_next_step():
    outcomes = [
        outcome("a", 0.9, "finished"),
        outcome("b", 0.7, "stopped"),
        outcome("c", 0.5, "diverged"),
        outcome("d", float("nan"), "crashed"),
    ]
    lines = search_summary_lines(outcomes, 0.869, 12.0, "/runs/x", ["max_lr"])
    assert lines[0] == "trials: 4  finished 1, stopped by ASHA 1, diverged 1, crashed 1"
    assert lines[1] == "best trial: a  val_auroc 0.9000 (clears the threshold 0.869)"
    assert lines[-1] == f"next: {python_command()} -m analysis report /runs/x"


def test_interrupted_summary_reports_running_trials_as_interrupted():
    outcomes = [
        outcome("a", 0.8, "finished"),
        outcome("b", 0.7, "running"),
        outcome("c", float("nan"), "running"),
    ]
    lines = search_summary_lines(outcomes, 0.869, 3.0, "/runs/x", ["max_lr"], interrupted=True)
    assert lines[0] == (
        "trials: 3  finished 1, stopped by ASHA 0, diverged 0, crashed 0, interrupted 2"
    )
    assert not any(line.startswith("next:") for line in lines)


def test_analysis_mistakes_are_one_line(tmp_path, capsys):
    assert analysis_main(["report", str(tmp_path / "nope")]) == 2
    assert error_line(capsys).startswith(f"error: experiment directory not found: {tmp_path}")
    assert analysis_main(["confirm", str(tmp_path / "nope"), "--top-k", "0"]) == 2
    assert error_line(capsys) == "error: --top-k=0 is not allowed: expected an integer >= 1"
    assert analysis_main(["evaluate", str(tmp_path), "--resamples", "0"]) == 2
    assert error_line(capsys) == "error: --resamples=0 is not allowed: expected an integer >= 1"


def test_confirm_help_shows_the_defaults(capsys):
    with pytest.raises(SystemExit):
        analysis_main(["confirm", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "configurations to confirm (default: 3)" in out
    assert "seeds per configuration (default: 5)" in out


@pytest.mark.slow
def test_data_root_with_no_usable_recording_is_one_line(tmp_path, capsys):
    """Found while the window cache is built (each file must be read, as Ray tasks): one line."""
    root = tmp_path / "edf"
    for rel in (
        "train/normal/01_tcp_ar/aaaaaaaa_s001_t000.edf",
        "eval/abnormal/01_tcp_ar/aaaaaaab_s001_t000.edf",
    ):
        (root / rel).parent.mkdir(parents=True)
        (root / rel).write_bytes(b"not an EDF file")
    code = search.main(["--data-root", str(root), "--cache-dir", str(tmp_path / "cache")])
    assert code == 2
    err = capsys.readouterr().err  # the cache builder's progress bar, then our line
    (line,) = [line for line in err.splitlines() if line.startswith("error: ")]
    assert "Traceback" not in err
    assert "all 2 recording(s) were rejected" in line and "rejected.csv" in line


def test_readme_flag_table_lists_every_search_flag():
    import re

    section = (ROOT / "README.md").read_text().split("## The search", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| `--")]
    in_table = {flag for row in rows for flag in re.findall(r"`(--[a-z-]+)`", row.split("|")[1])}
    parser = search.build_parser()
    flags = {s for a in parser._actions for s in a.option_strings if s.startswith("--")}
    assert in_table == flags - {"--help"}


def test_trials_at_once_with_device_workers_follow_the_cpus_and_the_pack():
    from tune_eegpt.search import worker_concurrency

    def node(cpus, alive=True):
        return {"Alive": alive, "Resources": {"CPU": cpus}}

    assert worker_concurrency([node(2)], pack=16) == 2  # one per CPU on a small machine
    assert worker_concurrency([node(32), node(32)], pack=16) == 32  # the pack per node
    assert worker_concurrency([node(0), node(8), node(8, alive=False)], pack=16) == 8
    assert worker_concurrency([], pack=16) == 1
