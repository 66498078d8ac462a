"""The parquet tables keep counts as integers (Tune's results carry them as floats)."""

import math

import pandas as pd

from analysis.load import Experiment, save_frames


def test_whole_number_columns_are_integers_in_the_parquet_files(tmp_path):
    nan = math.nan
    trials = pd.DataFrame(
        {
            "trial_id": ["a", "b", "c"],
            "max_lr": [1e-3, 2e-3, 3e-3],
            "best_val_auroc": [0.9, 1.0, nan],
            "best_epoch": [9.0, 3.0, nan],  # c never validated
            "epochs_run": [10.0, 3.0, 0.0],
            "global_step": [320.0, 96.0, nan],
        }
    )
    history = pd.DataFrame(
        {
            "trial_id": ["a", "a"],
            "epoch": [1.0, 2.0],
            "training_iteration": [1.0, 2.0],
            "val_auroc": [1.0, 1.0],
        }
    )
    paths = save_frames(Experiment("x", trials, history), tmp_path)
    back, back_history = (pd.read_parquet(p) for p in paths)
    for name in ("best_epoch", "epochs_run", "global_step"):
        assert str(back[name].dtype) == "Int64", name
    assert back["best_epoch"].tolist()[:2] == [9, 3] and back["best_epoch"].isna().tolist()[2]
    assert str(back_history["epoch"].dtype) == "Int64"
    # measurements stay floats even when their values happen to be whole
    assert back["best_val_auroc"].dtype == float and back_history["val_auroc"].dtype == float
