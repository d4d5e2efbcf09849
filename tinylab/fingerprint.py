"""Content fingerprints of the local files a run reads, so caches notice an edited file.

A cache key made of settings alone cannot tell ``data.task=reviews.csv`` today from the same
name after one label was fixed: the fine-tuned teacher of the old file would be loaded for the
new one. So every cache key (and ``--resume``'s check of the settings) also carries the
*content* of each local file it depends on: a task file or folder, a local teacher or student
folder, a general-corpus file.

Hashing a 90 MB teacher on every run would cost about a second, so the sha256 of each file is
remembered in a small side-car table, ``$TINYLAB_CACHE/fingerprints.json``, under the file's
full path, size and modification time (nanoseconds). A file whose size and mtime did not
change is not read again; an edit changes the mtime (and usually the size), and the file is
hashed anew. ``offline:`` asset names need none of this: their files are pinned by sha256 in
the package itself.

    >>> from tinylab.fingerprint import source_fingerprint
    >>> source_fingerprint("offline:all-MiniLM-L6-v2") is None        # pinned already
    True
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from tinylab.assets import cache_dir, sha256_file
from tinylab.atomic import atomic_write_text

__all__ = ["file_sha256", "source_fingerprint", "input_fingerprints", "SIDECAR"]

SIDECAR = "fingerprints.json"
_MAX_REMEMBERED = 4000  # files; the oldest are forgotten first (each costs ~150 bytes)


def _sidecar_path() -> Path:
    return cache_dir() / SIDECAR


def _load_sidecar(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _hash(path: Path) -> str:
    return sha256_file(path)


def _remembered(table: dict[str, Any], path: Path) -> tuple[str, bool]:
    """``(sha256, was_hashed)`` of ``path`` (resolved), from ``table`` when its size and mtime
    still match; a new hash is put into ``table``."""
    stat = path.stat()
    key = str(path)
    known = table.get(key)
    if (isinstance(known, dict) and known.get("size") == stat.st_size
            and known.get("mtime_ns") == stat.st_mtime_ns and isinstance(known.get("sha256"), str)):
        return known["sha256"], False
    sha = _hash(path)
    table.pop(key, None)
    table[key] = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": sha}
    return sha, True


def _save(table: dict[str, Any]) -> None:
    """Write the side-car back (oldest entries forgotten beyond the limit). A cache that
    cannot be written is no error: the hashes are then computed again next time."""
    while len(table) > _MAX_REMEMBERED:       # dicts keep insertion order: oldest first
        table.pop(next(iter(table)))
    try:
        atomic_write_text(_sidecar_path(), json.dumps(table, indent=0))
    except OSError:
        pass


def _sha256_many(paths: list[Path]) -> list[str]:
    """The sha256 of each file, reading the side-car once and writing it at most once."""
    table = _load_sidecar(_sidecar_path())
    out, changed = [], False
    for path in paths:
        sha, hashed = _remembered(table, Path(path).resolve())
        out.append(sha)
        changed |= hashed
    if changed:
        _save(table)
    return out


def file_sha256(path: str | os.PathLike, *, remember: bool = True) -> str:
    """The sha256 of one file, read again only when its size or mtime changed.

    ``remember=False`` always reads the file and leaves the side-car alone.
    """
    if not remember:
        return _hash(Path(path))
    return _sha256_many([Path(path)])[0]


def source_fingerprint(ref: str | os.PathLike | None) -> str | None:
    """A short content hash of a local file or folder named by ``ref``, else ``None``.

    ``None`` for ``offline:`` assets (pinned), hub names and anything that does not exist
    on disk. A folder's fingerprint covers the relative path and content of every file in it
    (hidden files and folders, such as ``.git`` or ``.cache``, are skipped: they describe the
    folder, not the model or data in it).
    """
    if ref is None:
        return None
    text = os.fspath(ref)
    if not text or text.startswith("offline:"):
        return None
    path = Path(text).expanduser()
    if path.is_file():
        return file_sha256(path)[:16]
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and not any(
            part.startswith(".") for part in p.relative_to(path).parts))
        digest = hashlib.sha256()
        for p, sha in zip(files, _sha256_many(files)):
            digest.update(f"{p.relative_to(path).as_posix()}\0{sha}\n".encode())
        return digest.hexdigest()[:16]
    return None


def input_fingerprints(cfg: Any, keys: tuple[str, ...] | None = None) -> dict[str, str]:
    """``{"data.task": "3f2a...", ...}``: the fingerprint of every setting of ``cfg`` that
    names a local file or folder (``keys`` restricts which settings are looked at).

    Settings that name an offline asset, a hub dataset or model, or nothing, are left out, so
    a configuration without local files has no fingerprints and its cache keys are the ones
    it always had.
    """
    candidates = {
        "data.task": cfg.data.task,
        "data.general_corpus": cfg.data.general_corpus,
        "teacher.model": cfg.teacher.model,
        "teacher.general_model": cfg.teacher.general_model,
        "student.init": cfg.student.init,
        "augment.mlm_model": cfg.augment.mlm_model,
    }
    out = {}
    for key, ref in candidates.items():
        if keys is not None and key not in keys:
            continue
        if key == "data.general_corpus" and ref == "offline":
            continue
        if key == "student.init" and ref in ("random", "teacher", "pca"):
            continue
        fp = source_fingerprint(ref)
        if fp is not None:
            out[key] = fp
    return out
