"""The synthetic TUAB-like corpus: real EDF files in TUAB's layout, names and channel labels.

``write_synthetic_corpus(out, SyntheticSpec(subjects=400, seed=0))`` writes::

    out/edf/{train,eval}/{normal,abnormal}/01_tcp_ar/<subject>_s<NNN>_t000.edf
    out/synthetic.json       the spec and one line per recording (true class, rate, length)

Each file holds TUAB's 23 referential EEG channels (``EEG FP1-REF`` ... with the old
names T3/T4/T5/T6, A1/A2, T1/T2) and non-EEG channels (EKG, eye, EMG, photic, and the
1 Hz IBI/BURSTS/SUPPR traces), sampled at 250, 256 or 512 Hz. Some subjects have several
sessions; about 20% of subjects form the eval (test) folder, drawn from the same
population as the train folder. Labels are noisy on purpose (3% of each folder's
recordings). Everything follows from the spec: same spec, same bytes of signal.

Like TUAB, the default has many subjects with one short-ish recording each (400 subjects,
19-36 s) rather than a few long ones: window-level AUROC is dominated by which subjects
a split holds, so a split needs dozens of subjects before its score says something about
the population and one mislabelled recording stops deciding it (README, "Calibration").
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import edfio
import numpy as np
import pandas as pd
from tqdm import tqdm

from tune_eegpt.atomic_write import atomic_path
from tune_eegpt.data.synthetic_signal import (
    draw_subject,
    synthesize_eeg,
    synthesize_ekg,
)

# Bump when the signal model or layout changes: synthetic corpora are cached by spec hash.
GENERATOR_VERSION = 2
# The calibrated class-effect strength (see README "Synthetic corpus"); DataConfig's
# synthetic_effect defaults to this value.
DEFAULT_EFFECT = 1.7
SPEC_FILE = "synthetic.json"


@dataclass(frozen=True)
class SyntheticSpec:
    subjects: int = 400
    seed: int = 0
    effect: float = DEFAULT_EFFECT  # one knob: strength of every abnormal change
    min_duration_s: int = 19
    max_duration_s: int = 36
    eval_fraction: float = 0.2  # share of subjects in the eval (test) folder
    label_noise: float = 0.03  # share of recordings filed under the wrong label
    multi_session_fraction: float = 0.1  # share of subjects with 2-3 sessions
    sfreqs: tuple[float, ...] = (250.0, 256.0, 512.0)
    sfreq_weights: tuple[float, ...] = (0.6, 0.25, 0.15)

    def __post_init__(self) -> None:
        if self.subjects < 4:
            raise ValueError(f"subjects={self.subjects}: need at least 4 (2 per class)")
        if self.effect < 0:
            raise ValueError(f"effect={self.effect} must be >= 0")
        if not 1 <= self.min_duration_s <= self.max_duration_s:
            raise ValueError("need 1 <= min_duration_s <= max_duration_s")

    def key(self) -> str:
        blob = json.dumps(
            {"generator": GENERATOR_VERSION, **dataclasses.asdict(self)}, sort_keys=True
        )
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


def plan_corpus(spec: SyntheticSpec) -> pd.DataFrame:
    """One row per recording: subject, session, split, abnormal (true class), label_name
    (the folder it is filed under, after label noise), sfreq, duration_s, relpath."""
    rng = np.random.default_rng([spec.seed, 0])
    codes = rng.choice(26**4, size=spec.subjects, replace=False)
    names = ["aaaa" + "".join(chr(97 + (c // 26**k) % 26) for k in (3, 2, 1, 0)) for c in codes]
    abnormal = np.zeros(spec.subjects, dtype=bool)
    abnormal[rng.permutation(spec.subjects)[: spec.subjects // 2]] = True
    n_eval = max(2, round(spec.eval_fraction * spec.subjects))
    in_eval = np.zeros(spec.subjects, dtype=bool)
    for cls in (False, True):  # eval subjects balanced over the two classes
        members = np.flatnonzero(abnormal == cls)
        in_eval[rng.permutation(members)[: n_eval // 2 if cls else n_eval - n_eval // 2]] = True
    rows = []
    for i, name in enumerate(names):
        sessions = 1 + (rng.integers(1, 3) if rng.random() < spec.multi_session_fraction else 0)
        for session in range(1, sessions + 1):
            rows.append(
                {
                    "subject": name,
                    "subject_index": i,
                    "session": session,
                    "split": "eval" if in_eval[i] else "train",
                    "abnormal": bool(abnormal[i]),
                    "sfreq": float(rng.choice(spec.sfreqs, p=spec.sfreq_weights)),
                    "duration_s": int(rng.integers(spec.min_duration_s, spec.max_duration_s + 1)),
                }
            )
    plan = pd.DataFrame(rows)
    # Label noise: a fixed share of each split's recordings is filed under the wrong label
    # (a fixed count, not a coin per file, so that a small eval set is not hit by chance).
    flipped = np.zeros(len(plan), dtype=bool)
    for split in ("train", "eval"):
        members = np.flatnonzero(plan["split"] == split)
        n_flip = round(spec.label_noise * len(members))
        flipped[rng.choice(members, size=n_flip, replace=False)] = True
    plan["label_name"] = np.where(plan["abnormal"] != flipped, "abnormal", "normal")
    plan["relpath"] = [
        f"edf/{r.split}/{r.label_name}/01_tcp_ar/{r.subject}_s{r.session:03d}_t000.edf"
        for r in plan.itertuples()
    ]
    return plan


def write_synthetic_corpus(
    out: str | Path, spec: SyntheticSpec, progress: bool = True
) -> pd.DataFrame:
    """Writes the corpus into ``out`` (created; must not exist yet) atomically: it is
    generated in a temporary sibling folder and renamed at the end. Returns the plan.
    ``progress`` shows a progress bar (one tick per EDF file) on stderr."""
    out = Path(out).expanduser()
    if out.exists():
        raise FileExistsError(f"{out} exists; synthetic corpora are written to a new folder")
    with atomic_path(out) as tmp:
        plan = _write_into(tmp, spec, progress)
    return plan


def ensure_synthetic_corpus(parent: str | Path, spec: SyntheticSpec, progress: bool = True) -> Path:
    """``<parent>/<spec key>``, generated only if it is not there yet."""
    root = Path(parent).expanduser() / spec.key()
    if (root / SPEC_FILE).is_file():
        return root
    try:
        write_synthetic_corpus(root, spec, progress)
    except (FileExistsError, OSError):
        if not (root / SPEC_FILE).is_file():  # not a concurrent writer that won the rename
            raise
    return root


def _write_into(root: Path, spec: SyntheticSpec, progress: bool) -> pd.DataFrame:
    plan = plan_corpus(spec)
    traits = {}
    rows = tqdm(
        plan.itertuples(),
        total=len(plan),
        desc="synthetic corpus",
        unit="file",
        disable=not progress,
    )
    for row in rows:
        if row.subject not in traits:
            rng = np.random.default_rng([spec.seed, 1, row.subject_index])
            traits[row.subject] = draw_subject(rng, row.abnormal, spec.effect)
        rng = np.random.default_rng([spec.seed, 2, row.subject_index, row.session])
        path = root / row.relpath
        path.parent.mkdir(parents=True, exist_ok=True)
        _write_edf(path, rng, traits[row.subject], row.sfreq, row.duration_s)
    record = {
        "spec": dataclasses.asdict(spec),
        "generator": GENERATOR_VERSION,
        "recordings": plan.drop(columns=["subject_index"]).to_dict("records"),
        "subjects": {s: dataclasses.asdict(t) for s, t in traits.items()},
    }
    (root / SPEC_FILE).write_text(json.dumps(record, indent=1) + "\n")
    return plan


def _write_edf(path: Path, rng: np.random.Generator, traits, sfreq: float, duration_s: int) -> None:
    n = int(round(sfreq * duration_s))
    eeg = synthesize_eeg(rng, traits, sfreq, n)
    signals = [_signal(f"EEG {name}-REF", x, sfreq) for name, x in eeg.items()]
    eye = eeg["FP1"] - eeg["F7"]
    signals += [
        _signal("EEG EKG1-REF", synthesize_ekg(rng, sfreq, n), sfreq),
        _signal("EEG ROC-REF", eye + 10 * rng.standard_normal(n), sfreq),
        _signal("EEG LOC-REF", -eye + 10 * rng.standard_normal(n), sfreq),
        _signal("EMG-REF", 15 * rng.standard_normal(n), sfreq),
        _signal("EEG 26-REF", 5 * rng.standard_normal(n), sfreq),
        _signal("PHOTIC-REF", np.zeros(n), sfreq, physical_range=(-1.0, 1.0)),
    ]
    for label in ("IBI", "BURSTS", "SUPPR"):  # 1 Hz, as in TUAB
        signals.append(_signal(label, np.zeros(duration_s), 1.0, physical_range=(-1.0, 1.0)))
    edfio.Edf(signals, data_record_duration=1.0).write(path)


def _signal(
    label: str, data: np.ndarray, sfreq: float, physical_range: tuple[float, float] | None = None
) -> edfio.EdfSignal:
    if physical_range is None:
        bound = float(np.ceil(np.abs(data).max() / 10.0) * 10.0) + 10.0  # round, 8 chars
        physical_range = (-bound, bound)
    return edfio.EdfSignal(
        data, sfreq, label=label, physical_dimension="uV", physical_range=physical_range
    )
