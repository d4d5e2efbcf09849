"""Move a prepared cache to machines without a network: ``tinylab cache pack`` / ``unpack``.

A workshop room with bad Wi-Fi gets its expensive results from a USB stick: an instructor runs
``tinylab course prepare`` once (the fine-tuned teacher, the general student, the augmented
data, under the cache keys the notebooks use), then ``tinylab cache pack room.tar``; every
laptop runs ``tinylab cache unpack room.tar``.

A pack is a plain tar file. Its first member, ``tinylab-pack.json``, names the tinylab version
that made it and the sha256 and size of every file. Unpacking

1. refuses, in one line, a file that is not a pack or is truncated, and a pack made by another
   tinylab version (cache keys and formats may differ between versions);
2. extracts into a temporary folder inside the cache and checks every file against the
   manifest: one changed byte and the whole pack is refused, naming the file;
3. only then moves each entry (``assets/<name>``, ``teachers/<key>``, ``general/<key>``,
   ``augment/<key>.parquet``) into place, one rename each. An entry the cache already has is
   kept as it is, never overwritten: the same key means the same configuration, and the copy
   on the machine may be newer.

Whatever fails, the existing cache is left as it was.
"""
from __future__ import annotations

import io
import json
import os
import shutil
import tarfile
import tempfile
import time
from pathlib import Path

from tinylab.assets import sha256_file
from tinylab.atomic import atomic_path

__all__ = ["PACK_MANIFEST", "ENTRY_KINDS", "pack_cache", "unpack_cache", "PackError"]

PACK_MANIFEST = "tinylab-pack.json"
PACK_FORMAT = 1
ENTRY_KINDS = ("assets", "teachers", "general", "augment")


class PackError(ValueError):
    """A pack that cannot be used (truncated, corrupted, or from another tinylab version)."""


def _version() -> str:
    from tinylab import __version__

    return __version__


def _entries(root: Path, kinds) -> list[Path]:
    """Top-level cache entries (relative paths), skipping temporary and hidden names."""
    out = []
    for kind in kinds:
        folder = root / kind
        if folder.is_dir():
            out += [p.relative_to(root) for p in sorted(folder.iterdir())
                    if not p.name.startswith(".")]
    return out


def pack_cache(file: str | Path, *, cache: str | Path | None = None,
               kinds=ENTRY_KINDS) -> dict:
    """Write the cache's entries (``kinds``) into the tar ``file``; return its manifest.

    Refuses to replace an existing ``file``. The tar is written under a temporary name and
    renamed when complete, so an interrupted pack leaves no half file behind.
    """
    from tinylab.assets import cache_dir

    root = Path(cache) if cache is not None else cache_dir()
    file = Path(file)
    if file.exists():
        raise FileExistsError(f"{file} already exists; choose another file name")
    entries = _entries(root, kinds)
    if not entries:
        raise PackError(f"nothing to pack in {root} ({', '.join(kinds)} are empty); run "
                        f"`tinylab course prepare` first")
    files = {}
    for entry in entries:
        paths = [root / entry] if (root / entry).is_file() else sorted(
            p for p in (root / entry).rglob("*") if p.is_file())
        for path in paths:
            files[path.relative_to(root).as_posix()] = {"sha256": sha256_file(path),
                                                       "size": path.stat().st_size}
    manifest = {"format": PACK_FORMAT, "tinylab": _version(),
                "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "entries": [e.as_posix() for e in entries], "files": files}
    with atomic_path(file) as tmp, tarfile.open(tmp, "w") as tar:
        blob = json.dumps(manifest, indent=1).encode()
        info = tarfile.TarInfo(PACK_MANIFEST)
        info.size = len(blob)
        tar.addfile(info, io.BytesIO(blob))
        for name in files:
            tar.add(root / name, arcname=name, recursive=False)
    return manifest


def _read_manifest(tar: tarfile.TarFile, file: Path) -> dict:
    first = tar.next()
    if first is None or first.name != PACK_MANIFEST:
        raise PackError(f"{file} is not a tinylab cache pack (no {PACK_MANIFEST} at its start)")
    manifest = json.loads(tar.extractfile(first).read())
    if manifest.get("format") != PACK_FORMAT or manifest.get("tinylab") != _version():
        raise PackError(f"{file} was packed by tinylab {manifest.get('tinylab')} (pack format "
                        f"{manifest.get('format')}); this is tinylab {_version()}. Cache keys "
                        f"can differ between versions: pack it again with this version")
    return manifest


def unpack_cache(file: str | Path, *, cache: str | Path | None = None) -> dict[str, list[str]]:
    """Verify and add the entries of pack ``file`` to the cache; see the module docstring.

    Returns ``{"added": [...], "kept": [...]}`` (entries added, entries already present).
    Raises :class:`PackError` for a bad pack and ``PermissionError`` for a cache that cannot be
    written, each in one line; the cache is unchanged in both cases.
    """
    from tinylab.assets import cache_dir

    root = Path(cache) if cache is not None else cache_dir()
    file = Path(file)
    if not file.is_file():
        raise FileNotFoundError(f"pack {file} does not exist")
    try:
        root.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=root, prefix=".unpack-"))
    except OSError as err:
        raise PermissionError(f"cannot write to the tinylab cache {root} ({err.strerror}); "
                              f"point $TINYLAB_CACHE at a writable folder") from None
    try:
        try:
            with tarfile.open(file, "r:") as tar:
                manifest = _read_manifest(tar, file)
                tar.extractall(staging, filter="data")
        except (tarfile.TarError, EOFError, json.JSONDecodeError, OSError) as err:
            if isinstance(err, PermissionError):
                raise
            raise PackError(f"{file} is truncated or damaged ({type(err).__name__}: "
                            f"{str(err)[:80]}); copy it again") from None
        missing = [name for name in manifest["files"] if not (staging / name).is_file()]
        if missing:
            raise PackError(f"{file} is truncated: {len(missing)} file(s) of its manifest are "
                            f"missing ({', '.join(missing[:3])}); nothing was added. Copy it "
                            f"again")
        bad = [name for name, meta in manifest["files"].items()
               if (staging / name).stat().st_size != meta["size"]
               or sha256_file(staging / name) != meta["sha256"]]
        if bad:
            raise PackError(f"{file}: {len(bad)} file(s) differ from the pack's manifest "
                            f"({', '.join(bad[:3])}); nothing was added. Copy the pack again")
        added, kept = [], []
        for entry in manifest["entries"]:
            target = root / entry
            if target.exists():
                kept.append(entry)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(staging / entry, target)
            added.append(entry)
        return {"added": added, "kept": kept}
    finally:
        shutil.rmtree(staging, ignore_errors=True)
