"""Device-resident feature rows (training/device_features.py): the fit decision and its
one-time reason, one copy per device and process."""

from __future__ import annotations

import logging

import torch
from packed_fixtures import feature_data

from tune_eegpt.training import device_features
from tune_eegpt.training.device_features import (
    fits_on_device,
    resident_rows,
    rows_nbytes,
)
from tune_eegpt.training.feature_rows import feature_rows

GIB = 2**30


def test_fit_decision_keeps_a_reserve_and_says_why() -> None:
    assert fits_on_device(60 * GIB, 80 * GIB, 80 * GIB) == (
        True,
        "train features (60.00 GiB) resident on the device",
    )
    fits, reason = fits_on_device(70 * GIB, 80 * GIB, 80 * GIB)  # 80 - 15 % = 68 GiB room
    assert not fits
    assert reason.startswith("train features (70.00 GiB) do not fit the device: 80.00 GiB free")


def test_rows_that_do_not_fit_stay_on_the_host_and_the_reason_is_logged_once(caplog) -> None:
    rows = feature_rows(feature_data(50))
    meta = torch.device("meta")  # a non-CPU device without a GPU: only shapes exist there
    too_small = lambda device: (rows_nbytes(rows), rows_nbytes(rows))  # noqa: E731
    with caplog.at_level(logging.WARNING, logger="tune_eegpt"):
        assert resident_rows(rows, meta, memory_info=too_small) is rows
        assert resident_rows(rows, meta, memory_info=too_small) is rows
    said = [r.message for r in caplog.records if "do not fit" in r.message]
    assert len(said) == 1 and "gathered on the host" in said[0]


def test_rows_that_fit_are_copied_once_per_device_as_one_table() -> None:
    rows = feature_rows(feature_data(50))
    meta = torch.device("meta")
    roomy = lambda device: (GIB, GIB)  # noqa: E731
    resident = resident_rows(rows, meta, memory_info=roomy)
    assert resident.table.device == meta and resident.table.shape == (50, 256 * 2)
    assert resident.index.shape == (50,) and resident.labels.shape == (50,)
    assert resident_rows(rows, meta, memory_info=roomy) is resident  # the same copy again
    device_features._RESIDENT.clear()
