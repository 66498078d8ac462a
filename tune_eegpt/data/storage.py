"""Where caches live: a local folder (or a shared mount, read in place by every node) or a
pyarrow-filesystem URI (``s3://``, ``gs://``, ``file://``...), copied once per node.

``Location`` gives the cache builder one way to list, read and write either kind; every
write is atomic (temp name + rename on a file system; an object-store upload appears
whole when it completes), so a reader never sees half a file. ``local_copy`` brings a
complete cache from a URI to local disk once per node, under a lock, verified against its
manifest (every listed shard present, every file the size it has in storage, every shard's
CRC-32 the one recorded when it was written).
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pyarrow.fs as pafs

from tune_eegpt.checksum import DamagedFileError, problem, sidecar_name
from tune_eegpt.data.shards import TEMP_MARK, atomic_write_bytes, repair_hint

MANIFEST = "manifest.json"


def is_uri(location: str | Path) -> bool:
    return "://" in str(location)


class Location:
    """A folder or file, on local disk (``path``) or under a URI (``fs`` + ``fs_path``)."""

    def __init__(self, where: str | Path) -> None:
        self.where = str(where).rstrip("/") if is_uri(where) else str(Path(where).expanduser())
        if is_uri(self.where):
            try:
                self.fs, self.fs_path = pafs.FileSystem.from_uri(self.where)
            except Exception as exc:  # pyarrow raises ArrowInvalid/OSError for bad URIs
                raise ValueError(f"cache location {where!r}: not a usable URI ({exc})") from exc
        else:
            self.fs, self.fs_path = None, self.where

    @property
    def is_local(self) -> bool:
        return self.fs is None

    @property
    def path(self) -> Path:
        assert self.is_local, "a URI has no local path"
        return Path(self.where)

    def child(self, *parts: str) -> Location:
        return Location("/".join([self.where, *parts]))

    def __str__(self) -> str:
        return self.where

    def exists(self) -> bool:
        if self.is_local:
            return Path(self.where).exists()
        return self.fs.get_file_info(self.fs_path).type != pafs.FileType.NotFound

    def names(self) -> set[str]:
        """Names of the entries directly inside this folder (none if it is absent)."""
        if self.is_local:
            folder = Path(self.where)
            return {p.name for p in folder.iterdir()} if folder.is_dir() else set()
        selector = pafs.FileSelector(self.fs_path, allow_not_found=True)
        return {info.base_name for info in self.fs.get_file_info(selector)}

    def make_dir(self) -> None:
        if self.is_local:
            Path(self.where).mkdir(parents=True, exist_ok=True)
        else:
            self.fs.create_dir(self.fs_path, recursive=True)

    def read_bytes(self) -> bytes:
        if self.is_local:
            return Path(self.where).read_bytes()
        with self.fs.open_input_stream(self.fs_path) as stream:
            return stream.read()

    def size(self) -> int:
        if self.is_local:
            return Path(self.where).stat().st_size
        return self.fs.get_file_info(self.fs_path).size

    def open_input_stream(self):
        """A sequential reader of the whole file."""
        if self.is_local:
            return Path(self.where).open("rb")
        return self.fs.open_input_stream(self.fs_path)

    def remove(self) -> None:
        """Deletes this file (nothing if it is absent)."""
        if self.is_local:
            Path(self.where).unlink(missing_ok=True)
        elif self.exists():
            self.fs.delete_file(self.fs_path)

    def open_input_file(self):
        """A random-access file (Arrow readers take it: an IPC footer is read, not the file)."""
        if self.is_local:
            import pyarrow as pa

            return pa.memory_map(self.where, "r")
        return self.fs.open_input_file(self.fs_path)

    def write_bytes(self, data: bytes) -> None:
        if self.is_local:
            atomic_write_bytes(Path(self.where), data)
            return
        tmp = self._temp_sibling()
        with self.fs.open_output_stream(tmp) as out:
            out.write(data)
        self._commit(tmp)

    def upload(self, local_file: Path) -> None:
        """Copies ``local_file`` here, atomically."""
        if self.is_local:
            tmp = Path(self._temp_sibling())
            shutil.copyfile(local_file, tmp)
            os.replace(tmp, self.where)
            return
        tmp = self._temp_sibling()
        pafs.copy_files(str(local_file), tmp, destination_filesystem=self.fs)
        self._commit(tmp)

    def _temp_sibling(self) -> str:
        if self.fs is not None and self.fs.type_name != "local":
            return self.fs_path  # an object appears whole when its upload completes
        base = self.fs_path if self.fs is not None else self.where
        parent, name = base.rsplit("/", 1)
        return f"{parent}/.{name}{TEMP_MARK}{os.getpid()}-{uuid.uuid4().hex[:8]}"

    def _commit(self, tmp: str) -> None:
        if tmp != self.fs_path:
            self.fs.move(tmp, self.fs_path)


def files_under(location: Location) -> dict[str, int]:
    """Relative path -> size of every file under ``location`` (temp files left out)."""
    if location.is_local:
        root = location.path
        found = {str(p.relative_to(root)): p.stat().st_size for p in root.rglob("*") if p.is_file()}
    else:
        selector = pafs.FileSelector(location.fs_path, recursive=True, allow_not_found=True)
        prefix = location.fs_path.rstrip("/") + "/"
        found = {
            info.path.removeprefix(prefix): info.size
            for info in location.fs.get_file_info(selector)
            if info.type == pafs.FileType.File
        }
    return {rel: size for rel, size in found.items() if TEMP_MARK not in rel}


def local_copy(source: str, local_dir: str | Path) -> Path:
    """The cache at ``source`` on this node's disk. A local path or shared mount is used in
    place; a URI is copied to ``local_dir`` once (under a lock, so the processes of a node
    copy it once between them) and verified: a cache folder against its manifest, which is
    copied last; a single file (a feature cache) against its size in storage."""
    if not is_uri(source):
        return Path(source).expanduser()
    remote = Location(source)
    target = Path(local_dir).expanduser()
    target.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(target.parent / f".{target.name}.copy.lock"):
        info = remote.fs.get_file_info(remote.fs_path)
        if info.type == pafs.FileType.NotFound:
            raise FileNotFoundError(f"{source} does not exist; prepare the caches first")
        if info.type == pafs.FileType.File:
            if not (target.is_file() and target.stat().st_size == info.size):
                target.with_name(sidecar_name(target.name)).unlink(missing_ok=True)
                _download(remote, target)
            _check_single_file(source, remote, target)
            return target
        if (target / MANIFEST).is_file():
            return target
        sizes = files_under(remote)
        if MANIFEST not in sizes:
            raise FileNotFoundError(
                f"{source} is not a complete cache (no {MANIFEST}); prepare it first"
            )
        manifest = json.loads(remote.child(MANIFEST).read_bytes())
        missing = [
            e["recording"]
            for e in manifest.get("shards", [])
            if f"shards/{e['recording']}.arrow" not in sizes
        ]
        if missing:
            raise ValueError(f"{source}: its manifest lists shards not in storage: {missing[:5]}")
        for rel, size in sorted(sizes.items()):
            if rel == MANIFEST:
                continue
            local = target / rel
            if not (local.is_file() and local.stat().st_size == size):
                _download(remote.child(rel), local)
            if local.stat().st_size != size:
                raise OSError(f"copy of {source}/{rel}: {local.stat().st_size} of {size} bytes")
        for entry in manifest.get("shards", []):  # every byte, against the manifest's CRC
            rel = f"shards/{entry['recording']}.arrow"
            if problem(target / rel, entry, full=True) is None:
                continue
            _download(remote.child(rel), target / rel)  # an earlier copy went wrong: once more
            why = problem(target / rel, entry, full=True)
            if why is not None:
                (target / rel).unlink(missing_ok=True)
                raise DamagedFileError(
                    f"{source}/{rel}: damaged in storage ({why}); "
                    + repair_hint(source.rsplit("/", 1)[0])
                )
        _download(remote.child(MANIFEST), target / MANIFEST)  # last: marks the copy complete
    return target


def _check_single_file(source: str, remote: Location, local: Path) -> None:
    """A single file (a feature cache) against the fingerprint stored beside it, where
    there is one: every byte, once per copy (a verified copy leaves a marker)."""
    parent, name = source.rsplit("/", 1)
    stored = Location(parent).child(sidecar_name(name))
    marker = local.with_name(sidecar_name(local.name))
    if not stored.exists() or marker.is_file():
        return
    recorded = json.loads(stored.read_bytes())
    why = problem(local, recorded, full=True)
    if why is not None:
        _download(remote, local)  # a copy that went wrong: once more
        why = problem(local, recorded, full=True)
    if why is not None:
        local.unlink(missing_ok=True)
        raise DamagedFileError(
            f"{source}: damaged in storage ({why}); delete it there and run the search "
            "again: it computes the features again"
        )
    atomic_write_bytes(marker, json.dumps(recorded).encode())


def _download(remote: Location, local: Path) -> None:
    local.parent.mkdir(parents=True, exist_ok=True)
    tmp = local.with_name(f".{local.name}{TEMP_MARK}{os.getpid()}-{uuid.uuid4().hex[:8]}")
    pafs.copy_files(remote.fs_path, str(tmp), source_filesystem=remote.fs)
    os.replace(tmp, local)


@contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive lock between the processes of one machine (``flock`` on ``path``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
