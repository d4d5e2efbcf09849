"""tinylab.export: the student round-trips through a plain transformers folder, with identical
predictions, readable labels, no trace of tinylab's custom attention, and an atomic swap."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer, pipeline

from tinylab.attention import SCORES_ATTN, use_attention_scores
from tinylab.export import export_student

TEXTS = ["a good film", "bad , boring and dull", "i love it", "the worst movie ever made"]


@pytest.fixture()
def student(tiny_bert_dir):
    model = AutoModelForSequenceClassification.from_pretrained(tiny_bert_dir).eval()
    use_attention_scores(model)  # as during distillation
    return model, AutoTokenizer.from_pretrained(tiny_bert_dir)


def logits_of(model, tok):
    with torch.no_grad():
        return model(**tok(TEXTS, padding=True, return_tensors="pt")).logits


def test_round_trip_identical_predictions_and_labels(student, tmp_path):
    model, tok = student
    before = logits_of(model, tok)
    out = export_student(model, tok, tmp_path / "export" / "student",
                         label_names=["rotten", "fresh"],
                         metadata={"teacher": "tiny-teacher", "metrics": {"accuracy": 0.5}})
    assert out == tmp_path / "export" / "student"
    assert {"config.json", "model.safetensors", "README.md", "tinylab_metadata.json",
            "tokenizer_config.json"} <= {p.name for p in out.iterdir()}
    assert [p.name for p in out.parent.iterdir()] == ["student"]  # no temp folders left
    assert model.config._attn_implementation == SCORES_ATTN  # caller's model untouched

    config_text = (out / "config.json").read_text()
    assert "tinylab" not in config_text
    config = json.loads(config_text)
    assert config["id2label"] == {"0": "rotten", "1": "fresh"}
    assert config["architectures"] == ["BertForSequenceClassification"]

    loaded = AutoModelForSequenceClassification.from_pretrained(out).eval()
    assert loaded.config._attn_implementation != SCORES_ATTN
    torch.testing.assert_close(logits_of(loaded, AutoTokenizer.from_pretrained(out)), before,
                               atol=1e-5, rtol=1e-5)

    clf = pipeline("text-classification", model=str(out))
    names = ["rotten", "fresh"]
    assert [r["label"] for r in clf(TEXTS)] == [names[i] for i in before.argmax(-1).tolist()]
    card = (out / "README.md").read_text()
    assert "tiny-teacher" in card and "| accuracy | 0.5000 |" in card
    assert json.loads((out / "tinylab_metadata.json").read_text())["teacher"] == "tiny-teacher"


@pytest.mark.slow
def test_export_loads_without_tinylab(student, tmp_path):
    model, tok = student
    out = export_student(model, tok, tmp_path / "student")
    expected = [model.config.id2label[i] for i in logits_of(model, tok).argmax(-1).tolist()]
    code = (
        "import json, sys\n"
        "from transformers import pipeline\n"
        f"clf = pipeline('text-classification', model={str(out)!r})\n"
        f"labels = [r['label'] for r in clf({TEXTS!r})]\n"
        "assert not any(m.startswith('tinylab') for m in sys.modules), 'tinylab imported'\n"
        "print(json.dumps(labels))\n")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error"}
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=env, cwd=tmp_path, timeout=300)
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout.strip().splitlines()[-1]) == expected


def test_existing_export_is_replaced_only_when_complete(student, tmp_path, monkeypatch):
    model, tok = student
    target = tmp_path / "student"
    export_student(model, tok, target, label_names=["a", "b"])
    (target / "marker.txt").write_text("old export")

    def broken_save(*args, **kwargs):
        raise OSError("disk full")
    monkeypatch.setattr(tok, "save_pretrained", broken_save)
    with pytest.raises(OSError, match="disk full"):
        export_student(model, tok, target, label_names=["c", "d"])
    assert (target / "marker.txt").exists()  # the old folder survived the failed export
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []

    monkeypatch.undo()
    export_student(model, tok, target, label_names=["c", "d"])
    assert (target / "marker.txt").read_text() == "old export"  # not a file the export writes
    assert json.loads((target / "config.json").read_text())["id2label"]["1"] == "d"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_export_into_an_existing_folder_keeps_every_other_file(student, tmp_path):
    """Only the export's own file names are replaced; a symlink of such a name is replaced,
    not written through, and a folder in the way is refused before anything moves."""
    model, tok = student
    target = tmp_path / "student"
    export_student(model, tok, target, label_names=["a", "b"])
    own = sorted(p.name for p in target.iterdir())
    (target / "notes.md").write_text("my notes")
    (target / "onnx").mkdir()
    (target / "onnx" / "model.onnx").write_bytes(b"converted")
    outside = tmp_path / "elsewhere.json"
    outside.write_text("not the export's")
    (target / "tinylab_metadata.json").unlink()
    (target / "tinylab_metadata.json").symlink_to(outside)
    export_student(model, tok, target, label_names=["c", "d"])
    assert (target / "notes.md").read_text() == "my notes"
    assert (target / "onnx" / "model.onnx").read_bytes() == b"converted"
    assert outside.read_text() == "not the export's"
    assert not (target / "tinylab_metadata.json").is_symlink()
    assert sorted(p.name for p in target.iterdir()) == sorted(own + ["notes.md", "onnx"])
    (target / "README.md").unlink()
    (target / "README.md").mkdir()
    before = (target / "config.json").read_bytes()
    with pytest.raises(ValueError, match="README.md is a folder"):
        export_student(model, tok, target, label_names=["e", "f"])
    assert (target / "config.json").read_bytes() == before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_label_names_must_match_outputs(student, tmp_path):
    model, tok = student
    with pytest.raises(ValueError, match="3 names"):
        export_student(model, tok, tmp_path / "x", label_names=["a", "b", "c"])
    assert not (tmp_path / "x").exists()


def test_a_file_only_the_previous_export_wrote_goes_unless_it_was_edited(student, tmp_path):
    """An earlier export's file that this one no longer writes (e.g. ``model.onnx`` when ONNX
    export became unavailable) would sit next to newer weights: it is removed, but only when
    the export manifest lists it with the content it still has."""
    import hashlib

    from tinylab.export import EXPORT_MANIFEST

    model, tok = student
    target = export_student(model, tok, tmp_path / "student", label_names=["a", "b"])
    manifest = json.loads((target / EXPORT_MANIFEST).read_text())
    assert set(manifest["files"]) == {p.name for p in target.iterdir()} - {EXPORT_MANIFEST}
    for name, data in (("stale.onnx", b"old graph"), ("edited.onnx", b"old graph")):
        (target / name).write_bytes(data)
        manifest["files"][name] = hashlib.sha256(data).hexdigest()
    (target / "edited.onnx").write_bytes(b"the user changed it")
    (target / "mine.txt").write_text("never listed")
    (target / EXPORT_MANIFEST).write_text(json.dumps(manifest))
    export_student(model, tok, target, label_names=["a", "b"])
    assert not (target / "stale.onnx").exists()
    assert (target / "edited.onnx").read_bytes() == b"the user changed it"
    assert (target / "mine.txt").read_text() == "never listed"
