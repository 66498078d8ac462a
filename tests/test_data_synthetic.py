"""The synthetic TUAB-like corpus and the data CLI."""

from __future__ import annotations

import json

import mne
import numpy as np
import pytest

from tune_eegpt.channel_names import canonical_channel_name
from tune_eegpt.config import STANDARD_10_20
from tune_eegpt.data.__main__ import main
from tune_eegpt.data.synthetic import SyntheticSpec, plan_corpus, write_synthetic_corpus
from tune_eegpt.data.tuab_index import index_tuab

SMALL = SyntheticSpec(
    subjects=8, seed=2, min_duration_s=12, max_duration_s=16, multi_session_fraction=0.5
)


def test_corpus_has_tuab_layout_names_channels_and_rates(tmp_path) -> None:
    plan = write_synthetic_corpus(tmp_path / "c", SMALL)
    index = index_tuab(tmp_path / "c")
    assert index.ignored == ["synthetic.json"]
    assert len(index) == len(plan) > SMALL.subjects  # some subjects have several sessions
    assert index.recordings.groupby("subject")["session"].max().max() >= 2
    assert set(index.recordings["split"]) == {"train", "eval"}
    assert set(index.recordings["label_name"]) == {"normal", "abnormal"}
    # eval subjects are not train subjects
    by_split = index.recordings.groupby("split")["subject"].apply(set)
    assert not by_split["train"] & by_split["eval"]
    rates = set()
    for path in index.recordings["path"][:6]:
        raw = mne.io.read_raw_edf(path, preload=False, verbose="error")
        rates.add(raw.info["sfreq"])
        labels = raw.ch_names
        assert "EEG T3-REF" in labels and "EEG A1-REF" in labels and "EEG T1-REF" in labels
        assert {"EEG EKG1-REF", "PHOTIC-REF", "IBI", "BURSTS", "SUPPR"} <= set(labels)
        assert set(STANDARD_10_20) <= {canonical_channel_name(c) for c in labels}
    assert rates <= {250.0, 256.0, 512.0}
    meta = json.loads((tmp_path / "c" / "synthetic.json").read_text())
    assert meta["spec"]["subjects"] == SMALL.subjects


def test_corpus_is_deterministic_from_its_seed(tmp_path) -> None:
    spec = SyntheticSpec(
        subjects=4, seed=5, min_duration_s=5, max_duration_s=6, multi_session_fraction=0.0
    )
    write_synthetic_corpus(tmp_path / "a", spec)
    write_synthetic_corpus(tmp_path / "b", spec)
    for fa in sorted((tmp_path / "a").rglob("*.edf")):
        fb = tmp_path / "b" / fa.relative_to(tmp_path / "a")
        a = mne.io.read_raw_edf(fa, verbose="error").get_data()
        b = mne.io.read_raw_edf(fb, verbose="error").get_data()
        np.testing.assert_array_equal(a, b)
    other = plan_corpus(SyntheticSpec(subjects=4, seed=6))
    assert list(other["subject"]) != list(plan_corpus(spec)["subject"])


def test_generation_reports_progress_per_file(tmp_path, capsys) -> None:
    spec = SyntheticSpec(
        subjects=4, seed=5, min_duration_s=5, max_duration_s=6, multi_session_fraction=0.0
    )
    plan = write_synthetic_corpus(tmp_path / "a", spec)
    err = capsys.readouterr().err
    assert "synthetic corpus" in err and f"{len(plan)}/{len(plan)}" in err
    write_synthetic_corpus(tmp_path / "b", spec, progress=False)
    assert capsys.readouterr().err == ""


def test_spec_key_follows_every_parameter() -> None:
    assert SyntheticSpec().key() == SyntheticSpec().key()
    assert SyntheticSpec(effect=0.5).key() != SyntheticSpec().key()
    assert SyntheticSpec(subjects=61).key() != SyntheticSpec().key()
    with pytest.raises(ValueError, match="effect"):
        SyntheticSpec(effect=-1.0)


def test_abnormal_recordings_are_slower_on_average(tmp_path) -> None:
    """The class signal is there: more delta relative to alpha in abnormal subjects."""
    spec = SyntheticSpec(
        subjects=8,
        seed=0,
        min_duration_s=20,
        max_duration_s=20,
        multi_session_fraction=0.0,
        label_noise=0.0,
    )
    plan = write_synthetic_corpus(tmp_path / "c", spec)
    ratios = {True: [], False: []}
    for row in plan.itertuples():
        raw = mne.io.read_raw_edf(tmp_path / "c" / row.relpath, verbose="error")
        raw.pick(["EEG O1-REF", "EEG O2-REF", "EEG P3-REF", "EEG P4-REF"])
        psd = raw.compute_psd(fmin=1, fmax=13, verbose="error")
        power, freqs = psd.get_data(return_freqs=True)
        delta = power[:, (freqs >= 1) & (freqs < 4)].mean()
        alpha = power[:, (freqs >= 8) & (freqs < 13)].mean()
        ratios[row.abnormal].append(np.log(delta / alpha))
    assert np.mean(ratios[True]) > np.mean(ratios[False]) + 0.5


@pytest.mark.slow
def test_cli_synth_prepare_info(tmp_path, capsys) -> None:
    corpus, out = tmp_path / "s", tmp_path / "c"
    assert main(["synth", "--out", str(corpus), "--subjects", "4", "--seed", "1"]) == 0
    assert "wrote" in capsys.readouterr().out
    # a short run: the default corpus length is minutes, the CLI test needs seconds
    spec_cfg = tmp_path / "run.yaml"
    spec_cfg.write_text("data:\n  window_s: 4.0\n  stride_s: 8.0\n")
    assert (
        main(
            [
                "prepare",
                "--data-root",
                str(corpus),
                "--out",
                str(out),
                "--workers",
                "1",
                "--config",
                str(spec_cfg),
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    cache_dir = printed.strip().splitlines()[-1]
    assert "windows per split" in printed and cache_dir.startswith(str(out))
    assert main(["info", str(out)]) == 0
    assert "hours of signal" in capsys.readouterr().out
    assert main(["info", str(tmp_path / "nothing")]) == 2
    assert "no complete window cache" in capsys.readouterr().err
    assert main(["synth", "--out", str(corpus)]) == 2  # never overwrites a corpus
