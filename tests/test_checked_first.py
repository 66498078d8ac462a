"""What can be checked without the data is checked before the data: a bad encoder
checkpoint is refused by train and search before a single recording is decoded."""

import argparse
from pathlib import Path

import pytest
import torch
import yaml

from tune_eegpt import search, train
from tune_eegpt.data.synthetic import SyntheticSpec, write_synthetic_corpus
from tune_eegpt.models.eegpt import eegpt_small

CHANNELS = ["FP1", "FP2", "F3", "F4", "C3", "C4", "P3", "P4", "O1", "O2"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """A real EDF corpus in TUAB's layout that nothing has decoded yet."""
    root = tmp_path_factory.mktemp("tuab") / "edf"
    write_synthetic_corpus(root, SyntheticSpec(subjects=6), progress=False)
    return root


def small_state() -> dict:
    return eegpt_small(CHANNELS).state_dict()


def truncated(folder: Path) -> Path:
    path = folder / "cut.pt"
    torch.save(small_state(), path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return path


def with_python_objects(folder: Path) -> Path:
    path = folder / "lightning.ckpt"
    torch.save({"state_dict": small_state(), "hparams": argparse.Namespace(lr=1)}, path)
    return path


def small_weights(folder: Path) -> Path:
    path = folder / "small.pt"
    torch.save(small_state(), path)
    return path


CASES = {  # checkpoint writer, encoder named in the config, what the error says
    "truncated": (truncated, "small", "cannot read this checkpoint"),
    "untrusted": (with_python_objects, "small", "model.trusted_checkpoint: true"),
    "another size": (small_weights, "large", "but model.encoder='large' is width 512"),
}


def run_config(tmp_path: Path, corpus: Path, checkpoint: Path, encoder: str) -> Path:
    raw = {
        "data": {"cache_dir": str(tmp_path / "cache"), "data_root": str(corpus)},
        "model": {"encoder": encoder, "checkpoint": str(checkpoint)},
        "train": {"epochs": 1, "device": "cpu"},
        "log": {"tensorboard": False},
    }
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.mark.parametrize("case", CASES)
def test_train_refuses_a_bad_checkpoint_before_decoding(case, corpus, tmp_path, capsys):
    write, encoder, says = CASES[case]
    checkpoint = write(tmp_path)
    config = run_config(tmp_path, corpus, checkpoint, encoder)
    out = tmp_path / "run"
    assert train.main(["--config", str(config), "--out", str(out)]) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith(f"error: model.checkpoint: {checkpoint}")
    assert says in captured.err
    assert not out.exists()
    assert not (tmp_path / "cache").exists()  # no recording decoded, nothing written


@pytest.mark.parametrize("case", CASES)
def test_search_refuses_a_bad_checkpoint_before_decoding_or_ray(case, corpus, tmp_path, capsys):
    import ray

    ray.shutdown()  # whatever an earlier test left running: this one must start none

    write, encoder, says = CASES[case]
    checkpoint = write(tmp_path)
    config = run_config(tmp_path, corpus, checkpoint, encoder)
    argv = ["--config", str(config), "--storage", str(tmp_path / "runs")]
    assert search.main(argv) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith(f"error: model.checkpoint: {checkpoint}")
    assert says in captured.err
    assert not ray.is_initialized()
    assert not (tmp_path / "cache").exists() and not (tmp_path / "runs").exists()


def short_run_config(tmp_path: Path, corpus: Path, pct_start: float) -> Path:
    """Two epochs of batch 16 on the small corpus: a few optimizer steps in all."""
    raw = {
        "data": {"cache_dir": str(tmp_path / "cache"), "data_root": str(corpus)},
        "model": {"encoder": "small"},
        "schedule": {"pct_start": pct_start},
        "train": {"epochs": 2, "batch_size": 16, "device": "cpu"},
        "log": {"tensorboard": False},
    }
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(raw))
    return config


def test_a_warmup_shorter_than_a_step_is_refused_before_the_feature_pass(corpus, tmp_path, capsys):
    config = short_run_config(tmp_path, corpus, pct_start=0.05)
    assert train.main(["--config", str(config), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.split("\n")[-2]  # the line after the decoding's progress
    assert err.startswith("error: schedule.pct_start=0.05 with total_steps=") and (
        "before the first optimizer step" in err
    )
    assert (tmp_path / "cache" / "windows").is_dir()  # the corpus had to be decoded to know
    assert not (tmp_path / "cache" / "features").exists()  # but the encoder never ran


@pytest.mark.slow  # starts Ray
def test_a_search_space_with_too_short_a_warmup_is_refused_before_the_feature_pass(
    corpus, tmp_path, capsys
):
    """The base config's schedule fits (19 train windows, batch 16: 2 batches, 2 epochs,
    warm-up 0.3 x 4 steps), and so does each searched value alone; accum_steps 8 with
    pct_start 0.3 does not (0.3 x 2 steps). The search stops once the windows give the train
    size, before the encoder or a trial, and names the shortest warm-up the space allows."""
    import ray

    config = short_run_config(tmp_path, corpus, pct_start=0.3)
    space = tmp_path / "short.yaml"
    space.write_text(
        yaml.safe_dump(
            {
                "params": {
                    "pct_start": {"distribution": "uniform", "low": 0.3, "high": 0.5},
                    "accum_steps": {"distribution": "choice", "values": [1, 8]},
                }
            }
        )
    )
    argv = ["--config", str(config), "--space", str(space), "--storage", str(tmp_path / "runs")]
    try:
        assert search.main(argv) == 2
    finally:
        ray.shutdown()
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith(
        "error: space short: a trial could get accum_steps=8, pct_start=0.3, too short a "
        "warm-up for the 19 train windows of this corpus: schedule.pct_start=0.3 with "
        "total_steps=2 (2 batches/epoch, accum_steps=8, epochs=2) ends the warm-up at step 0.6"
    ), err
    assert (tmp_path / "cache" / "windows").is_dir()
    assert not (tmp_path / "cache" / "features").exists()  # the encoder never ran
    assert not (tmp_path / "runs").exists()  # nor did a trial
