"""Write a file (or a folder) so that readers see the old version or the whole new one.

The one way the project writes anything that is read back: under a unique temporary name
in the same folder (so the rename stays on one filesystem), fsync of the new file and of
the folder, then ``os.replace``. A writer that dies leaves only a hidden ``.<name>.tmp-<pid>-...``
file, which the cache builder sweeps away once its pid is gone.
"""

from __future__ import annotations

import os
import shutil
import signal
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

TEMP_MARK = ".tmp-"  # .<final name>.tmp-<pid>-<random>: the writer's pid, for stale-file cleanup


def temp_sibling(final: Path) -> Path:
    """A hidden, unique name beside ``final`` that names its writer's pid."""
    return final.with_name(f".{final.name}{TEMP_MARK}{os.getpid()}-{uuid.uuid4().hex[:8]}")


@contextmanager
def atomic_path(final: str | Path) -> Iterator[Path]:
    """Yields a temporary path to write to; when the block ends without error, the
    temporary file or folder is fsynced and renamed over ``final`` and the folder fsynced.
    On error the temporary is removed and ``final`` is left as it was."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_sibling(final)
    try:
        yield tmp
        _fsync_tree(tmp)
        os.replace(tmp, final)
        _fsync(final.parent)
    except BaseException:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
        raise


@contextmanager
def sigint_deferred() -> Iterator[None]:
    """Ctrl-C during the block takes effect when it ends (in the main thread; elsewhere
    signals do not arrive anyway). For short writes that must finish once started: a
    KeyboardInterrupt inside ``torch.save`` surfaces as a RuntimeError from its zip writer,
    which would turn a clean interrupt into a crash."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[tuple] = []
    previous = signal.signal(signal.SIGINT, lambda *args: received.append(args))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if received:
        if callable(previous):
            previous(*received[0])
        elif previous != signal.SIG_IGN:
            raise KeyboardInterrupt


def atomic_write_bytes(final: str | Path, data: bytes) -> Path:
    with atomic_path(final) as tmp:
        tmp.write_bytes(data)
    return Path(final)


def atomic_write_text(final: str | Path, text: str) -> Path:
    return atomic_write_bytes(final, text.encode("utf-8"))


def _fsync_tree(path: Path) -> None:
    if not path.is_dir():
        _fsync(path)
        return
    for folder, _, files in os.walk(path):
        for name in files:
            _fsync(Path(folder) / name)
        _fsync(Path(folder))


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
