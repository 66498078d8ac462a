"""A full disk, for real: the commands write into a small tmpfs and must stop with one
sentence (what, where, how much), keep nothing half-written, and run cleanly once there
is space. Needs the right to mount a tmpfs (root, as on CI); skipped where it is missing."""

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tune_eegpt.data.synthetic import SyntheticSpec, write_synthetic_corpus

pytestmark = pytest.mark.slow


@pytest.fixture
def small_disk(tmp_path):
    """A tmpfs mount at tmp_path/disk; resize it with ``resize(bytes)``."""
    mount = tmp_path / "disk"
    mount.mkdir()

    def resize(size: int, first: bool = False) -> None:
        options = f"size={size}" if first else f"remount,size={size}"
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(mount)],
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")

    resize(256 * 1024, first=True)
    yield mount, resize
    subprocess.run(["umount", str(mount)], capture_output=True)


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True)


def leftovers(folder: Path) -> list[str]:
    return [str(p) for p in folder.rglob("*") if ".tmp-" in p.name or p.suffix == ".tmp"]


def assert_one_sentence(stderr: str, where: Path) -> str:
    assert "Traceback" not in stderr, stderr[-3000:]
    line = next(x for x in stderr.splitlines() if x.startswith("error: "))
    assert line.startswith("error: no space left on the device of "), line
    assert str(where) in line and "free there; nothing half-written was kept" in line
    return line


def test_prepare_into_a_full_disk_says_so_and_the_next_run_is_clean(small_disk, tmp_path):
    mount, resize = small_disk
    corpus = tmp_path / "edf"
    write_synthetic_corpus(corpus, SyntheticSpec(subjects=8), progress=False)
    out = mount / "windows"
    prepare = ("tune_eegpt.data", "prepare", "--data-root", str(corpus), "--out", str(out))
    full = cli(*prepare, "--workers", "1")
    assert full.returncode == 1, full.stderr[-3000:]
    line = assert_one_sentence(full.stderr, out)
    assert re.search(r"needed more than the [\d.]+ \w*B? ?written", line) or "bytes" in line
    assert not leftovers(mount)
    assert not list(mount.rglob("manifest.json"))  # no cache that looks complete
    resize(64 * 1024 * 1024)
    again = cli(*prepare, "--workers", "1")
    assert again.returncode == 0, again.stderr[-3000:]
    cache = Path(again.stdout.strip().splitlines()[-1])
    verified = cli("tune_eegpt.data", "info", str(cache), "--verify")
    assert verified.returncode == 0 and "none damaged" in verified.stdout, verified.stdout


def test_training_into_a_full_disk_stops_with_the_resume_command(small_disk, tmp_path):
    mount, resize = small_disk
    raw = {
        "data": {"cache_dir": str(tmp_path / "cache"), "synthetic_subjects": 48},
        "model": {"encoder": "small"},
        "train": {"epochs": 40, "batch_size": 16, "device": "cpu"},
        "log": {"tensorboard": True},
    }
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(raw))
    out = mount / "run"
    resize(160 * 1024)  # the config and a few checkpoints and log rows fit, not 40 epochs
    full = cli("tune_eegpt.train", "--config", str(config), "--out", str(out))
    assert full.returncode == 1, full.stderr[-3000:]
    assert_one_sentence(full.stderr, out)
    assert not leftovers(mount)
    stopped = full.stderr.strip().splitlines()[-1]
    match = re.fullmatch(
        r"stopped at global_step \d+ \([^)]*\); last checkpoint \S+ \([^)]*\); resume with: (.+)",
        stopped,
    )
    assert match, stopped
    resize(64 * 1024 * 1024)
    resumed = subprocess.run(
        ["bash", "-c", match.group(1)], capture_output=True, text=True, env=dict(os.environ)
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed from" in resumed.stdout
    assert shlex.split(match.group(1))[2] == "tune_eegpt.train"


def test_the_feature_pass_into_a_full_disk_says_so_and_the_next_run_is_clean(small_disk, tmp_path):
    """The windows fit, the encoder's features do not: train stops in the feature pass with
    one sentence, keeps no partial feature file, and builds it whole once there is space."""
    mount, resize = small_disk
    resize(64 * 1024 * 1024)
    corpus = tmp_path / "edf"
    write_synthetic_corpus(corpus, SyntheticSpec(subjects=24), progress=False)
    raw = {
        "data": {"cache_dir": str(mount / "cache"), "data_root": str(corpus)},
        "model": {"encoder": "small"},
        "train": {"epochs": 1, "batch_size": 16, "device": "cpu"},
        "log": {"tensorboard": False},
    }
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(raw))
    prepare = ("tune_eegpt.data", "prepare", "--config", str(config), "--data-root", str(corpus))
    windows = cli(*prepare, "--workers", "1")
    assert windows.returncode == 0, windows.stderr[-3000:]
    used = sum(p.stat().st_size for p in mount.rglob("*") if p.is_file())
    resize(used + 256 * 1024)  # room for the window cache and a fraction of the features
    out = tmp_path / "run"
    full = cli("tune_eegpt.train", "--config", str(config), "--out", str(out))
    assert full.returncode == 1, full.stderr[-3000:]
    line = assert_one_sentence(full.stderr, mount / "cache" / "features")
    assert "feature" in line, line
    assert not leftovers(mount)
    assert not list((mount / "cache" / "features").rglob("*.arrow"))  # none half-written
    resize(64 * 1024 * 1024)
    again = cli("tune_eegpt.train", "--config", str(config), "--out", str(tmp_path / "again"))
    assert again.returncode == 0, again.stderr[-3000:]
    (feature_file,) = (mount / "cache" / "features").rglob("*.arrow")
    verified = cli("tune_eegpt.data", "info", str(mount / "cache" / "windows"), "--verify")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert feature_file.stat().st_size > 256 * 1024


def test_a_search_whose_storage_fills_up_says_so_and_resumes_once_there_is_space(
    small_disk, tmp_path
):
    """Trial checkpoints go to the experiment in --storage (a small tmpfs here), the caches
    elsewhere. When Tune cannot save there, the search ends with one line naming the storage
    and the resume command (exit 1); with space again, that command finishes the search."""
    mount, resize = small_disk
    from search_fixtures import prepare, write_base_config, write_space

    config = write_base_config(tmp_path)
    prepare(config)
    space = write_space(
        tmp_path,
        "s",
        {
            "max_lr": {"distribution": "loguniform", "low": 1e-4, "high": 1e-2},
            "pct_start": {"distribution": "uniform", "low": 0.3, "high": 0.5},
        },
    )
    flags = ["--config", str(config), "--space", str(space), "--storage", str(mount)]
    flags += ["--name", "full", "--num-samples", "4", "--max-concurrent", "2"]
    resize(640 * 1024)  # Tune's experiment files and a few trials' checkpoints (of ~1.4 MB)
    full = cli("tune_eegpt.search", *flags)
    assert full.returncode == 1, full.stdout[-2000:] + full.stderr[-3000:]
    (line,) = [x for x in full.stderr.splitlines() if x.startswith("error: ")]
    match = re.fullmatch(
        r"error: no space left on the device of the search's storage \([^)]* free\): Tune "
        rf"could not save the trials' checkpoints and results in {re.escape(str(mount))}/full, "
        r"so the trials that tried stopped\. The experiment is kept as Tune last saved it\. "
        r"Free some space and resume with: (.+)",
        line,
    )
    assert match, line
    resize(64 * 1024 * 1024)
    resumed = subprocess.run(["bash", "-c", match.group(1)], capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr[-3000:]
    summary = re.findall(r"^trials: .*$", resumed.stdout, re.M)
    assert summary and summary[-1].startswith("trials: 4  "), resumed.stdout[-3000:]
    assert summary[-1].endswith("crashed 0"), summary
