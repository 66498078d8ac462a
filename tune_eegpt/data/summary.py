"""Human-readable summary of a window cache's manifest (printed by a build and by `info`)."""

from __future__ import annotations

from pathlib import Path


def format_summary(manifest: dict, cache_dir: Path | str) -> str:
    files = manifest["files"]
    settings = manifest["settings"]
    n_channels, n_times = manifest["window_shape"]
    lines = [
        f"window cache {cache_dir}",
        f"  key {manifest['key']}  (schema {manifest['schema']}), source {manifest['data_root']}",
        f"  windows: {manifest['windows']} x ({n_channels} ch, {n_times} samples) "
        f"{settings['cache_dtype']} in microvolts at {settings['sfreq']:g} Hz, "
        f"{settings['window_s']:g} s every {settings['stride_s']:g} s",
        f"  files: {files['found']} found, {files['used']} used, "
        f"{sum(files['rejected'].values())} rejected, {files['ignored']} other file(s) ignored",
    ]
    for reason, count in sorted(files["rejected"].items()):
        lines.append(f"    rejected - {reason}: {count}")
    if files["rejected"]:
        manifest_csv = f"{str(cache_dir).rstrip('/')}/rejected.csv"  # a path or a URI
        lines.append(f"    (every rejected file and its reason: {manifest_csv})")
    dropped = {k: v for k, v in manifest["dropped_windows"].items() if v}
    if dropped:
        lines.append("  windows dropped: " + ", ".join(f"{k} {v}" for k, v in dropped.items()))
    split = manifest["default_split"]
    lines.append(
        f"  windows per split (subject-wise, seed {split['seed']}, val_fraction "
        f"{split['val_fraction']:g}; eval = test):"
    )
    subjects = manifest.get("subjects_by_split", {})
    for fold in ("train", "val", "test"):
        normal = manifest["windows_by_split_label"].get(f"{fold}/normal", 0)
        abnormal = manifest["windows_by_split_label"].get(f"{fold}/abnormal", 0)
        lines.append(
            f"    {fold:<5} {normal + abnormal:>8} ({normal} normal, {abnormal} abnormal) "
            f"from {subjects.get(fold, 0)} subjects"
        )
    lines.append(
        f"  hours of signal: {manifest['hours_read']:.2f} read, "
        f"{manifest['hours_in_windows']:.2f} in windows"
    )
    if manifest.get("subjects_in_train_and_eval"):
        lines.append(
            f"  WARNING: subjects in both train and eval: {manifest['subjects_in_train_and_eval']}"
        )
    if "build" in manifest:
        build = manifest["build"]
        how = (
            f"with {build['workers']} worker(s)"
            if isinstance(build["workers"], int)
            else f"as {build['workers']}"
        )
        lines.append(f"  built {build['built']} recording(s) in {build['seconds']:.1f} s {how}")
    return "\n".join(lines)
