"""The signal model of the synthetic TUAB-like corpus: physiological in kind, not in detail.

Every recording is a sum of, in microvolts on TUAB's 23 referential electrodes:
- a 1/f background (spatially correlated, subject-specific level and slope);
- a posterior alpha rhythm that waxes and wanes (subject-specific frequency and power);
- diffuse delta and theta activity, and a little beta;
- drowsiness, in both classes: stretches with weaker alpha and more theta;
- eye blinks at the frontal poles, 60 Hz mains, slow electrode drift, and now and then a
  movement artefact large enough that the pipeline drops the window.

Abnormal subjects differ by a severity in [0.8, 1] times the class effect ``effect``:
intermittent background slowing (more delta/theta, weaker and slower alpha) during
50-70% of the recording, for half of them focal intermittent slowing over one region, and
occasional sharp transients. The classes overlap mostly within recordings (drowsy
stretches look like slowing, slowed stretches come and go), less between subjects, so
a split's window-level AUROC depends little on which subjects it holds.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# TUAB's 23 referential EEG electrodes (old 10-20 names) on a unit disc: x left->right,
# y back->front.
ELECTRODES: dict[str, tuple[float, float]] = {
    "FP1": (-0.3, 0.95),
    "FP2": (0.3, 0.95),
    "F3": (-0.4, 0.55),
    "F4": (0.4, 0.55),
    "C3": (-0.45, 0.0),
    "C4": (0.45, 0.0),
    "P3": (-0.4, -0.55),
    "P4": (0.4, -0.55),
    "O1": (-0.3, -0.95),
    "O2": (0.3, -0.95),
    "F7": (-0.8, 0.6),
    "F8": (0.8, 0.6),
    "T3": (-0.95, 0.0),
    "T4": (0.95, 0.0),
    "T5": (-0.8, -0.6),
    "T6": (0.8, -0.6),
    "A1": (-1.1, -0.1),
    "A2": (1.1, -0.1),
    "FZ": (0.0, 0.5),
    "CZ": (0.0, 0.0),
    "PZ": (0.0, -0.5),
    "T1": (-0.85, 0.3),
    "T2": (0.85, 0.3),
}
_NAMES = list(ELECTRODES)
_XY = np.array([ELECTRODES[n] for n in _NAMES])  # (23, 2)
_FOCAL_CENTRES = ["F7", "F8", "T3", "T4", "T5", "T6", "C3", "C4", "P3", "P4", "F3", "F4"]


@dataclass(frozen=True)
class SubjectTraits:
    abnormal: bool
    severity: float  # 0 for normal subjects
    background_uv: float
    background_exponent: float
    alpha_uv: float
    alpha_hz: float
    delta_uv: float
    theta_uv: float
    beta_uv: float
    drowsy_fraction: float  # share of the recording spent drowsy
    slowing_fraction: float  # share of the recording with abnormal background slowing
    slowing_gain: float  # extra log-amplitude of delta (theta: 0.7x) while slowed
    focal_centre: str | None
    focal_uv: float
    transients_per_min: float


def draw_subject(rng: np.random.Generator, abnormal: bool, effect: float) -> SubjectTraits:
    """One subject's traits; ``effect`` scales every abnormal change (0: none)."""
    severity = float(rng.uniform(0.8, 1.0)) if abnormal else 0.0
    strength = effect * severity
    focal = abnormal and rng.random() < 0.5
    return SubjectTraits(
        abnormal=abnormal,
        severity=severity,
        background_uv=float(rng.lognormal(np.log(16.0), 0.15)),
        background_exponent=float(rng.uniform(1.1, 1.5)),
        alpha_uv=float(rng.lognormal(np.log(16.0), 0.2) * np.exp(-0.5 * strength)),
        alpha_hz=float(rng.normal(10.0, 0.4) - 0.8 * strength),
        delta_uv=float(rng.lognormal(np.log(7.0), 0.15)),
        theta_uv=float(rng.lognormal(np.log(5.0), 0.15)),
        beta_uv=float(rng.lognormal(np.log(3.0), 0.2)),
        drowsy_fraction=float(rng.uniform(0.1, 0.5)),
        slowing_fraction=float(rng.uniform(0.5, 0.7)) if abnormal else 0.0,
        slowing_gain=float(1.25 * strength),
        focal_centre=str(rng.choice(_FOCAL_CENTRES)) if focal else None,
        focal_uv=float(25.0 * strength) if focal else 0.0,
        transients_per_min=float(4.0 * strength) if abnormal else 0.0,
    )


def synthesize_eeg(
    rng: np.random.Generator, traits: SubjectTraits, sfreq: float, n_samples: int
) -> dict[str, np.ndarray]:
    """{electrode: (n_samples,) microvolts} for one recording of a subject."""
    n_ch = len(_NAMES)
    t = np.arange(n_samples) / sfreq
    posterior = 1.0 / (1.0 + np.exp(4.0 * (_XY[:, 1] + 0.3)))  # ~1 at O1/O2, ~0.1 frontal
    # Shared and local 1/f background: neighbouring electrodes are correlated.
    shared = _colored(rng, 6, n_samples, sfreq, traits.background_exponent)
    mixing = np.exp(-_pairwise_sq(_XY, rng.uniform(-1, 1, (6, 2))) / 0.5)  # (23, 6)
    mixing /= np.linalg.norm(mixing, axis=1, keepdims=True)
    local = _colored(rng, n_ch, n_samples, sfreq, traits.background_exponent)
    eeg = traits.background_uv * (0.8 * mixing @ shared + 0.6 * local)

    drowsy = _state_mask(rng, n_samples, sfreq, traits.drowsy_fraction)  # (n,) in [0, 1]
    alpha = _band(rng, 1, n_samples, sfreq, traits.alpha_hz, 0.4)[0] * _envelope(
        rng, n_samples, sfreq
    )
    eeg += traits.alpha_uv * (1.0 - 0.7 * drowsy) * posterior[:, None] * alpha
    slowed = _state_mask(rng, n_samples, sfreq, traits.slowing_fraction)  # (n,) in [0, 1]
    eeg *= 1.0 - 0.4 * (1.0 - np.exp(-traits.slowing_gain)) * slowed  # less fast activity
    theta_gain = (1.0 + 0.8 * drowsy) * np.exp(0.7 * traits.slowing_gain * slowed)
    eeg += traits.theta_uv * theta_gain * _band(rng, n_ch, n_samples, sfreq, 5.5, 1.2)
    delta_gain = np.exp(traits.slowing_gain * slowed)
    eeg += traits.delta_uv * delta_gain * _band(rng, n_ch, n_samples, sfreq, 2.0, 0.8)
    eeg += traits.beta_uv * _band(rng, n_ch, n_samples, sfreq, 20.0, 4.0)

    if traits.focal_centre is not None:
        weight = _spatial_weight(traits.focal_centre, 0.35)
        bursts = _state_mask(rng, n_samples, sfreq, 0.4)
        eeg += (
            traits.focal_uv
            * weight[:, None]
            * bursts
            * _band(rng, 1, n_samples, sfreq, 1.8, 0.6)[0]
        )
    for onset in _poisson_times(rng, traits.transients_per_min, n_samples / sfreq):
        centre = traits.focal_centre or str(rng.choice(_FOCAL_CENTRES))
        width = rng.uniform(0.07, 0.2)
        span = _span(onset - width, onset + 4 * width, sfreq, n_samples)
        wave = _sharp_wave(t[span], onset, width) * rng.uniform(50, 120)
        eeg[:, span] += _spatial_weight(centre, 0.3)[:, None] * wave

    frontal = _spatial_weight("FP1", 0.25) + _spatial_weight("FP2", 0.25)
    for onset in _poisson_times(rng, rng.uniform(3, 15), n_samples / sfreq):  # eye blinks
        span = _span(onset - 0.4, onset + 0.4, sfreq, n_samples)
        eeg[:, span] += frontal[:, None] * rng.uniform(60, 150) * _blink(t[span], onset)
    eeg += rng.uniform(0, 5) * np.sin(2 * np.pi * 60.0 * t + rng.uniform(0, 2 * np.pi))
    eeg += rng.uniform(-40, 40, (n_ch, 1)) + np.cumsum(
        rng.normal(0, 0.05, (n_ch, n_samples)), axis=1
    )  # electrode offset and drift, removed by the high-pass
    if rng.random() < 0.15:  # a movement artefact the amplitude bound will catch
        start = int(rng.uniform(0.1, 0.8) * n_samples)
        stop = min(n_samples, start + int(rng.uniform(2, 6) * sfreq))
        eeg[:, start:stop] += rng.uniform(1500, 3000) * np.sin(np.linspace(0, np.pi, stop - start))
    return dict(zip(_NAMES, eeg, strict=True))


def synthesize_ekg(rng: np.random.Generator, sfreq: float, n_samples: int) -> np.ndarray:
    """A crude ECG trace in microvolts (QRS spikes at 55-90 bpm)."""
    t = np.arange(n_samples) / sfreq
    beats = np.arange(rng.uniform(0, 1), t[-1], 60.0 / rng.uniform(55, 90))
    ekg = np.zeros(n_samples)
    for beat in beats:
        span = _span(beat - 0.06, beat + 0.06, sfreq, n_samples)
        ekg[span] += 800.0 * np.exp(-0.5 * ((t[span] - beat) / 0.012) ** 2)
    return ekg + 20.0 * rng.standard_normal(n_samples)


# ---- building blocks ------------------------------------------------------------------
def _colored(
    rng: np.random.Generator, n_ch: int, n: int, sfreq: float, exponent: float
) -> np.ndarray:
    """Unit-variance noise with a 1/f**exponent power spectrum (flat below 0.5 Hz)."""
    freqs = np.fft.rfftfreq(n, 1.0 / sfreq)
    scale = np.maximum(freqs, 0.5) ** (-exponent / 2)
    spectrum = rng.standard_normal((n_ch, len(freqs))) + 1j * rng.standard_normal(
        (n_ch, len(freqs))
    )
    x = np.fft.irfft(spectrum * scale, n)
    return x / x.std(axis=1, keepdims=True)


def _band(
    rng: np.random.Generator, n_ch: int, n: int, sfreq: float, centre: float, width: float
) -> np.ndarray:
    """Unit-variance noise with a Gaussian spectral peak at ``centre`` Hz."""
    freqs = np.fft.rfftfreq(n, 1.0 / sfreq)
    scale = np.exp(-0.5 * ((freqs - centre) / width) ** 2)
    spectrum = rng.standard_normal((n_ch, len(freqs))) + 1j * rng.standard_normal(
        (n_ch, len(freqs))
    )
    x = np.fft.irfft(spectrum * scale, n)
    return x / x.std(axis=1, keepdims=True)


def _envelope(rng: np.random.Generator, n: int, sfreq: float) -> np.ndarray:
    """Slow waxing and waning, mean about 1."""
    slow = _band(rng, 1, n, sfreq, 0.0, 0.15)[0]
    env = np.exp(0.5 * slow)
    return env / env.mean()


def _state_mask(rng: np.random.Generator, n: int, sfreq: float, fraction: float) -> np.ndarray:
    """A smooth 0..1 mask that is on for about ``fraction`` of the time, in stretches."""
    if fraction <= 0:
        return np.zeros(n)
    slow = _band(rng, 1, n, sfreq, 0.0, 0.05)[0]
    threshold = np.quantile(slow, 1.0 - fraction)
    return 1.0 / (1.0 + np.exp(-(slow - threshold) * 6.0))


def _poisson_times(rng: np.random.Generator, per_min: float, duration_s: float) -> np.ndarray:
    count = rng.poisson(per_min * duration_s / 60.0)
    return np.sort(rng.uniform(0.5, max(duration_s - 0.5, 0.5), count))


def _sharp_wave(t: np.ndarray, onset: float, width: float) -> np.ndarray:
    """A steep negative spike followed by a slower positive after-wave."""
    spike = -np.exp(-0.5 * ((t - onset) / (width / 4)) ** 2)
    slow = 0.35 * np.exp(-0.5 * ((t - onset - width) / (width * 1.2)) ** 2)
    return spike + slow


def _span(start_s: float, stop_s: float, sfreq: float, n: int) -> slice:
    return slice(max(int(start_s * sfreq), 0), min(int(stop_s * sfreq) + 1, n))


def _blink(t: np.ndarray, onset: float) -> np.ndarray:
    return np.exp(-0.5 * ((t - onset) / 0.08) ** 2)


def _spatial_weight(centre: str, sigma: float) -> np.ndarray:
    d2 = ((_XY - np.array(ELECTRODES[centre])) ** 2).sum(axis=1)
    return np.exp(-d2 / (2 * sigma**2))


def _pairwise_sq(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return ((a[:, None, :] - b[None, :, :]) ** 2).sum(axis=-1)
