"""Never lose a user's file, refuse bad input before any work, cache keys that cover what matters.

Each case here was found by trying tinylab as a new (or adversarial) user would: it either
gives one clear line before any work, or a correct result, and nothing of the user's is gone.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from tinylab import cli
from tinylab.distill.options import RunOptions

QUIET = RunOptions(progress=False)
from tinylab.config import Config, _all_keys, get_config
from tinylab.distill.checkpoint import clear_checkpoints, remove_checkpoint_tree
from tinylab.distill.stages import general_cache_key, teacher_cache_key, teacher_cache_setting
from tinylab.run_folder import MARKER, claim_output_dir, config_differences


def _no_data_loading(monkeypatch):
    from tinylab import pipeline

    def refuse(*args, **kwargs):
        raise AssertionError("data was loaded before the input was checked")

    monkeypatch.setattr(pipeline, "load_task", refuse)  # where tinylab distill loads it


def _one_line_exit_2(capsys, argv) -> str:
    code = cli.main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1, err
    return err


# --------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------

def _fake_checkpoint(folder: Path, step: int) -> Path:
    ckpt = folder / f"step-{step:07d}"
    ckpt.mkdir(parents=True)
    (ckpt / "state.json").write_text("{}")
    (folder / "latest").write_text(ckpt.name)
    return ckpt


def test_clear_checkpoints_deletes_only_tinylabs_own(tmp_path):
    folder = tmp_path / "ckpt"
    _fake_checkpoint(folder, 200)
    (folder / ".step-0000400.tmp-123").mkdir()          # an interrupted write
    (folder / "notes.txt").write_text("mine")
    (folder / "step-0000999").mkdir()                   # looks like ours, holds no state.json
    (folder / "step-0000999" / "data.csv").write_text("mine too")
    gone = {p.name for p in clear_checkpoints(folder)}
    assert gone == {"latest", "step-0000200", ".step-0000400.tmp-123"}
    assert (folder / "notes.txt").read_text() == "mine"
    assert (folder / "step-0000999" / "data.csv").exists()


def test_remove_checkpoint_tree_keeps_user_files_and_drops_empty_folders(tmp_path):
    root = tmp_path / "checkpoints"
    _fake_checkpoint(root / "teacher", 10)
    _fake_checkpoint(root / "task" / "intermediate", 20)
    (root / "task" / "readme.md").write_text("mine")
    remove_checkpoint_tree(root)
    assert not (root / "teacher").exists() and not (root / "task" / "intermediate").exists()
    assert (root / "task" / "readme.md").read_text() == "mine"


def test_train_stage_fresh_run_keeps_user_files_in_checkpoint_dir(tmp_path, tiny_bert_dir):
    from datasets import Dataset
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from tinylab.config import StageConfig
    from tinylab.data import tokenize
    from tinylab.distill.loop import model_inputs, train_stage

    folder = tmp_path / "my_folder"
    folder.mkdir()
    (folder / "thesis.tex").write_text("years of work")
    old = _fake_checkpoint(folder, 5)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_bert_dir)
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert_dir)
    train = tokenize(Dataset.from_dict({"text": ["a good film", "bad"] * 4}), tokenizer, 16)

    def loss_fn(modules, batch):
        return {"total": modules["student"](**model_inputs(batch)).logits.pow(2).mean()}

    train_stage("s", modules={"student": model}, loss_fn=loss_fn,
                train=train.select_columns(["input_ids", "attention_mask"]), tokenizer=tokenizer,
                stage=StageConfig(batch_size=4, max_steps=1), seed=0,
                run=RunOptions(checkpoint_dir=folder, progress=False,
                               accelerator=__import__("tinylab").distill.make_accelerator("cpu")))
    assert (folder / "thesis.tex").read_text() == "years of work"
    assert not old.exists()                              # tinylab's stale checkpoint is gone
    assert (folder / "latest").read_text() == "step-0000001"  # and the new one is there


def test_distill_refuses_a_folder_with_user_files_before_any_work(tmp_path, capsys, monkeypatch):
    _no_data_loading(monkeypatch)
    out = tmp_path / "results"
    out.mkdir()
    (out / "report.json").write_text('{"mine": true}')
    (out / "student").mkdir()
    (out / "student" / "weights.bin").write_bytes(b"\x00" * 8)
    err = _one_line_exit_2(capsys, ["distill", "--profile", "ci", "--output", str(out)])
    assert "--overwrite" in err and str(out) in err
    assert json.loads((out / "report.json").read_text()) == {"mine": True}
    assert (out / "student" / "weights.bin").exists() and not (out / MARKER).exists()


def test_claim_output_dir(tmp_path):
    cfg = get_config("ci")
    fresh = claim_output_dir(tmp_path / "new", cfg)
    assert (fresh / MARKER).exists()
    assert claim_output_dir(fresh, cfg) == fresh                      # a run folder: reused
    user = tmp_path / "user"
    user.mkdir()
    (user / "a.txt").write_text("x")
    with pytest.raises(ValueError, match="did not write"):
        claim_output_dir(user, cfg)
    claim_output_dir(user, cfg, overwrite=True)                         # the user said so
    assert (user / "a.txt").read_text() == "x"
    file = tmp_path / "file"
    file.write_text("x")
    with pytest.raises(FileExistsError):
        claim_output_dir(file, cfg)


def test_resume_with_changed_settings_is_refused_naming_the_keys(tmp_path):
    cfg = get_config("ci")
    out = claim_output_dir(tmp_path / "run", cfg)
    changed = cfg.replace("task_intermediate.learning_rate=0.001", "loss.hidden_weight=2")
    with pytest.raises(ValueError) as err:
        claim_output_dir(out, changed, resume=True)
    message = str(err.value)
    assert "task_intermediate.learning_rate: 0.0005 -> 0.001" in message
    assert "loss.hidden_weight: 1.0 -> 2.0" in message and "\n" not in message
    claim_output_dir(out, cfg.replace("device=cpu"), resume=True)       # device may change
    claim_output_dir(out, changed)                                      # a new run may change


def test_config_differences_lists_nested_keys():
    a = get_config("ci").to_dict()
    b = get_config("ci", ["augment.k=3"]).to_dict()
    assert config_differences(a, b) == ["augment.k: 8 -> 3"]


# --------------------------------------------------------------------------------------------
# Bad input, refused before any work
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("override, key", [
    ("task_intermediate.learning_rate=-1e-4", "task_intermediate.learning_rate"),
    ("teacher.batch_size=0", "teacher.batch_size"),
    ("loss.temperature=0", "loss.temperature"),
    ("augment.p_t=1.5", "augment.p_t"),
    ("general.warmup_ratio=2", "general.warmup_ratio"),
    ("task_prediction.schedule=cosine", "task_prediction.schedule"),
    ("loss.layer_mapping=middle", "loss.layer_mapping"),
    ("student.hidden_size=100", "student.hidden_size"),
    ("data.max_length=1", "data.max_length"),
    ("kd.alpha=1.2", "kd.alpha"),
    ("kd.temperature=0", "kd.temperature"),
])
def test_bad_values_name_the_key_before_any_work(override, key, capsys, monkeypatch, tmp_path):
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        get_config("ci", [override])
    _no_data_loading(monkeypatch)
    err = _one_line_exit_2(capsys, ["distill", "--profile", "ci", "--output",
                                    str(tmp_path / "o"), "--set", override])
    assert key in err


@pytest.mark.parametrize("override, words", [
    ("student.num_layers=5", "student.num_layers=5"),
    ("student.num_heads=6", "student.num_heads=6"),
])
def test_student_shape_is_checked_against_the_teacher_config_first(override, words, capsys,
                                                                   monkeypatch, tmp_path):
    _no_data_loading(monkeypatch)
    err = _one_line_exit_2(capsys, ["distill", "--profile", "ci", "--output",
                                    str(tmp_path / "o"), "--set", override])
    assert words in err and "does not fit the teacher" in err
    assert not (tmp_path / "o").exists()


def _task_file(tmp_path, name: str, content: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(content)
    return path


@pytest.mark.parametrize("name, content, words", [
    ("one_class.csv", b"text,label\n" + b"".join(b"review %d,pos\n" % i for i in range(40)),
     "at least 2 classes"),
    ("empty.csv", b"", "is empty"),
    ("latin1.csv", "text,label\ncaf\u00e9 cr\u00e8me,pos\nbad,neg\n".encode("latin-1"),
     "not UTF-8"),
])
def test_task_file_errors_name_the_file(tmp_path, name, content, words):
    from tinylab.config import DataConfig
    from tinylab.data import load_task

    path = _task_file(tmp_path, name, content)
    with pytest.raises(ValueError) as err:
        load_task(DataConfig(task=str(path)))
    assert str(path) in str(err.value) and words in str(err.value)


def test_unexpected_errors_are_one_line_and_debug_shows_them(capsys, monkeypatch):
    from tinylab import assets

    def broken(*args, **kwargs):
        raise KeyError("surprise")

    monkeypatch.setattr(assets, "list_assets", broken)
    assert cli.main(["assets", "list"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--debug" in err and "KeyError" in err
    with pytest.raises(KeyError):
        cli.main(["--debug", "assets", "list"])


def test_kd_baseline_checks_the_label_order(tiny_teacher_dir):
    from datasets import ClassLabel, Dataset, Features, Value

    from tinylab.distill import train_baseline
    from tinylab.models import build_student, load_teacher

    cfg = get_config("ci", {"teacher.model": str(tiny_teacher_dir), "student.num_layers": 2,
                            "student.hidden_size": 32, "student.num_heads": 4,
                            "student.intermediate_size": 64, "device": "cpu"})
    teacher, tokenizer = load_teacher(tiny_teacher_dir, id2label=["negative", "positive"])
    student = build_student(teacher, cfg.student, id2label=["positive", "negative"])
    features = Features({"text": Value("string"), "label": ClassLabel(names=["a", "b"])})
    data = {"train": Dataset.from_dict({"text": ["good", "bad"] * 8, "label": [0, 1] * 8},
                                       features=features)}
    with pytest.raises(ValueError, match="label order"):
        train_baseline(cfg, teacher, student, data, "kd", tokenizer=tokenizer, run=QUIET)


# --------------------------------------------------------------------------------------------
# Cache keys cover every setting that changes the cached result
# --------------------------------------------------------------------------------------------

TEACHER_DEPENDS = {"teacher.model", "teacher.epochs", "teacher.learning_rate",
                   "teacher.batch_size", "teacher.warmup_ratio", "teacher.weight_decay",
                   "teacher.max_steps", "teacher.eval_every", "teacher.patience",
                   "data.task", "data.text_column", "data.label_column", "data.text_pair_column",
                   "data.max_length", "data.train_size", "data.validation_size",
                   "data.test_size", "data.split_seed", "seed", "group_by_length", "precision"}
GENERAL_DEPENDS = ({"teacher.model", "teacher.general_model", "data.general_corpus",
                    "data.general_size", "data.general_max_length", "data.split_seed",
                    "data.general_exclude",
                    "data.text_column", "seed", "group_by_length", "precision",
                    "cache_teacher_outputs"}
                   | {f"student.{f.name}" for f in dataclasses.fields(get_config("ci").student)}
                   | {f"general.{f.name}" for f in dataclasses.fields(get_config("ci").general)}
                   | {f"loss.{k}" for k in ("layer_mapping", "embedding_weight",
                                            "attention_weight", "hidden_weight",
                                            "official_attention", "shared_projection",
                                            "official_hidden")})
# Every other setting must leave both keys alone: the task stages, augmentation, the
# prediction-loss settings, and settings that do not change what is computed - the profile's
# name, the device (CPU and GPU give the same model up to rounding) and the evaluation batch
# size.
CHOICES = {"device": "cpu", "precision": "bf16", "loss.layer_mapping": "top",
           "student.init": "pca", "general.schedule": "linear"}


def _other_value(key: str, value):
    if key in CHOICES:
        return CHOICES[key] if value != CHOICES[key] else "auto"
    if isinstance(value, bool):
        return not value
    if value is None:
        return "other" if key.endswith(("model", "corpus")) else 7
    if isinstance(value, int):
        return value * 2 if key == "student.hidden_size" else value + 1 if key != \
            "student.num_heads" else value
    if isinstance(value, float):
        return value / 2
    return f"{value}-other"


@pytest.mark.parametrize("key", [k for k in _all_keys(get_config("ci")) if k != "profile"])
def test_cache_keys_change_exactly_with_the_settings_that_matter(key):
    cfg = get_config("ci")
    value = cfg
    for part in key.split("."):
        value = getattr(value, part)
    other = _other_value(key, value)
    if other == value:
        pytest.skip(f"{key}: no other valid value to try in isolation")
    from tinylab.config import apply_overrides

    changed = apply_overrides(cfg, {key: other})
    teacher_changed = teacher_cache_key(changed) != teacher_cache_key(cfg)
    general_changed = general_cache_key(changed) != general_cache_key(cfg)
    assert teacher_changed == (key in TEACHER_DEPENDS), f"teacher key and {key}={other!r}"
    assert general_changed == (key in GENERAL_DEPENDS), f"general key and {key}={other!r}"


def test_official_switches_never_use_the_padding_dropping_cache():
    assert teacher_cache_setting(get_config("ci"))["enabled"]
    for switch in ("loss.official_hidden=true", "loss.official_attention=true"):
        setting = teacher_cache_setting(get_config("ci", [switch]))
        assert setting["enabled"] is False and "padded" in setting["why_disabled"]


# --------------------------------------------------------------------------------------------
# Assets
# --------------------------------------------------------------------------------------------

@pytest.fixture()
def linked_cache(tmp_path, monkeypatch):
    """A cache whose assets are links to the real ones, except rotten-tomatoes: a copy."""
    import shutil

    from tinylab import assets

    real = assets.cache_dir() / "assets"
    root = tmp_path / "cache" / "assets"
    root.mkdir(parents=True)
    for name in assets.ASSETS:
        if name == "rotten-tomatoes":
            shutil.copytree(real / name, root / name)
        else:
            (root / name).symlink_to(real / name)
    monkeypatch.setenv("TINYLAB_CACHE", str(tmp_path / "cache"))
    return root


def test_verify_finds_a_flipped_byte_that_the_size_check_misses(linked_cache, capsys):
    data = next((linked_cache / "rotten-tomatoes").glob("*.bz2"))
    raw = bytearray(data.read_bytes())
    raw[len(raw) // 2] ^= 0xFF                      # same size, one byte different
    data.write_bytes(bytes(raw))
    assert cli.main(["assets", "list"]) == 0
    out = capsys.readouterr().out
    assert "rotten-tomatoes" in out and "checked: file sizes" in out
    assert cli.main(["assets", "verify", "rotten-tomatoes"]) == 1
    captured = capsys.readouterr()
    assert "FAILED" in captured.out and data.name in captured.out
    assert "tinylab assets fetch" in captured.err


def test_fetch_removes_what_a_killed_fetch_left_behind(linked_cache):
    from tinylab import assets

    stale = linked_cache / ".tmp-all-MiniLM-L6-v2-abc123"
    stale.mkdir()
    (stale / "model.safetensors").write_bytes(b"\x00" * 1024)
    assets.fetch(progress=False)
    assert not stale.exists()


def test_a_complete_cache_works_without_writing(linked_cache, monkeypatch):
    import filelock

    from tinylab import assets

    def no_lock(*args, **kwargs):
        raise AssertionError("a complete cache must not be locked or written")

    monkeypatch.setattr(filelock, "FileLock", no_lock)
    assert set(assets.fetch(progress=False)) == set(assets.ASSETS)


def test_read_only_or_full_cache_is_one_line_naming_the_variable(linked_cache, monkeypatch,
                                                                capsys):
    import errno
    import shutil

    from tinylab import assets

    shutil.rmtree(linked_cache / "rotten-tomatoes")        # something must be fetched

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system", str(linked_cache))

    monkeypatch.setattr(assets, "_fetch_locked", read_only)
    err = _one_line_exit_2(capsys, ["assets", "fetch", "--quiet"])
    assert "$TINYLAB_CACHE" in err and "not writable" in err


def test_model_card_usage_survives_a_very_long_text(tiny_bert_dir, tmp_path):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, pipeline

    from tinylab.export import export_student

    model = AutoModelForSequenceClassification.from_pretrained(tiny_bert_dir)
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert_dir)
    folder = export_student(model, tokenizer, tmp_path / "student",
                            label_names=["negative", "positive"])
    card = (folder / "README.md").read_text()
    call = next(line for line in card.splitlines() if line.startswith("classifier("))
    assert "truncation=True" in call
    classifier = pipeline("text-classification", model=str(folder))
    answer = classifier("good " * 5000, truncation=True)   # the card's call, on 5,000 words
    assert answer[0]["label"] in {"negative", "positive"}


def test_a_pretrained_student_with_missing_backbone_weights_is_refused(tiny_bert_dir,
                                                                        tiny_teacher_dir,
                                                                        tmp_path):
    import shutil

    from safetensors.torch import load_file, save_file

    from tinylab.config import StudentConfig
    from tinylab.models import build_student, load_teacher

    broken = tmp_path / "broken_student"
    shutil.copytree(tiny_bert_dir, broken)
    weights = load_file(str(broken / "model.safetensors"))
    dropped = next(k for k in weights if "encoder.layer.1.attention.self.query" in k)
    del weights[dropped]
    save_file(weights, str(broken / "model.safetensors"), metadata={"format": "pt"})
    teacher, _ = load_teacher(tiny_teacher_dir)
    spec = StudentConfig(num_layers=4, hidden_size=32, num_heads=4, intermediate_size=64,
                         init=str(broken))
    with pytest.raises(ValueError, match="would start random"):
        build_student(teacher, spec)
    spec_ok = dataclasses.replace(spec, init=str(tiny_bert_dir))
    assert build_student(teacher, spec_ok).config.num_hidden_layers == 4   # intact: loads


# --------------------------------------------------------------------------------------------
# A malformed task file: `tinylab distill` exits 2 in one line before any model loads
# --------------------------------------------------------------------------------------------

MALFORMED = {
    "missing_column.csv": ("review,label\n" + "a fine film,pos\nan awful film,neg\n" * 10,
                           "has no text column 'text'"),
    "one_class.csv": ("text,label\n" + "".join(f"film number {i},pos\n" for i in range(30)),
                      "every example has the label 'pos'"),
    "float_labels.csv": ("text,label\n" + "".join(f"film number {i},{i / 7:.3f}\n"
                                                   for i in range(30)),
                         "labels must be class ids (0..K-1) or class names"),
    "empty_text.csv": ("text,label\n" + " ,pos\n \t,neg\n" * 10, "every text in column 'text' is empty"),
    "unparseable.jsonl": ('{"text": "a fine film", "label": "pos"}\n{"text": "no end\n',
                          "is not valid JSON"),
}


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_distill_refuses_a_malformed_task_file_before_any_model_loads(name, tmp_path, capsys,
                                                                     monkeypatch):
    from tinylab import models

    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded before the task data was checked")

    monkeypatch.setattr(models, "load_pretrained", refuse)
    content, message = MALFORMED[name]
    (tmp_path / name).write_text(content)
    out = tmp_path / "run"
    err = _one_line_exit_2(capsys, ["distill", "--profile", "ci", "--set",
                                    f"data.task={tmp_path / name}", "--output", str(out)])
    assert str(tmp_path / name) in err and message in err, err
    assert not out.exists()                       # nothing written for a run that never started
