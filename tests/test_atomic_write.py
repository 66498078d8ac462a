"""The one atomic writer: readers see the old file or the whole new one."""

import os
import signal

import pytest

from tune_eegpt.atomic_write import TEMP_MARK, atomic_path, atomic_write_text, temp_sibling


def test_new_content_replaces_the_old_and_no_temporary_stays(tmp_path):
    target = tmp_path / "sub" / "info.json"
    atomic_write_text(target, "one")
    atomic_write_text(target, "two")
    assert target.read_text() == "two"
    assert sorted(p.name for p in target.parent.iterdir()) == ["info.json"]


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "state.pt"
    atomic_write_text(target, "old")
    with pytest.raises(RuntimeError, match="disk full"), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("disk full")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["state.pt"]


def test_temporary_names_are_unique_hidden_siblings_naming_the_pid(tmp_path):
    target = tmp_path / "x.csv"
    a, b = temp_sibling(target), temp_sibling(target)
    assert a != b and a.parent == b.parent == tmp_path
    assert a.name.startswith(f".x.csv{TEMP_MARK}{os.getpid()}-")


def test_a_folder_is_written_whole(tmp_path):
    target = tmp_path / "corpus"
    with atomic_path(target) as tmp:
        (tmp / "train").mkdir(parents=True)
        (tmp / "train" / "a.edf").write_bytes(b"edf")
        assert not target.exists()
    assert (target / "train" / "a.edf").read_bytes() == b"edf"
    assert [p.name for p in tmp_path.iterdir()] == ["corpus"]


class _InterruptWhenPickled:
    """Sends this process a Ctrl-C while torch.save is writing it."""

    def __reduce__(self):
        os.kill(os.getpid(), signal.SIGINT)
        return (int, (7,))


def test_ctrl_c_inside_a_checkpoint_write_is_raised_once_the_file_is_whole(tmp_path):
    # without the deferral torch.save's zip writer turns the interrupt into a RuntimeError
    # ("unexpected pos ...") and the run ends as a crash instead of an interrupt
    import torch

    from tune_eegpt.training.checkpoint import save_atomic

    target = tmp_path / "step-000000001.pt"
    state = {"head": torch.arange(100_000.0), "marker": _InterruptWhenPickled()}
    with pytest.raises(KeyboardInterrupt):
        save_atomic(state, target)
    loaded = torch.load(target, weights_only=False)  # our own file: int is pickled
    assert loaded["marker"] == 7 and torch.equal(loaded["head"], state["head"])
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # restored
