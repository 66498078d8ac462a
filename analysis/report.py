"""``python -m analysis report``: the table, the Parquet frames, the plots and the best config."""

from __future__ import annotations

from pathlib import Path

from analysis.export import configuration_of, export_config, run_config_for, train_windows
from analysis.importances import importance_line, plot_importances, search_study
from analysis.load import Experiment, load_experiment, load_steps, save_frames
from analysis.plots import (
    plot_learning_curves,
    plot_metric_vs_params,
    plot_rung_survival,
)
from analysis.selection import (
    asha_rungs,
    rank_configurations,
    select_configurations,
    selection_lines,
)
from tune_eegpt.doctor.report import check_trials
from tune_eegpt.shell_command import module_command

TOP_CURVES = 5


def default_out_dir(experiment_path: str) -> Path:
    if "://" in experiment_path and not experiment_path.startswith("file://"):
        return Path.cwd() / "analysis-out" / experiment_path.rstrip("/").rsplit("/", 1)[-1]
    return Path(experiment_path.removeprefix("file://")).expanduser() / "analysis"


def write_report(
    experiment: Experiment, out_dir: str | Path, threshold: float | None = None
) -> tuple[list[str], dict[str, Path]]:
    """Writes the frames, plots and the exported best configuration into ``out_dir``;
    returns the lines to print and the paths written."""
    out = Path(out_dir)
    threshold = experiment.threshold if threshold is None else threshold
    params = experiment.params
    trials, history = experiment.trials, experiment.history
    lines = [f"experiment: {experiment.path}"]
    lines += selection_lines(trials, params, threshold)
    if "://" not in str(experiment.path):
        lines += check_trials(experiment.path)  # the schedule doctor on each trial's logs
    paths: dict[str, Path] = {}
    paths["trials"], paths["history"] = save_frames(experiment, out)

    plots = out / "plots"
    paths["metric_vs_params"] = plot_metric_vs_params(
        trials, params, threshold, plots / "val_auroc_vs_params.png"
    )
    ranked = rank_configurations(trials, params)
    top = [t for t in ranked["trial_id"].head(TOP_CURVES)]
    paths["learning_curves"] = plot_learning_curves(
        history, top, threshold, plots / "learning_curves.png", steps=load_steps(experiment, top)
    )
    info = experiment.info
    rungs = (
        asha_rungs(int(info["epochs"]), int(info["grace_period"]), int(info["reduction_factor"]))
        if {"epochs", "grace_period", "reduction_factor"} <= set(info)
        else None
    )
    paths["rung_survival"] = plot_rung_survival(
        trials, plots / "rung_survival.png", experiment.epochs, rungs
    )
    study = search_study(experiment)
    lines.append(importance_line(study))
    drawn = plot_importances(study, plots / "param_importances.png") if study else None
    if drawn is not None:
        paths["param_importances"] = drawn

    n_train = train_windows(experiment)
    if len(ranked) and info.get("base_config") and n_train:
        best = ranked.iloc[0]
        selected = select_configurations(trials, params, threshold)
        verdict = (
            f"reaches val_auroc >= {threshold}"
            if len(selected)
            else f"does NOT reach the threshold {threshold}"
        )
        note = (
            f"Best configuration of {experiment.path}\n"
            f"trial {best['trial_id']}: best val_auroc {best['best_val_auroc']:.4f} at epoch "
            f"{best['best_epoch']:g}; {verdict}; not yet confirmed over seeds "
            f"({module_command('analysis', 'confirm')})"
        )
        cfg = run_config_for(experiment, configuration_of(best, params))
        exported = export_config(cfg, out, "best_config", n_train, note)
        paths.update({f"best_{k}": v for k, v in exported.items()})
    elif not info.get("base_config"):
        lines.append("no tune_eegpt_search.json with the base config: no config exported")
    lines += ["", f"written to {out}:"] + [f"  {k:<22} {v}" for k, v in paths.items()]
    return lines, paths


def run_report(
    experiment_path: str, out_dir: str | Path | None = None, threshold: float | None = None
) -> int:
    experiment = load_experiment(experiment_path)
    out = Path(out_dir) if out_dir is not None else default_out_dir(experiment_path)
    lines, _ = write_report(experiment, out, threshold)
    print("\n".join(lines))
    return 0
