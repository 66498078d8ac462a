"""The commands the product prints name the running interpreter, and run when pasted."""

import os
import shlex
import subprocess
import sys
from pathlib import Path

from tune_eegpt.search_report import search_summary_lines
from tune_eegpt.shell_command import module_command, python_command

ROOT = Path(__file__).resolve().parents[1]


def fake_interpreter(folder: Path) -> Path:
    python = folder / ".venv" / "bin" / "python"
    python.parent.mkdir(parents=True)
    python.write_text("#!/bin/sh\n")
    python.chmod(0o755)
    return python


def test_inside_the_working_folder_the_interpreter_is_named_relative_to_it(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "executable", str(fake_interpreter(tmp_path)))
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.chdir(tmp_path)
    assert python_command() == ".venv/bin/python"
    assert module_command("analysis", "report", "runs/a b") == (
        ".venv/bin/python -m analysis report 'runs/a b'"
    )


def test_outside_the_working_folder_the_path_is_absolute_and_quoted(tmp_path, monkeypatch):
    checkout = tmp_path / "my checkout"
    monkeypatch.setattr(sys, "executable", str(fake_interpreter(checkout)))
    monkeypatch.setenv("PATH", "/nonexistent")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert shlex.split(python_command()) == [str(checkout / ".venv" / "bin" / "python")]


def test_an_activated_environment_is_plain_python(tmp_path, monkeypatch):
    python = fake_interpreter(tmp_path)
    monkeypatch.setattr(sys, "executable", str(python))
    monkeypatch.setenv("PATH", str(python.parent))
    monkeypatch.chdir(tmp_path)
    assert python_command() == "python"


def test_a_venv_python_linked_to_the_system_one_is_not_plain_python(tmp_path, monkeypatch):
    system = tmp_path / "usr" / "bin"
    system.mkdir(parents=True)
    (system / "python").write_text("#!/bin/sh\n")
    (system / "python").chmod(0o755)
    venv = tmp_path / "proj" / ".venv" / "bin"
    venv.mkdir(parents=True)
    (venv / "python").symlink_to(system / "python")  # what `python -m venv` makes
    monkeypatch.setattr(sys, "executable", str(venv / "python"))
    monkeypatch.setenv("PATH", str(system))  # the venv is not active in this shell
    monkeypatch.chdir(tmp_path / "proj")
    assert python_command() == ".venv/bin/python"


def test_a_printed_next_command_runs_in_a_fresh_shell(tmp_path, monkeypatch):
    """A shell without the virtual environment on PATH (the README's commands never
    activate it) runs what the search prints, from the checkout it ran in."""
    monkeypatch.chdir(ROOT)
    missing = tmp_path / "no such experiment"
    line = search_summary_lines([], 0.869, 1.0, str(missing), [])[-1]
    command = line.removeprefix("next: ")
    assert shlex.split(command)[1:] == ["-m", "analysis", "report", str(missing)]
    fresh = {"PATH": "/usr/bin:/bin", "HOME": os.environ.get("HOME", "/tmp")}
    done = subprocess.run(
        ["bash", "-c", command], cwd=ROOT, env=fresh, capture_output=True, text=True
    )
    assert "ModuleNotFoundError" not in done.stderr, done.stderr
    assert done.returncode == 2, done.stderr  # the product's own error: no such folder
    assert str(missing) in done.stderr
