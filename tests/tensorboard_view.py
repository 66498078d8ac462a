"""Scalars of a TensorBoard run folder as TensorBoard shows them (a test helper)."""

from __future__ import annotations

import struct
from pathlib import Path


def tensorboard_view(folder: Path) -> dict[str, list[tuple[int, float]]]:
    """{tag: [(step, value), ...]} as TensorBoard shows a run folder: with TensorBoard's own
    EventAccumulator when it is installed; otherwise by reading the event files in name order
    and applying the rule TensorBoard applies to files of version brain.Event:2: a
    SessionLog.START event at step s discards the events read so far at steps >= s."""
    try:
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    except ImportError:
        EventAccumulator = None
    if EventAccumulator is not None:
        acc = EventAccumulator(str(folder), size_guidance={"scalars": 0})
        acc.Reload()
        return {t: [(e.step, e.value) for e in acc.Scalars(t)] for t in acc.Tags()["scalars"]}
    from tensorboardX.proto import event_pb2

    seen: dict[str, list[tuple[int, float]]] = {}
    for path in sorted(folder.glob("events.out.tfevents.*")):
        data, pos = path.read_bytes(), 0
        while pos < len(data):
            (length,) = struct.unpack("<Q", data[pos : pos + 8])
            event = event_pb2.Event.FromString(data[pos + 12 : pos + 12 + length])
            pos += 12 + length + 4
            if event.session_log.status == event_pb2.SessionLog.START:
                seen = {t: [(s, v) for s, v in rows if s < event.step] for t, rows in seen.items()}
            for value in event.summary.value:
                seen.setdefault(value.tag, []).append((event.step, value.simple_value))
    return seen
