"""The out-of-domain test sets: sdist assets (tinylab.assets) and ``load_ood`` (tinylab.data).

Fake source distributions built here stand in for ``vaderSentiment==3.3.2``: a .tar.gz with a
``setup.py`` and a nested .tar.gz holding the data, like the real one. Two tests drive the real
``pip download`` against a local ``--find-links`` folder; the others replace the download with
a copy. The ``load_ood`` tests on real data need the cached ``vader-ood`` asset (``make test``
fetches every asset first; by hand: ``tinylab assets fetch vader-ood``).
"""
from __future__ import annotations

import collections
import hashlib
import html
import io
import json
import re
import shutil
import tarfile
from pathlib import Path

import pytest

from tinylab import assets, data
from tinylab.assets import Asset, AssetNotAvailableError, Source

DIST, VERSION = "fake-ood-pkg", "1.0"
TOP = "fake_ood_pkg-1.0/"
NESTED = TOP + "resources/ratings.tar.gz"
LICENSE = b"MIT License\n\nCopyright (c) a fake author\n"
DATA = {"reviews_GroundTruth.txt": b"1_1\t2.5\tgreat player.\r\n1_2\t-3.0\tit broke.\r\n",
        "tweets_GroundTruth.txt": b"1\t3.1\tLOVE it &amp; you :)\r\n2\t-2.0\tugh\r\n"}
ENTITY = re.compile(r"&(#\d+|#x[0-9a-fA-F]+|[A-Za-z]+);")


def sha(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()


def targz(members: dict[str, bytes], links: dict[str, str] | None = None) -> bytes:
    """A .tar.gz in memory: regular files ``members`` and symbolic ``links`` (name -> target)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tf:
        for name, raw in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(raw)
            tf.addfile(info, io.BytesIO(raw))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.SYMTYPE, target
            tf.addfile(info)
    return buffer.getvalue()


def make_sdist(folder: Path, nested: dict[str, bytes] = DATA, *, marker: Path | None = None,
               links: dict[str, str] | None = None, outer: dict[str, bytes] | None = None) -> Path:
    """A minimal sdist pip accepts (PKG-INFO, setup.py) with ``nested`` under ``data/`` in a
    nested .tar.gz. ``marker``: a file its setup.py writes when pip runs it."""
    setup = "from setuptools import setup\n"
    if marker is not None:
        setup += f"open({str(marker)!r}, 'w').write('setup.py ran')\n"
    setup += f"setup(name={DIST!r}, version={VERSION!r}, py_modules=[])\n"
    members = {TOP + "PKG-INFO": f"Metadata-Version: 1.0\nName: {DIST}\nVersion: {VERSION}\n"
                                 .encode(),
               TOP + "setup.py": setup.encode(), TOP + "LICENSE.txt": LICENSE,
               NESTED: targz({f"data/{k}": v for k, v in nested.items()}, links),
               **(outer or {})}
    folder.mkdir(parents=True, exist_ok=True)
    sdist = folder / f"fake_ood_pkg-{VERSION}.tar.gz"
    sdist.write_bytes(targz(members))
    return sdist


def fake_source(sdist: Path | None, **kw) -> Source:
    defaults = dict(
        wheel_sha256=sha(sdist.read_bytes()) if sdist is not None else None,
        sdist=True, archive=NESTED,
        members={"reviews.txt": "reviews_GroundTruth.txt", "tweets.txt": "tweets_GroundTruth.txt"},
        extra={"LICENSE.txt": (TOP + "LICENSE.txt", sha(LICENSE))})
    return Source(DIST, VERSION, "data/", **{**defaults, **kw})


def fake_asset(source: Source, files: dict[str, str] | None = None) -> Asset:
    files = files or {"reviews.txt": sha(DATA["reviews_GroundTruth.txt"]),
                      "tweets.txt": sha(DATA["tweets_GroundTruth.txt"])}
    return Asset("fake-ood", "a fake sdist asset", "MIT", files, (source,))


def use_registry(monkeypatch, asset: Asset) -> None:
    monkeypatch.setattr(assets, "ASSETS", {asset.name: asset})


def leftovers(cache: Path) -> list[str]:
    root = cache / "assets"
    return sorted(p.name for p in root.iterdir() if p.name != ".fetch.lock") \
        if root.exists() else []


@pytest.fixture()
def wheelhouse(tmp_path) -> Path:
    return tmp_path / "wheels"


@pytest.fixture()
def copy_download(monkeypatch, wheelhouse):
    """Replace pip with a copy of the sdist in ``wheelhouse``."""
    def download(source, dest, *, progress):
        assert source.sdist
        return Path(shutil.copy(next(wheelhouse.glob("*.tar.gz")), dest))

    monkeypatch.setattr(assets, "_pip_download", download)


# --------------------------------------------------------------------------------------------
# sdist assets
# --------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_sdist_fetch_with_real_pip_from_find_links(isolated_cache, wheelhouse, monkeypatch,
                                                   tmp_path):
    sdist = make_sdist(wheelhouse, marker=tmp_path / "setup-ran")
    use_registry(monkeypatch, fake_asset(fake_source(sdist)))
    monkeypatch.setenv("TINYLAB_FIND_LINKS", str(wheelhouse))

    folder = assets.fetch(progress=False)["fake-ood"]

    assert folder == isolated_cache / "assets" / "fake-ood"
    assert (folder / "reviews.txt").read_bytes() == DATA["reviews_GroundTruth.txt"]
    assert (folder / "tweets.txt").read_bytes() == DATA["tweets_GroundTruth.txt"]
    assert (folder / "LICENSE.txt").read_bytes() == LICENSE
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["source"] == "fake-ood-pkg==1.0"
    assert manifest["wheel"] == sdist.name and manifest["wheel_sha256"] == sha(sdist.read_bytes())
    assert set(manifest["files"]) == {"reviews.txt", "tweets.txt", "LICENSE.txt"}
    assert assets.verify("fake-ood") and assets.asset_path("fake-ood") == folder
    assert leftovers(isolated_cache) == ["fake-ood"]
    assert (tmp_path / "setup-ran").exists()  # pip did prepare the (verified) sdist


@pytest.mark.slow
def test_tampered_sdist_is_refused_before_its_code_runs(isolated_cache, wheelhouse, monkeypatch,
                                                        tmp_path):
    sdist = make_sdist(wheelhouse, marker=tmp_path / "setup-ran")
    use_registry(monkeypatch, fake_asset(fake_source(sdist, wheel_sha256="0" * 64)))
    monkeypatch.setenv("TINYLAB_FIND_LINKS", str(wheelhouse))
    with pytest.raises(AssetNotAvailableError) as err:
        assets.fetch(progress=False)
    message = str(err.value)
    assert "sha256 mismatch for the fake-ood-pkg==1.0 source archive" in message
    assert sha(sdist.read_bytes()) in message and "tinylab assets fetch" in message
    assert not (tmp_path / "setup-ran").exists()
    assert leftovers(isolated_cache) == []


def test_sdist_with_nested_archive(isolated_cache, wheelhouse, copy_download, monkeypatch):
    use_registry(monkeypatch, fake_asset(fake_source(make_sdist(wheelhouse))))
    folder = assets.fetch(progress=False)["fake-ood"]
    assert sorted(p.name for p in folder.iterdir()) == [
        "LICENSE.txt", "manifest.json", "reviews.txt", "tweets.txt"]
    assert (folder / "tweets.txt").read_bytes() == DATA["tweets_GroundTruth.txt"]


def test_tampered_member_is_refused_by_name_and_nothing_cached(isolated_cache, wheelhouse,
                                                               copy_download, monkeypatch):
    tampered = {**DATA, "tweets_GroundTruth.txt": b"1\t3.1\tsomething else\r\n"}
    sdist = make_sdist(wheelhouse, tampered)  # the archive pin matches: only the file is wrong
    use_registry(monkeypatch, fake_asset(fake_source(sdist)))
    with pytest.raises(AssetNotAvailableError) as err:
        assets.fetch(progress=False)
    message = str(err.value)
    assert "sha256 mismatch for tweets.txt of fake-ood from fake-ood-pkg==1.0" in message
    assert sha(DATA["tweets_GroundTruth.txt"]) in message and "nothing was cached" in message
    assert leftovers(isolated_cache) == []
    with pytest.raises(AssetNotAvailableError, match="not cached"):
        assets.asset_path("fake-ood")


@pytest.mark.parametrize("member", ["../../escape.txt", "/tmp/escape.txt"])
def test_member_path_escaping_the_folder_is_refused(isolated_cache, wheelhouse, copy_download,
                                                    monkeypatch, member):
    sdist = make_sdist(wheelhouse, outer={member: b"evil"})
    source = fake_source(sdist, extra={"LICENSE.txt": (member, sha(b"evil"))})
    use_registry(monkeypatch, fake_asset(source))
    with pytest.raises(AssetNotAvailableError,
                       match=rf"refusing member {re.escape(repr(member))} of fake_ood_pkg"):
        assets.fetch(progress=False)
    assert leftovers(isolated_cache) == []


def test_cache_file_name_escaping_the_folder_is_refused(isolated_cache, wheelhouse,
                                                        copy_download, monkeypatch):
    sdist = make_sdist(wheelhouse)
    source = fake_source(sdist, members={"../escape.txt": "reviews_GroundTruth.txt"})
    use_registry(monkeypatch, fake_asset(source, {"../escape.txt": sha(
        DATA["reviews_GroundTruth.txt"])}))
    with pytest.raises(AssetNotAvailableError, match=r"refusing file name .*'\.\./escape\.txt'"):
        assets.fetch(progress=False)
    assert leftovers(isolated_cache) == []
    assert not list(isolated_cache.rglob("escape.txt"))


def test_link_member_is_refused(isolated_cache, wheelhouse, copy_download, monkeypatch):
    nested = {"reviews_GroundTruth.txt": DATA["reviews_GroundTruth.txt"]}
    sdist = make_sdist(wheelhouse, nested, links={"data/tweets_GroundTruth.txt": "/etc/passwd"})
    use_registry(monkeypatch, fake_asset(fake_source(sdist)))
    with pytest.raises(AssetNotAvailableError, match="link or a folder, not a regular file"):
        assets.fetch(progress=False)
    assert leftovers(isolated_cache) == []


def test_missing_nested_archive_and_corrupt_sdist(isolated_cache, wheelhouse, copy_download,
                                                  monkeypatch):
    sdist = make_sdist(wheelhouse)
    use_registry(monkeypatch, fake_asset(fake_source(sdist, archive=TOP + "nope.tar.gz")))
    with pytest.raises(AssetNotAvailableError, match=r"has no member '.*nope\.tar\.gz'"):
        assets.fetch(progress=False)
    sdist.write_bytes(b"not a tarball")
    use_registry(monkeypatch, fake_asset(fake_source(sdist)))
    with pytest.raises(AssetNotAvailableError, match=r"is not a readable \.tar\.gz"):
        assets.fetch(progress=False)
    assert leftovers(isolated_cache) == []


def test_nested_archive_needs_an_sdist():
    with pytest.raises(ValueError, match="a nested archive needs sdist=True"):
        Source(DIST, VERSION, "data/", archive=NESTED)


def test_vader_registry_entry():
    asset = assets.ASSETS["vader-ood"]
    [source] = asset.sources
    assert source.requirement == "vaderSentiment==3.3.2" and source.sdist
    assert source.wheel_sha256 == (  # the sdist on PyPI
        "5d7c06e027fc8b99238edb0d53d970cf97066ef97654009890b83703849632f9")
    assert set(asset.files) == {"amazon_reviews.txt", "tweets.txt"}
    assert set(source.extra) == {"LICENSE.txt"} and asset.license == "MIT (vaderSentiment)"


# --------------------------------------------------------------------------------------------
# load_ood
# --------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def vader_dir() -> Path:
    try:
        return assets.asset_path("vader-ood")
    except AssetNotAvailableError as err:  # a clear failure, never a silent skip
        pytest.fail(f"real vader-ood asset missing (run `tinylab assets fetch vader-ood`): {err}")


def ratings(path: Path) -> dict[str, list[float]]:
    """Every cleaned text of a GroundTruth file -> its mean ratings (read independently)."""
    out = collections.defaultdict(list)
    for line in path.read_text(encoding="utf-8").splitlines():
        _, rating, text = line.split("\t", 2)
        out[html.unescape(html.unescape(text)).strip()].append(float(rating))
    return out


@pytest.mark.parametrize("name, file, size, positive", [
    ("amazon", "amazon_reviews.txt", 2447, 1508),  # docstring of load_ood, docs/offline-assets.md
    ("tweets", "tweets.txt", 2667, 1830),
])
def test_load_ood_real(vader_dir, name, file, size, positive):
    ds = data.load_ood(name)
    assert ds.column_names == ["text", "label"]
    assert ds.features["label"].names == ["negative", "positive"]
    texts, labels = ds["text"], ds["label"]
    assert len(ds) == size and sum(labels) == positive and 0 < positive < size
    assert len(set(texts)) == len(texts)
    assert all(t and t == t.strip() and not ENTITY.search(t) for t in texts)
    rated = ratings(vader_dir / file)
    for text, label in zip(texts, labels):
        assert all(abs(r) >= 1.0 and (r > 0) == bool(label) for r in rated[text]), text
    assert data.load_ood(name)["text"] == texts  # deterministic


def test_load_ood_real_neutral_threshold(vader_dir):
    loose = data.load_ood("tweets", neutral=0.5)
    assert len(loose) == 3432 and set(data.load_ood("tweets")["text"]) < set(loose["text"])


def test_load_ood_sample_keeps_the_class_shares_and_the_file_order(vader_dir):
    """``size`` (``data.ood_size``, 256 under ``ci``): a stratified, seeded subset in file
    order; a smaller sample lies inside a larger one."""
    full = data.load_ood("tweets")
    position = {text: i for i, text in enumerate(full["text"])}
    small, large = data.load_ood("tweets", size=256), data.load_ood("tweets", size=1000)
    assert (len(small), len(large)) == (256, 1000)
    share = sum(full["label"]) / len(full)                       # 1,830 of 2,667 positive
    assert abs(sum(small["label"]) - share * 256) <= 1
    assert [position[t] for t in small["text"]] == sorted(position[t] for t in small["text"])
    assert set(small["text"]) < set(large["text"]) < set(full["text"])
    for text, label in zip(small["text"], small["label"]):
        assert full["label"][position[text]] == label
    assert data.load_ood("tweets", size=256)["text"] == small["text"]  # deterministic
    assert data.load_ood("tweets", size=256, seed=7)["text"] != small["text"]
    assert data.load_ood("tweets", size=10_000)["text"] == full["text"]


def test_load_ood_rule_on_a_small_file(tmp_path, monkeypatch):
    lines = ["1\t2.5\tplain positive",
             "2\t0.5\tmild, dropped at 1.0",
             "3\t-1.0\tboundary negative",
             "4\t1.0\tat &amp;#38; t: twice escaped &lt;3",
             "5\t3.0\t   padded   ",
             "6\t2.0\t   ",
             "7\t1.5\tplain positive",
             "8\t2.0\trated both ways",
             "9\t-2.0\trated both ways",
             "10\t-0.99\talmost negative"]
    (tmp_path / "amazon_reviews.txt").write_bytes("\r\n".join(lines).encode())
    monkeypatch.setattr(data.ood, "asset_folder", lambda name: tmp_path)  # load_ood's folder

    ds = data.load_ood("amazon")
    assert list(zip(ds["text"], ds["label"])) == [
        ("plain positive", 1), ("boundary negative", 0), ("at & t: twice escaped <3", 1),
        ("padded", 1)]
    loose = data.load_ood("amazon", neutral=0.5)
    assert ("mild, dropped at 1.0", 1) in zip(loose["text"], loose["label"])
    assert ("almost negative", 0) in zip(loose["text"], loose["label"])
    with pytest.raises(ValueError, match=r"no text has \|mean rating\| >= 4"):
        data.load_ood("amazon", neutral=4)


def test_load_ood_bad_input(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="unknown out-of-domain set 'imdb'; valid names: "
                                         "amazon, tweets"):
        data.load_ood("imdb")
    for neutral in (0, -1, 5):
        with pytest.raises(ValueError, match=r"neutral must be in \(0, 4\]"):
            data.load_ood("amazon", neutral=neutral)
    (tmp_path / "tweets.txt").write_text("1\t2.0\tfine\nbroken line\n")
    monkeypatch.setattr(data.ood, "asset_folder", lambda name: tmp_path)  # load_ood's folder
    with pytest.raises(ValueError, match=r"tweets\.txt:2: expected id<TAB>mean rating<TAB>text"):
        data.load_ood("tweets")


def test_load_ood_without_the_asset_names_the_fix(isolated_cache, monkeypatch):
    def offline(source, dest, *, progress):
        raise AssetNotAvailableError(f"pip could not download {source.requirement}: "
                                     f"No matching distribution found")

    monkeypatch.setattr(assets, "_pip_download", offline)
    with pytest.raises(AssetNotAvailableError) as err:
        data.load_ood("tweets")
    message = str(err.value)
    assert isinstance(err.value, FileNotFoundError)
    assert "could not fetch offline asset 'vader-ood'" in message
    assert "vaderSentiment==3.3.2" in message and "tinylab assets fetch" in message
    assert leftovers(isolated_cache) == []
