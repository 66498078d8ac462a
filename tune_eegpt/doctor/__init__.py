"""The schedule doctor: ``python -m tune_eegpt.doctor PATH ...`` finds the learning-rate
schedule bugs (stepped per epoch, a total_steps blind to accumulation, a resume that rebuilt
the scheduler or reset the step counter, checkpoints without a step counter, a constant LR)
in any run's logs and checkpoints. ``diagnose`` is the same as a function."""

from tune_eegpt.doctor.report import Diagnosis, diagnose

__all__ = ["Diagnosis", "diagnose"]
