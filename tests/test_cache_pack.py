"""``tinylab cache pack`` / ``unpack`` and ``tinylab course prepare``: a room's cache on a stick."""
from __future__ import annotations

import json
import tarfile
from pathlib import Path

import pytest

from tinylab import cli
from tinylab.cache_pack import PACK_MANIFEST, PackError, pack_cache, unpack_cache


def _fake_cache(root: Path) -> Path:
    (root / "teachers" / "abc123").mkdir(parents=True)
    (root / "teachers" / "abc123" / "model.safetensors").write_bytes(b"teacher weights" * 100)
    (root / "teachers" / "abc123" / "config.json").write_text('{"a": 1}')
    (root / "general" / "def456").mkdir(parents=True)
    (root / "general" / "def456" / "model.safetensors").write_bytes(b"student" * 50)
    (root / "augment").mkdir()
    (root / "augment" / "0123.parquet").write_bytes(b"PAR1 rows")
    (root / "teachers" / ".abc123.tmp-9").mkdir()      # a temporary folder: not packed
    return root


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


def test_round_trip_adds_entries_and_keeps_existing(tmp_path):
    source = _fake_cache(tmp_path / "source")
    pack = tmp_path / "room.tar"
    manifest = pack_cache(pack, cache=source, kinds=("teachers", "general", "augment"))
    assert manifest["entries"] == ["teachers/abc123", "general/def456", "augment/0123.parquet"]
    target = tmp_path / "laptop"
    (target / "general" / "def456").mkdir(parents=True)
    (target / "general" / "def456" / "model.safetensors").write_bytes(b"newer, local")
    result = unpack_cache(pack, cache=target)
    assert result == {"added": ["teachers/abc123", "augment/0123.parquet"],
                      "kept": ["general/def456"]}
    got = _tree(target)
    assert got["teachers/abc123/model.safetensors"] == b"teacher weights" * 100
    assert got["general/def456/model.safetensors"] == b"newer, local"   # never overwritten
    assert not any(name.startswith(".unpack-") for name in got)        # staging removed
    with pytest.raises(FileExistsError):
        pack_cache(pack, cache=source)                                  # never overwritten


def _rewrite(pack: Path, out: Path, change) -> Path:
    """A copy of ``pack`` with ``change(name, data) -> data`` applied to every member."""
    with tarfile.open(pack) as src, tarfile.open(out, "w") as dst:
        for member in src.getmembers():
            data = src.extractfile(member).read()
            data = change(member.name, data)
            member.size = len(data)
            import io
            dst.addfile(member, io.BytesIO(data))
    return out


def test_one_corrupted_file_is_refused_by_name_and_the_cache_is_untouched(tmp_path):
    pack = tmp_path / "room.tar"
    pack_cache(pack, cache=_fake_cache(tmp_path / "source"), kinds=("teachers", "general"))
    bad = _rewrite(pack, tmp_path / "bad.tar", lambda name, data: data.replace(
        b"teacher weights", b"teacher WEIGHTS", 1) if name.endswith(
        "abc123/model.safetensors") else data)
    target = tmp_path / "laptop"
    (target / "augment").mkdir(parents=True)
    (target / "augment" / "mine.parquet").write_bytes(b"mine")
    before = _tree(target)
    with pytest.raises(PackError, match="teachers/abc123/model.safetensors"):
        unpack_cache(bad, cache=target)
    assert _tree(target) == before and len(list(target.iterdir())) == 1


def test_truncated_pack_other_version_and_not_a_pack_fail_in_one_line(tmp_path, capsys,
                                                                        monkeypatch):
    pack = tmp_path / "room.tar"
    pack_cache(pack, cache=_fake_cache(tmp_path / "source"), kinds=("teachers",))
    cut = tmp_path / "cut.tar"
    cut.write_bytes(pack.read_bytes()[:1500])
    old = _rewrite(pack, tmp_path / "old.tar", lambda name, data: json.dumps(
        {**json.loads(data), "tinylab": "0.0.1"}).encode() if name == PACK_MANIFEST else data)
    junk = tmp_path / "junk.tar"
    junk.write_bytes(b"not a tar file at all" * 100)
    cache = tmp_path / "laptop"
    monkeypatch.setenv("TINYLAB_CACHE", str(cache))
    for file, words in ((cut, "truncated"), (old, "packed by tinylab 0.0.1"),
                        (junk, "truncated or damaged")):
        assert cli.main(["cache", "unpack", str(file)]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and words in err, err
    assert not any(p.is_file() for p in cache.rglob("*"))     # nothing half-added


def test_unpack_into_a_folder_that_cannot_be_written(tmp_path, capsys, monkeypatch):
    import tempfile

    pack = tmp_path / "room.tar"
    pack_cache(pack, cache=_fake_cache(tmp_path / "source"), kinds=("teachers",))

    def read_only(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(tempfile, "mkdtemp", read_only)   # root ignores chmod; simulate it
    monkeypatch.setenv("TINYLAB_CACHE", str(tmp_path / "ro"))
    assert cli.main(["cache", "unpack", str(pack)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "$TINYLAB_CACHE" in err


def test_prepare_uses_the_notebooks_cache_keys():
    from tinylab.config import get_config
    from tinylab.course import NOTEBOOK_OVERRIDES, notebook_config
    from tinylab.distill import general_cache_key

    quick5 = notebook_config("05", "quick")
    assert general_cache_key(quick5) == general_cache_key(
        get_config("quick").replace(*NOTEBOOK_OVERRIDES["05"]["quick"]))
    assert general_cache_key(quick5) != general_cache_key(get_config("quick"))
    assert notebook_config("05", "ci") == get_config("ci")
    nb05 = (Path(__file__).resolve().parents[1] / "notebooks" /
            "05_two_stage_distillation.ipynb").read_text()
    assert 'NOTEBOOK_OVERRIDES[\\"05\\"]' in nb05       # the notebook applies the same caps


@pytest.mark.slow
def test_prepare_pack_unpack_then_notebook_finds_everything(tmp_path, monkeypatch):
    """ci profile: prepare into a fresh cache, pack, unpack on a 'new laptop', and the cache
    keys the notebooks look up are all there."""
    from tinylab.course import fresh_cache, notebook_config, prepare
    from tinylab.distill import general_cache_key, teacher_cache_key

    monkeypatch.setenv("TINYLAB_CACHE", str(fresh_cache(tmp_path / "instructor")))
    seconds = prepare("ci", progress=False)
    assert set(seconds) == {"teacher", "general student", "augmented data"}
    pack_cache(tmp_path / "room.tar", cache=tmp_path / "instructor",
               kinds=("teachers", "general", "augment"))
    laptop = fresh_cache(tmp_path / "laptop")
    result = unpack_cache(tmp_path / "room.tar", cache=laptop)
    assert len(result["added"]) == 3 and not result["kept"]
    assert (laptop / "teachers" / teacher_cache_key(notebook_config("02", "ci")) /
            "history.json").exists()
    assert (laptop / "general" / general_cache_key(notebook_config("05", "ci")) /
            "history.json").exists()
    monkeypatch.setenv("TINYLAB_CACHE", str(laptop))
    warm = prepare("ci", progress=False)                       # everything is a cache hit
    assert sum(warm.values()) < sum(seconds.values()) / 3
