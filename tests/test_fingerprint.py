"""Caches and ``--resume`` see the content of local files, not only their names."""
from __future__ import annotations

import os

import pytest

from tinylab import fingerprint
from tinylab.config import get_config
from tinylab.distill.stages import general_cache_key, teacher_cache_key
from tinylab.run_folder import claim_output_dir


def _reviews(path, flip: int | None = None):
    rows = [f"review number {i} {'good' if i % 2 else 'bad'},{'pos' if i % 2 else 'neg'}"
            for i in range(40)]
    if flip is not None:
        text, label = rows[flip].rsplit(",", 1)
        rows[flip] = f"{text},{'neg' if label == 'pos' else 'pos'}"
    path.write_text("text,label\n" + "\n".join(rows) + "\n")
    return path


def test_one_changed_label_gives_the_teacher_a_new_key(isolated_cache, tmp_path):
    task = _reviews(tmp_path / "reviews.csv")
    cfg = get_config("ci", {"data.task": str(task)})
    key = teacher_cache_key(cfg)
    general = general_cache_key(cfg)
    os.utime(task, ns=(1, 1))            # touched, same content: the same teacher
    assert teacher_cache_key(cfg) == key
    _reviews(task, flip=7)               # one label fixed: another teacher
    assert teacher_cache_key(cfg) != key
    assert general_cache_key(cfg) == general      # general distillation never reads the task
    _reviews(task)                       # back as it was: the first teacher again
    assert teacher_cache_key(cfg) == key


def test_local_teacher_folder_and_corpus_file_are_part_of_the_keys(isolated_cache, tmp_path,
                                                                 tiny_teacher_dir):
    import shutil

    teacher = shutil.copytree(tiny_teacher_dir, tmp_path / "teacher")
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("A first paragraph of general text for the student.\n")
    cfg = get_config("ci", {"teacher.model": str(teacher),
                            "data.general_corpus": str(corpus)})
    keys = teacher_cache_key(cfg), general_cache_key(cfg)
    with open(teacher / "model.safetensors", "r+b") as f:    # new weights, same size
        f.seek(-1, os.SEEK_END)
        last = f.read(1)
        f.seek(-1, os.SEEK_END)
        f.write(bytes([last[0] ^ 1]))
    new = teacher_cache_key(cfg), general_cache_key(cfg)
    assert new[0] != keys[0] and new[1] != keys[1]
    corpus.write_text("Another paragraph, with other words in it, for the student.\n")
    assert teacher_cache_key(cfg) == new[0] and general_cache_key(cfg) != new[1]


def test_offline_and_hub_names_keep_their_keys_without_hashing(isolated_cache, monkeypatch):
    def no_reading(*args, **kwargs):
        raise AssertionError("nothing to hash for offline assets and hub names")

    monkeypatch.setattr(fingerprint, "_hash", no_reading)
    cfg = get_config("ci")
    assert fingerprint.input_fingerprints(cfg) == {}
    assert fingerprint.input_fingerprints(get_config("full")) == {}
    teacher_cache_key(cfg), general_cache_key(cfg)


def test_an_unchanged_file_is_hashed_once(isolated_cache, tmp_path, monkeypatch):
    big = tmp_path / "weights.bin"
    big.write_bytes(b"w" * 100_000)
    calls = []
    real = fingerprint._hash
    monkeypatch.setattr(fingerprint, "_hash", lambda p: calls.append(p) or real(p))
    first = fingerprint.file_sha256(big)
    assert fingerprint.file_sha256(big) == first and len(calls) == 1     # from the side-car
    assert (isolated_cache / fingerprint.SIDECAR).is_file()
    big.write_bytes(b"W" + b"w" * 99_999)                                # same size, new mtime
    assert fingerprint.file_sha256(big) != first and len(calls) == 2


def test_resume_after_the_task_file_changed_is_refused(isolated_cache, tmp_path):
    task = _reviews(tmp_path / "reviews.csv")
    cfg = get_config("ci", {"data.task": str(task)})
    run = claim_output_dir(tmp_path / "run", cfg)
    claim_output_dir(run, cfg, resume=True)          # unchanged: resumes
    _reviews(task, flip=3)
    with pytest.raises(ValueError, match=r"data\.task: the content of .*reviews\.csv.* changed"):
        claim_output_dir(run, cfg, resume=True)


def test_finetune_teacher_trains_again_after_a_label_changed(isolated_cache, tmp_path,
                                                             tiny_teacher_dir):
    """What ``tinylab distill`` decides: the cached teacher of the old file is not reused."""
    from tinylab.data import load_task
    from tinylab.distill import RunOptions, finetune_teacher

    task = _reviews(tmp_path / "reviews.csv")
    cfg = get_config("ci", {"data.task": str(task), "teacher.model": str(tiny_teacher_dir),
                            "teacher.max_steps": 1, "teacher.batch_size": 8,
                            "data.max_length": 16, "device": "cpu", "precision": "fp32"})
    steps = []
    quiet = RunOptions(callbacks=[steps.append], progress=False)
    finetune_teacher(cfg, load_task(cfg.data), run=quiet)
    finetune_teacher(cfg, load_task(cfg.data), run=quiet)
    assert len(steps) == 1                                 # the second call loaded it
    _reviews(task, flip=11)
    finetune_teacher(cfg, load_task(cfg.data), run=quiet)
    assert len(steps) == 2                                 # a new file: trained again
    assert len(list((isolated_cache / "teachers").iterdir())) == 2
