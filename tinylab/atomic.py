"""Writing files so that no reader, and no crash, ever sees half of one.

Every result tinylab writes (JSON, Markdown, figures, parquet files, cache packs, checkpoints,
cached models) goes through this module, in one way:

    write everything to a temporary name in the same folder  ->  os.replace(temporary, final)

``os.replace`` within one file system is atomic, so the final name holds either the old
content or the new, complete one. The temporary name starts with a dot and is removed on any
error, so an interrupted write leaves the old file in place and no debris behind.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Iterator

__all__ = ["atomic_path", "atomic_write_text", "atomic_write_bytes", "atomic_directory",
           "apply_umask"]


def _umask() -> int:
    """The process's umask: from ``/proc`` on Linux (nothing changes), elsewhere by setting it
    and putting it straight back."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def apply_umask(path: str | os.PathLike, *, tree: bool = False) -> None:
    """Give ``path`` the permissions a plain ``mkdir`` / ``open`` would have given it.

    ``tempfile.mkdtemp`` creates folders readable by their owner only (0700), and files
    extracted from a tar keep the modes of the machine that packed them. A cache folder shared
    by a class group (``umask 002``) or read by another account must get the user's umask
    instead: folders ``0o777 & ~umask``, files ``0o666 & ~umask`` (an executable bit that
    was set stays set where the umask allows it). ``tree=True`` does the same for everything
    below ``path``. Symbolic links are left alone.
    """
    mask = _umask()
    paths = [Path(path)]
    if tree and paths[0].is_dir() and not paths[0].is_symlink():
        paths += list(paths[0].rglob("*"))
    for p in paths:
        if p.is_symlink():
            continue
        if p.is_dir():
            os.chmod(p, 0o777 & ~mask)
        else:
            executable = os.stat(p).st_mode & 0o100
            os.chmod(p, (0o777 if executable else 0o666) & ~mask)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path`` for a writer that takes a file name
    (``fig.savefig``, ``Dataset.to_parquet``, ``tarfile.open``); on success it becomes
    ``path`` in one rename. It keeps ``path``'s suffix, for writers that read the format from
    it. On error the temporary file is removed and ``path`` is left as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{uuid.uuid4().hex}.tmp{path.suffix}")
    try:
        yield tmp
        fd = os.open(tmp, os.O_RDONLY)  # the data on disk before the name points at it
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically; returns the path."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically; returns the path."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary sibling folder; on success it replaces ``path`` in one rename.

    If ``path`` already exists it is moved aside first and deleted after the rename, so readers
    see the old folder or the new one. On error the temporary folder is removed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.tmp-"))
    try:
        apply_umask(tmp)  # mkdtemp makes it private; the final folder gets the user's umask
        yield tmp
        old = None
        if path.exists():
            old = path.with_name(f".{path.name}.old-{os.getpid()}")
            os.replace(path, old)
        os.replace(tmp, path)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
