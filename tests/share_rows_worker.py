"""Run by test_device_features in spawned processes: opens rows exported by the parent
(shared memory, the CPU analogue of CUDA IPC), trains one epoch on them through the
trainer's lookup, and reports what it saw."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))


def consume(exported, inbox, outbox) -> None:
    from fused_fixtures import feature_data, probe_config, probe_head
    from tune_eegpt.training.device_features import import_rows, register_rows, rows_key
    from tune_eegpt.training.feature_rows import feature_rows
    from tune_eegpt.training.trainer import ProbeTrainer

    shared = import_rows(exported)
    inbox.get()  # the parent has written into the shared table since the export
    first_byte = int(shared.table[0, 0])
    # this process's own rows of the same data, under which the trainer looks them up
    data = feature_data(64)
    register_rows(shared, rows_key(feature_rows(data)))
    trainer = ProbeTrainer(probe_config(epochs=1), probe_head(), data)
    trainer.train_epoch()
    same = trainer.fused.rows.table.data_ptr() == shared.table.data_ptr()
    outbox.put({"first_byte": first_byte, "uses_shared": same, "key": exported["key"]})
