"""A local pyarrow filesystem whose every written file appears whole or not at all.

Tune saves an experiment (its state, each trial's results and checkpoints) by copying
files into the storage through a pyarrow filesystem. On a local disk that fills up, the
stock one leaves the file it was writing cut short, the experiment state included, and the
experiment can no longer be resumed. Given to Tune as ``storage_filesystem``, this one
writes each file under a temporary name and renames it when whole (the same rule as every
other write of the project, ``atomic_write.py``): a write that fails leaves the previous
version of the file in place.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.fs as pafs

from tune_eegpt.atomic_write import temp_sibling


def atomic_local_filesystem() -> pafs.PyFileSystem:
    return pafs.PyFileSystem(AtomicLocalHandler())


class AtomicLocalHandler(pafs.FileSystemHandler):
    """pyarrow's LocalFileSystem, with output streams written to a temporary sibling."""

    def __init__(self) -> None:
        self.local = pafs.LocalFileSystem()

    def __eq__(self, other: object) -> bool:
        return isinstance(other, AtomicLocalHandler)

    def __ne__(self, other: object) -> bool:
        return not self == other

    def __reduce__(self):  # shipped to Ray workers and pickled into tuner.pkl
        return (AtomicLocalHandler, ())

    def get_type_name(self) -> str:
        return "atomic-local"

    def normalize_path(self, path: str) -> str:
        return self.local.normalize_path(path)

    def get_file_info(self, paths: list[str]) -> list[pafs.FileInfo]:
        return self.local.get_file_info(paths)

    def get_file_info_selector(self, selector: pafs.FileSelector) -> list[pafs.FileInfo]:
        return self.local.get_file_info(selector)

    def create_dir(self, path: str, recursive: bool) -> None:
        self.local.create_dir(path, recursive=recursive)

    def delete_dir(self, path: str) -> None:
        self.local.delete_dir(path)

    def delete_dir_contents(self, path: str, missing_dir_ok: bool = False) -> None:
        self.local.delete_dir_contents(path, missing_dir_ok=missing_dir_ok)

    def delete_root_dir_contents(self) -> None:
        raise OSError("refusing to delete the contents of the root directory")

    def delete_file(self, path: str) -> None:
        self.local.delete_file(path)

    def move(self, src: str, dest: str) -> None:
        self.local.move(src, dest)

    def copy_file(self, src: str, dest: str) -> None:
        with self.local.open_input_stream(src) as source:
            with self.open_output_stream(dest, None) as out:
                while chunk := source.read(1 << 20):
                    out.write(chunk)

    def open_input_stream(self, path: str) -> pa.NativeFile:
        return self.local.open_input_stream(path)

    def open_input_file(self, path: str) -> pa.NativeFile:
        return self.local.open_input_file(path)

    def open_output_stream(self, path: str, metadata) -> pa.NativeFile:
        return pa.PythonFile(_WholeOrNothing(Path(path)), mode="w")

    def open_append_stream(self, path: str, metadata) -> pa.NativeFile:
        return self.local.open_append_stream(path)


class _WholeOrNothing(io.RawIOBase):
    """Writes to a temporary sibling of ``final``; on close, fsyncs and renames it over
    ``final``, unless a write failed: then the temporary file is removed."""

    def __init__(self, final: Path) -> None:
        self.final, self.tmp = final, temp_sibling(final)
        self.file = open(self.tmp, "wb")  # noqa: SIM115 (closed in close())
        self.failed = False

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        try:
            return self.file.write(data)
        except BaseException:
            self.failed = True
            raise

    def flush(self) -> None:
        if not self.file.closed:
            self.file.flush()

    def close(self) -> None:
        if self.closed:
            return
        try:
            if not self.failed:
                self.file.flush()
                os.fsync(self.file.fileno())
            self.file.close()
            if self.failed:
                self.tmp.unlink(missing_ok=True)
            else:
                os.replace(self.tmp, self.final)
        except BaseException:
            self.file.close()
            self.tmp.unlink(missing_ok=True)
            raise
        finally:
            super().close()
