"""How a trial ended: the one policy that the search's summary, its Optuna searcher and
analysis all use. Ray-free: it reads a trial's last report and Tune's status string."""

from __future__ import annotations

from typing import Any, Literal

EndState = Literal["finished", "stopped", "diverged", "crashed", "running"]
END_STATES: tuple[EndState, ...] = ("finished", "stopped", "diverged", "crashed", "running")
# Tune statuses of a trial that has not ended (or had not, when the driver stopped).
UNENDED_STATUSES = frozenset({"RUNNING", "PENDING", "PAUSED"})


def end_state(last: Any, status: str | None = None, errored: bool = False) -> EndState:
    """How a trial ended, from its last report (a dict or a pandas row, None if it never
    reported), Tune's status (None if unknown) and whether it left an error behind.

    finished: trained its whole schedule. diverged: the loss became NaN/inf. crashed: it
    raised and was not (or could not be) restarted. running: it has not ended (still
    running, or running when an interrupted driver last saved its state). stopped: ended
    before its schedule without diverging or crashing, i.e. ASHA stopped it."""
    if last is not None and _flag(last.get("diverged")):
        return "diverged"
    if last is not None and _flag(last.get("schedule_done")):
        return "finished"
    if status == "ERROR":
        return "crashed"
    if status in UNENDED_STATUSES:
        return "running"
    if errored and status != "TERMINATED":
        return "crashed"
    if last is None or not len(last):
        return "crashed" if errored else "running"
    return "stopped"


def _flag(value: Any) -> bool:
    try:
        return bool(value) and float(value) == float(value)  # NaN is not a flag
    except (TypeError, ValueError):
        return False
