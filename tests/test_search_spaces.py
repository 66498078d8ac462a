import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution
from search_fixtures import write_space

from search_spaces import SearchSpaceError, available_spaces, load_space
from tune_eegpt.config import RunConfig


def test_shipped_spaces_load():
    assert {"paper", "wide"} <= set(available_spaces())
    paper = load_space("paper")
    assert paper.params["max_lr"] == FloatDistribution(1e-5, 1e-1, log=True)
    assert paper.params["accum_steps"] == CategoricalDistribution([1, 2, 4, 8])
    assert paper.fixed == {"batch_size": 64}
    assert set(load_space("wide").params) >= {
        "weight_decay",
        "batch_size",
        "dropout",
        "div_factor",
        "final_div_factor",
    }


def test_start_point_is_the_base_config_when_inside_the_space():
    cfg = RunConfig().with_overrides({"max_lr": 4e-4, "pct_start": 0.2})
    assert load_space("paper").start_point(cfg) == {
        "max_lr": 4e-4,
        "pct_start": 0.2,
        "accum_steps": 1,
    }
    outside = cfg.with_overrides({"accum_steps": 3})
    assert load_space("paper").start_point(outside) == {}


@pytest.mark.parametrize(
    "params, fixed, message",
    [
        (
            {"max_lr": {"distribution": "gaussian", "low": 1, "high": 2}},
            {},
            "parameter 'max_lr': unknown distribution 'gaussian'",
        ),
        (
            {"max_lr": {"distribution": "uniform", "low": 0.1, "high": 0.1}},
            {},
            "parameter 'max_lr': low (0.1) must be below high (0.1)",
        ),
        (
            {"max_lr": {"distribution": "loguniform", "low": 0, "high": 0.1}},
            {},
            "parameter 'max_lr': a log range must lie above 0, got low=0",
        ),
        (
            {"accum_steps": {"distribution": "choice", "values": []}},
            {},
            "parameter 'accum_steps': 'choice' needs a non-empty list 'values'",
        ),
        (
            {"learning_rate": {"distribution": "uniform", "low": 0, "high": 1}},
            {},
            "parameter 'learning_rate': unknown config field 'learning_rate'",
        ),
        (
            {"max_lr": {"distribution": "uniform", "low": 0.1, "high": 0.2}},
            {"max_lr": 0.1},
            "'max_lr' is both searched and fixed",
        ),
        (
            {"max_lr": {"distribution": "uniform", "low": 0.1, "high": 0.2}},
            {"epochs": 0},
            "train.epochs=0 is not allowed",
        ),
    ],
)
def test_bad_space_files_name_the_parameter(tmp_path, params, fixed, message):
    path = write_space(tmp_path, "bad", params, fixed)
    with pytest.raises(SearchSpaceError) as info:
        load_space(path)
    assert message in str(info.value)
    assert str(path) in str(info.value)


def test_unknown_space_name_lists_the_available_ones():
    with pytest.raises(SearchSpaceError, match=r"no search space named 'papr'; available: \["):
        load_space("papr")


@pytest.mark.parametrize(
    "spec, message",
    [
        (
            {"distribuiton": "uniform", "low": 0.1, "high": 0.5},
            "expected a mapping with a 'distribution' key; did you mean 'distribution'?",
        ),
        (
            {"distribution": "loguniforn", "low": 1e-4, "high": 1e-2},
            "unknown distribution 'loguniforn'; allowed: ('loguniform', 'uniform', 'int', "
            "'intloguniform', 'choice'); did you mean 'loguniform'?",
        ),
        (
            {"distribution": "uniform", "lwo": 0.1, "high": 0.5},
            "unknown key(s) ['lwo'] for a 'uniform' distribution (allowed: ['distribution', "
            "'high', 'low']); did you mean 'low'?",
        ),
        (
            {"distribution": "choice", "value": [1, 2]},
            "unknown key(s) ['value'] for a 'choice' distribution (allowed: ['distribution', "
            "'values']); did you mean 'values'?",
        ),
    ],
)
def test_misspelled_space_keys_are_named_with_the_key_meant(tmp_path, spec, message):
    path = write_space(tmp_path, "typo", {"pct_start": spec})
    with pytest.raises(SearchSpaceError) as info:
        load_space(str(path))
    assert str(info.value) == f"{path}: parameter 'pct_start': {message}"


def test_a_misspelled_top_level_key_is_named(tmp_path):
    path = tmp_path / "top.yaml"
    path.write_text("parms:\n  max_lr: {distribution: choice, values: [0.001]}\n")
    with pytest.raises(SearchSpaceError, match=r"\['parms'\]; did you mean 'params'\?"):
        load_space(str(path))
