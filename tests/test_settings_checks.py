"""Every setting is checked before any work: one line on stderr, exit 2, naming the key."""
from __future__ import annotations

import pytest

from tinylab import cli
from tinylab.config import get_config


@pytest.fixture()
def nothing_loads(monkeypatch):
    """Loading data or any model fails the test: the checks must come first."""
    import transformers

    from tinylab import pipeline

    def refuse(*args, **kwargs):
        raise AssertionError("work started before the settings were checked")

    monkeypatch.setattr(pipeline, "load_task", refuse)  # where tinylab distill loads it
    monkeypatch.setattr(transformers.AutoConfig, "from_pretrained", refuse)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def _refused(capsys, tmp_path, *sets: str, output=None) -> str:
    argv = ["distill", "--profile", "ci", "--output", str(output or tmp_path / "o")]
    for item in sets:
        argv += ["--set", item]
    code = cli.main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    return err


@pytest.mark.parametrize("override, key", [
    ("teacher.epochs=inf", "teacher.epochs"),
    ("teacher.learning_rate=inf", "teacher.learning_rate"),
    ("loss.temperature=inf", "loss.temperature"),
    ("kd.alpha=nan", "kd.alpha"),
    ("seed=-1", "seed"),
    ("seed=4294967296", "seed"),
    ("data.split_seed=-5", "data.split_seed"),
])
def test_numbers_must_be_finite_and_seeds_in_range(override, key, capsys, tmp_path,
                                                  nothing_loads):
    err = _refused(capsys, tmp_path, override)
    assert f"{key}" in err and override.split("=")[1] in err
    assert not (tmp_path / "o").exists()


def test_a_config_built_in_python_is_checked_too():
    import dataclasses

    from tinylab.config import _check_ranges

    cfg = get_config("ci")
    bad = dataclasses.replace(cfg, loss=dataclasses.replace(cfg.loss, temperature=float("inf")))
    with pytest.raises(ValueError, match=r"loss\.temperature=inf \(must be a finite number\)"):
        _check_ranges(bad)


def test_profile_is_chosen_with_its_option_not_set(capsys, tmp_path, nothing_loads):
    err = _refused(capsys, tmp_path, "profile=full")
    assert "--profile full" in err


def test_max_length_beyond_the_teachers_positions(capsys, tmp_path, tiny_teacher_dir,
                                                  nothing_loads):
    err = _refused(capsys, tmp_path, f"teacher.model={tiny_teacher_dir}", "data.max_length=512")
    assert "data.max_length=512" in err and "128 positions" in err and "config.json" in err


@pytest.mark.parametrize("override, key", [
    ("teacher.model=bert-base-uncasedd", "teacher.model"),
    ("data.task=my_reviews", "data.task"),
    ("data.general_corpus=my_corpus", "data.general_corpus"),
    ("student.init=someone/tinybert-typo", "student.init"),
])
def test_unknown_hub_names_offline_are_refused_at_once(override, key, capsys, tmp_path,
                                                      nothing_loads, monkeypatch):
    monkeypatch.chdir(tmp_path)
    err = _refused(capsys, tmp_path, override)
    name = override.split("=")[1]
    assert f"{key}={name!r}" in err and str(tmp_path / name) in err
    assert "HF_HUB_OFFLINE" in err


def test_missing_task_file_and_unknown_asset(capsys, tmp_path, nothing_loads):
    err = _refused(capsys, tmp_path, f"data.task={tmp_path / 'reviews.csv'}",
                   "teacher.model=offline:all-MiniLM-L6")
    assert "reviews.csv" in err and "does not exist" in err
    assert "teacher.model='offline:all-MiniLM-L6'" in err


def test_cache_variable_naming_a_file(capsys, tmp_path, nothing_loads, monkeypatch):
    blocker = tmp_path / "cachefile"
    blocker.write_text("not a folder")
    monkeypatch.setenv("TINYLAB_CACHE", str(blocker))
    err = _refused(capsys, tmp_path)
    assert str(blocker) in err and "$TINYLAB_CACHE" in err
    assert blocker.read_text() == "not a folder"


def test_dangling_output_link(capsys, tmp_path, monkeypatch):
    from tinylab import pipeline

    # (the student-shape check before it reads the teacher's config.json: allowed)
    monkeypatch.setattr(pipeline, "load_task", lambda *a, **k: pytest.fail("data loaded"))
    link = tmp_path / "out"
    link.symlink_to(tmp_path / "missing")
    err = _refused(capsys, tmp_path, output=link)
    assert str(link) in err and "does not exist" in err
    assert link.is_symlink() and not (tmp_path / "missing").exists()


def test_hub_names_in_the_local_hugging_face_cache_pass_offline(tmp_path, monkeypatch):
    """Offline is not "no hub names": what the Hugging Face cache holds loads fine."""
    from huggingface_hub import constants

    from tinylab.preflight import check_sources

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    (tmp_path / "hub" / "models--bert-base-uncased").mkdir(parents=True)
    (tmp_path / "hub" / "datasets--nyu-mll--glue").mkdir(parents=True)
    check_sources(get_config("ci", {"teacher.model": "bert-base-uncased",
                                    "data.task": "glue/sst2"}))
    with pytest.raises(ValueError, match=r"data\.task='gleu/sst2'"):
        check_sources(get_config("ci", {"data.task": "gleu/sst2"}))
