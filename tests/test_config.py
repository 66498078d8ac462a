import dataclasses
from importlib import resources

import pytest

from tune_eegpt.config import SECTIONS, ConfigError, RunConfig
from tune_eegpt.training.checkpoint import CheckpointError


def paper_aligned() -> RunConfig:
    path = resources.files("tune_eegpt") / "configs" / "paper_aligned.yaml"
    return RunConfig.from_yaml(str(path))


def test_yaml_round_trip(tmp_path):
    cfg = RunConfig().with_overrides({"max_lr": 3e-3, "accum_steps": 4, "channels": ["CZ"]})
    cfg.to_yaml(tmp_path / "run.yaml")
    again = RunConfig.from_yaml(tmp_path / "run.yaml")
    assert again == cfg
    assert again.fingerprint() == cfg.fingerprint()


def test_paper_aligned_settings():
    cfg = paper_aligned()
    assert cfg.train.batch_size == 64
    assert cfg.optim.optimizer == "adamw"
    assert (cfg.data.sfreq, cfg.data.window_s) == (256.0, 4.0)
    assert (cfg.schedule.max_lr, cfg.schedule.pct_start) == (4e-4, 0.2)
    assert cfg.model.encoder == "large"


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("pct_start", 1.0, "schedule.pct_start=1.0 is not allowed: expected a number in (0, 1)"),
        ("pct_start", 0, "schedule.pct_start=0.0 is not allowed: expected a number in (0, 1)"),
        ("accum_steps", 0, "train.accum_steps=0 is not allowed: expected an integer >= 1"),
        ("max_lr", -1e-3, "schedule.max_lr=-0.001 is not allowed: expected a number > 0"),
        ("epochs", 0, "train.epochs=0 is not allowed: expected an integer >= 1"),
        ("accum_steps", 2.5, "accum_steps=2.5 is not allowed: expected an integer"),
        ("max_lr", "fast", "max_lr='fast' is not allowed: expected a finite number"),
        ("precision", "fp8", "precision='fp8' is not allowed: expected one of"),
    ],
)
def test_bad_values_name_field_value_and_allowed(field, value, message):
    with pytest.raises(ConfigError) as info:
        RunConfig().with_overrides({field: value})
    assert message in str(info.value)


def test_unknown_keys_are_rejected_with_a_suggestion(tmp_path):
    path = tmp_path / "typo.yaml"
    path.write_text("schedule:\n  max_lrr: 0.001\n")
    with pytest.raises(
        ConfigError, match=r"unknown key\(s\) 'max_lrr' \(did you mean 'max_lr'\?\)"
    ):
        RunConfig.from_yaml(path)
    path.write_text("sched:\n  max_lr: 0.001\n")
    with pytest.raises(ConfigError, match="unknown section"):
        RunConfig.from_yaml(path)
    with pytest.raises(ConfigError, match="unknown config field 'max_lrr'; did you mean"):
        RunConfig().with_overrides({"max_lrr": 1e-3})


def test_yaml_strings_for_exponents_are_read_as_numbers(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("schedule:\n  max_lr: 3e-4\n")  # PyYAML reads this as a string
    assert RunConfig.from_yaml(path).schedule.max_lr == 3e-4


def test_fingerprint_tracks_outcome_fields_only():
    base = RunConfig()
    assert base.fingerprint() == RunConfig().fingerprint()
    assert base.with_overrides({"max_lr": 1e-3}).fingerprint() != base.fingerprint()
    assert base.with_overrides({"accum_steps": 2}).fingerprint() != base.fingerprint()
    assert base.with_overrides({"out_dir": "elsewhere"}).fingerprint() == base.fingerprint()
    assert base.with_overrides({"device": "cpu"}).fingerprint() == base.fingerprint()


def test_a_checkpoint_from_before_a_field_existed_resumes_at_its_old_value(tmp_path):
    # model.feature_dtype came later: a checkpoint's config without it is float16's
    from packed_fixtures import probe_trainer

    trainer = probe_trainer(n=40)
    state = trainer.state_dict()
    del state["config"]["model"]["feature_dtype"]
    older = RunConfig.from_dict(state["config"])  # what the old code would fingerprint
    assert state["config_fingerprint"] == older.fingerprint()
    probe_trainer(n=40).load_state_dict(state)  # accepted
    f8 = probe_trainer(n=40, feature_dtype="float8_e4m3")
    with pytest.raises(CheckpointError, match=r"model.feature_dtype \(checkpoint None"):
        f8.load_state_dict(state)


def test_hyperparameters_are_addressable_by_their_bare_names():
    cfg = RunConfig()
    for name in (
        "max_lr",
        "pct_start",
        "accum_steps",
        "div_factor",
        "final_div_factor",
        "batch_size",
        "weight_decay",
        "epochs",
        "seed",
    ):
        assert cfg.get(name) == cfg.get(f"{_section_of(name)}.{name}")


def _section_of(name: str) -> str:
    for section, cls in SECTIONS.items():
        if name in {f.name for f in dataclasses.fields(cls)}:
            return section
    raise KeyError(name)


def test_missing_config_file():
    with pytest.raises(FileNotFoundError, match="config file not found: nowhere.yaml"):
        RunConfig.from_yaml("nowhere.yaml")


def test_a_retired_field_in_an_older_config_is_dropped_with_a_note():
    older = RunConfig().to_dict()
    older["train"]["cuda_graphs"] = True  # written before CUDA graphs were removed
    with pytest.warns(UserWarning, match=r"older.yaml: train.cuda_graphs is ignored"):
        cfg = RunConfig.from_dict(older, source="older.yaml")
    assert cfg.fingerprint() == RunConfig().fingerprint()
    with pytest.raises(ConfigError, match="unknown"):
        RunConfig.from_dict({"train": {"cuda_graph": True}})
