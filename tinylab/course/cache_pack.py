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

A pack is checked before anything is written, because its manifest is data from someone else:
every entry must be ``<kind>/<name>`` with a known kind and a plain file name (no ``..``, no
``/``, no leading dot), every file must lie inside one of those entries, every tar member must
be a regular file the manifest lists (no links, no devices), and every target, resolved, must
stay inside the cache. One bad name and the whole pack is refused, naming it. The sha256 check
proves *integrity* (the files are the ones the manifest lists), not *origin*: anyone can write a
manifest that matches their own files, so unpack only packs from someone you trust.

An unpack killed half-way leaves a ``.unpack-*`` folder holding the marker
``.tinylab-unpack.json``; the next unpack removes such folders once their process is gone.
"""
from __future__ import annotations

import io
import json
import os
import shutil
import socket
import tarfile
import tempfile
import time
from pathlib import Path

import tinylab
from tinylab.assets import cache_dir, sha256_file
from tinylab.atomic import apply_umask, atomic_path

__all__ = ["PACK_MANIFEST", "ENTRY_KINDS", "pack_cache", "unpack_cache", "PackError"]

PACK_MANIFEST = "tinylab-pack.json"
PACK_FORMAT = 1
ENTRY_KINDS = ("assets", "teachers", "general", "augment")
#: Written first into every staging folder: how a stale one is told from anyone else's files.
STAGING_MARKER = ".tinylab-unpack.json"
STAGING_PREFIX = ".unpack-"


class PackError(ValueError):
    """A pack that cannot be used (truncated, corrupted, or from another tinylab version)."""


def _version() -> str:
    return tinylab.__version__


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
    renamed when complete, so an interrupted pack leaves no half file behind. A ``file``
    inside one of the cache's entry folders is refused (it would pack itself, half written);
    next to them, in the cache root, it is fine: the root is never packed.
    """
    root = Path(cache) if cache is not None else cache_dir()
    file = Path(file)
    if file.exists() or file.is_symlink():
        raise FileExistsError(f"{file} already exists; choose another file name")
    where = Path(os.path.abspath(file)).parent.resolve()
    for kind in kinds:
        folder = (root / kind).resolve()
        if where == folder or folder in where.parents:
            raise ValueError(f"cannot write the pack {file} inside the cache folder {folder}: "
                             f"it would be packed into itself; write it next to the cache or "
                             f"elsewhere (e.g. on the USB stick)")
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
    # dereference: a linked file (an asset linked into a fresh cache) goes in as its content
    with atomic_path(file) as tmp, tarfile.open(tmp, "w", dereference=True) as tar:
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
    if not isinstance(manifest, dict):
        raise PackError(f"{file}: {PACK_MANIFEST} is not a JSON object; this is not a tinylab "
                        f"cache pack")
    if manifest.get("format") != PACK_FORMAT or manifest.get("tinylab") != _version():
        raise PackError(f"{file} was packed by tinylab {manifest.get('tinylab')} (pack format "
                        f"{manifest.get('format')}); this is tinylab {_version()}. Cache keys "
                        f"can differ between versions: pack it again with this version")
    return manifest


def _plain_part(part: str) -> bool:
    """One path component that names a file in its folder and nothing else: not empty, not
    ``.``/``..``, no separator (``/`` or ``\\``), no NUL or other control character."""
    return (bool(part) and part not in (".", "..") and "/" not in part and "\\" not in part
            and not any(ord(c) < 32 for c in part))


def _check_entry(entry: object, file: Path) -> str:
    """``entry`` if it is ``<kind>/<name>`` with a known kind and a plain, visible name."""
    parts = entry.split("/") if isinstance(entry, str) else []
    if (len(parts) != 2 or parts[0] not in ENTRY_KINDS or not _plain_part(parts[1])
            or parts[1].startswith(".") or len(parts[1]) > 255):
        raise PackError(f"{file}: refused the whole pack: entry {entry!r} is not "
                        f"<kind>/<name> with kind one of {', '.join(ENTRY_KINDS)} and a plain "
                        f"name (no '..', '/', leading dot or absolute path); nothing was "
                        f"written. Only unpack packs made by `tinylab cache pack` from someone "
                        f"you trust")
    return entry


def _check_names(manifest: dict, file: Path) -> tuple[list[str], dict[str, dict]]:
    """The manifest's entries and files, each checked to name a place inside the cache."""
    entries, files = manifest.get("entries"), manifest.get("files")
    if not isinstance(entries, list) or not isinstance(files, dict):
        raise PackError(f"{file}: {PACK_MANIFEST} lacks its 'entries' list or 'files' table; "
                        f"this is not a pack `tinylab cache pack` wrote")
    entries = [_check_entry(e, file) for e in entries]
    if len(set(entries)) != len(entries):
        raise PackError(f"{file}: refused the whole pack: an entry is listed twice")
    top = set(entries)
    for name, meta in files.items():
        parts = name.split("/")
        inside = (parts[0] + "/" + parts[1]) if len(parts) >= 2 else None
        if (not all(_plain_part(p) for p in parts) or inside not in top
                or not isinstance(meta, dict) or not isinstance(meta.get("sha256"), str)
                or not isinstance(meta.get("size"), int)):
            raise PackError(f"{file}: refused the whole pack: file {name!r} does not lie inside "
                            f"one of its entries (or has no sha256 and size); nothing was "
                            f"written. Only unpack packs made by `tinylab cache pack` from "
                            f"someone you trust")
    return entries, files


def _check_members(tar: tarfile.TarFile, files: dict[str, dict], file: Path) -> None:
    """Every member after the manifest: a regular file that the manifest lists, once."""
    seen: set[str] = set()
    for member in tar:
        if member.name == PACK_MANIFEST and not seen and member.offset == 0:
            continue                                   # the manifest itself, read already
        if not member.isreg() or member.name not in files or member.name in seen:
            what = ("a link" if member.issym() or member.islnk() else
                    "not a regular file" if not member.isreg() else
                    "listed twice" if member.name in seen else "not in its manifest")
            raise PackError(f"{file}: refused the whole pack: member {member.name!r} is {what}; "
                            f"nothing was written. Only unpack packs made by `tinylab cache "
                            f"pack` from someone you trust")
        seen.add(member.name)


def _check_targets(root: Path, entries: list[str], files: dict[str, dict], file: Path
                   ) -> None:
    """A second, independent check: every entry and file target, written out in full (``..``
    collapsed), lies inside its kind folder, and that folder, links resolved, inside the
    cache. A kind folder the user linked elsewhere on purpose (``teachers/`` on another disk)
    is accepted as theirs."""
    base = Path(os.path.abspath(root))
    inside_root = base.resolve()
    for name in [*entries, *files]:
        kind = name.split("/")[0]
        target = Path(os.path.abspath(base / name))
        kind_folder = base / kind
        resolved = kind_folder.resolve()
        if kind_folder not in target.parents or not (
                kind_folder.is_symlink() or resolved.parent == inside_root):
            raise PackError(f"{file}: refused the whole pack: {name!r} would be written to "
                            f"{target}, outside the cache {root}; nothing was written")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


def remove_stale_staging(root: str | Path) -> list[Path]:
    """Remove the staging folders of unpacks that were killed half-way; returns them.

    Only folders that are tinylab's own go: named ``.unpack-*`` *and* holding
    :data:`STAGING_MARKER`, written there before anything else, whose process (same machine)
    no longer runs. A folder of an unpack still running, or of another machine sharing the
    cache, or anything without the marker, is left alone.
    """
    root, removed = Path(root), []
    if not root.is_dir():
        return removed
    for folder in root.iterdir():
        if not folder.name.startswith(STAGING_PREFIX) or folder.is_symlink() \
                or not folder.is_dir():
            continue
        try:
            marker = json.loads((folder / STAGING_MARKER).read_text())
            pid, host = int(marker["pid"]), str(marker["host"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if host == socket.gethostname() and not _pid_alive(pid):
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed


def unpack_cache(file: str | Path, *, cache: str | Path | None = None) -> dict[str, list[str]]:
    """Verify and add the entries of pack ``file`` to the cache; see the module docstring.

    Returns ``{"added": [...], "kept": [...]}`` (entries added, entries already present).
    Raises :class:`PackError` for a bad pack (damaged, from another version, or naming a place
    outside the cache) and ``PermissionError`` for a cache that cannot be written, each in one
    line; the cache is unchanged in both cases. Every name in the pack is checked before the
    first byte is written.
    """
    root = Path(cache) if cache is not None else cache_dir()
    file = Path(file)
    if not file.is_file():
        raise FileNotFoundError(f"pack {file} does not exist")
    if root.exists() and not root.is_dir():
        raise ValueError(f"the tinylab cache {root} is a file, not a folder; point "
                         f"$TINYLAB_CACHE at a folder")
    try:
        with tarfile.open(file, "r:") as tar:
            manifest = _read_manifest(tar, file)
            entries, files = _check_names(manifest, file)
            _check_members(tar, files, file)
    except (tarfile.TarError, EOFError, json.JSONDecodeError, UnicodeDecodeError) as err:
        raise PackError(f"{file} is truncated or damaged ({type(err).__name__}: "
                        f"{str(err)[:80]}); copy it again") from None
    except OSError as err:
        if isinstance(err, PermissionError):
            raise
        raise PackError(f"{file} is truncated or damaged ({type(err).__name__}: "
                        f"{str(err)[:80]}); copy it again") from None
    _check_targets(root, entries, files, file)
    try:
        root.mkdir(parents=True, exist_ok=True)
        remove_stale_staging(root)
        staging = Path(tempfile.mkdtemp(dir=root, prefix=STAGING_PREFIX))
    except OSError as err:
        raise PermissionError(f"cannot write to the tinylab cache {root} ({err.strerror}); "
                              f"point $TINYLAB_CACHE at a writable folder") from None
    try:
        (staging / STAGING_MARKER).write_text(json.dumps(
            {"pid": os.getpid(), "host": socket.gethostname(), "pack": str(file)}))
        try:
            with tarfile.open(file, "r:") as tar:
                _read_manifest(tar, file)
                tar.extractall(staging, members=[m for m in tar if m.name in files],
                               filter="data")
        except (tarfile.TarError, EOFError, json.JSONDecodeError, OSError) as err:
            if isinstance(err, PermissionError):
                raise
            raise PackError(f"{file} is truncated or damaged ({type(err).__name__}: "
                            f"{str(err)[:80]}); copy it again") from None
        missing = [name for name in files if not (staging / name).is_file()]
        if missing:
            raise PackError(f"{file} is truncated: {len(missing)} file(s) of its manifest are "
                            f"missing ({', '.join(missing[:3])}); nothing was added. Copy it "
                            f"again")
        bad = [name for name, meta in files.items()
               if (staging / name).stat().st_size != meta["size"]
               or sha256_file(staging / name) != meta["sha256"]]
        if bad:
            raise PackError(f"{file}: {len(bad)} file(s) differ from the pack's manifest "
                            f"({', '.join(bad[:3])}); nothing was added. Copy the pack again")

        added, kept = [], []
        for entry in entries:
            target = root / entry
            if target.exists() or target.is_symlink():
                kept.append(entry)
                continue
            if not (staging / entry).exists():   # an entry without files (an empty folder)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            apply_umask(staging / entry, tree=True)
            os.replace(staging / entry, target)
            added.append(entry)
        return {"added": added, "kept": kept}
    finally:
        shutil.rmtree(staging, ignore_errors=True)
