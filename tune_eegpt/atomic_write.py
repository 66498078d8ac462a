"""Write a file (or a folder) so that readers see the old version or the whole new one.

The one way the project writes anything that is read back: under a unique temporary name
in the same folder (so the rename stays on one filesystem), fsync of the new file and of
the folder, then ``os.replace``. A writer that dies leaves only a hidden ``.<name>.tmp-<pid>-...``
file, which the cache builder sweeps away once its pid is gone.
"""

from __future__ import annotations

import errno
import os
import shutil
import signal
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

TEMP_MARK = ".tmp-"  # .<final name>.tmp-<pid>-<random>: the writer's pid, for stale-file cleanup
_FULL = {errno.ENOSPC, errno.EDQUOT}


class DiskFullError(OSError):
    """A write ran out of space (or quota): one sentence saying what was being written,
    where, how much it took and what is free, and that nothing half-written was kept."""


def disk_full_cause(exc: BaseException) -> OSError | None:
    """The ENOSPC / EDQUOT error behind ``exc`` (itself, or what it was raised from or
    during: torch's zip writer turns one into a RuntimeError), if there is one."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in _FULL:
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


def disk_full_error(
    path: str | Path, written: int | None = None, what: str | None = None
) -> DiskFullError:
    """The one-line error for a write into ``path`` (``what``: a description of the
    files, when the error does not say which) that found its device full."""
    path = Path(path)
    folder = next((p for p in [path.parent, *path.parents] if p.exists()), Path("/"))
    free = shutil.disk_usage(folder).free
    took = f"it needed more than the {readable_size(written)} written when the space ran out, "
    target = f"{what} in {path}" if what else str(path)
    return DiskFullError(
        f"no space left on the device of {folder} writing {target}: "
        + (took if written else "")
        + f"{readable_size(free)} free there; nothing half-written was kept. Free some space (or "
        "write elsewhere) and run the same command again"
    )


def readable_size(n: int | None) -> str:
    """A byte count as people read it (200.7 kB)."""
    n = int(n or 0)
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} bytes"


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
    except BaseException as exc:
        written = _tree_size(tmp)
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
        if isinstance(exc, DiskFullError) or disk_full_cause(exc) is None:
            raise
        raise disk_full_error(final, written) from exc


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


def _tree_size(path: Path) -> int:
    try:
        if path.is_dir():
            return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
        return path.stat().st_size if path.exists() else 0
    except OSError:
        return 0


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
