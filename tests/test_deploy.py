"""tinylab.deploy: the student as an ONNX file - same logits as PyTorch on padded batches of any
shape, int8 quantization that keeps the predictions, latency tables, clear errors, and the
``model.onnx`` that ``export_student`` ships next to the safetensors."""
from __future__ import annotations

import builtins
import json

import numpy as np
import pytest
import torch
from transformers import AutoTokenizer, BertForSequenceClassification

from conftest import toy_texts
from tinylab import deploy
from tinylab.attention import SCORES_ATTN, use_attention_scores
from tinylab.models import load_pretrained

pytest.importorskip("onnxruntime")

# Rows of very different lengths, so the batch is padded and the mask matters.
MIXED = ["good", "the film was a great and moving story , with a fine cast and a smart script",
         "bad plot", "i love it", "a dull , slow and boring movie that never ends"]
# About half of toy_texts' sentences hold one of these words.
POSITIVE = {"good", "great", "fine", "love", "best", "funny", "smart", "beautiful", "moving",
            "enjoy"}


def _label(text: str) -> int:
    return int(bool(POSITIVE & set(text.split())))


@pytest.fixture(scope="module")
def trained(tiny_bert_dir):
    """The tiny BERT trained for 60 steps on a toy task (a word of POSITIVE or not; ~98 %
    test accuracy).

    A random BERT gives nearly the same logits for every input, so "int8 agrees with fp32"
    would hold trivially; after training the margins depend on the input.
    """
    torch.manual_seed(0)
    model = load_pretrained(BertForSequenceClassification, tiny_bert_dir)
    tok = AutoTokenizer.from_pretrained(tiny_bert_dir)
    texts = toy_texts(512, seed=5)
    labels = torch.tensor([_label(t) for t in texts])
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(60):
        idx = torch.randint(0, len(texts), (32,))
        enc = tok([texts[i] for i in idx], padding=True, return_tensors="pt")
        loss = model(**enc, labels=labels[idx]).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    use_attention_scores(model)  # as during distillation: the export must undo this
    return model, tok


@pytest.fixture(scope="module")
def untrained(tiny_bert_dir):
    """The random tiny BERT, for tests that never get as far as exporting."""
    return (load_pretrained(BertForSequenceClassification, tiny_bert_dir).eval(),
            AutoTokenizer.from_pretrained(tiny_bert_dir))


@pytest.fixture(scope="module")
def exported(trained, tmp_path_factory):
    model, tok = trained
    folder = tmp_path_factory.mktemp("onnx")
    fp32 = deploy.export_onnx(model, tok, folder / "student.onnx")
    int8 = deploy.quantize_onnx(fp32, folder / "student-int8.onnx")
    return fp32, int8


def torch_logits(model, enc):
    with torch.inference_mode():
        return model(**enc).logits.numpy()


@pytest.mark.slow
def test_fp32_logits_match_pytorch_on_a_padded_batch(trained, exported):
    model, tok = trained
    fp32, _ = exported
    enc = tok(MIXED, padding=True, return_tensors="pt")
    assert enc["attention_mask"].sum(1).min() < enc["attention_mask"].shape[1]  # really padded
    got = deploy.predict_onnx(deploy.onnx_session(fp32, threads=1), enc)
    assert got.shape == (len(MIXED), 2) and got.dtype == np.float32
    np.testing.assert_allclose(got, torch_logits(model, enc), atol=1e-4, rtol=0)
    # the caller's model keeps tinylab's attention; the graph has only standard operators
    assert model.config._attn_implementation == SCORES_ATTN
    import onnx

    graph = onnx.load(str(fp32))
    assert [i.name for i in graph.graph.input] == ["input_ids", "attention_mask", "token_type_ids"]
    assert [o.name for o in graph.graph.output] == ["logits"]
    assert {n.domain for n in graph.graph.node} <= {"", "ai.onnx"}
    assert not list(fp32.parent.glob("*.data"))  # weights inside the one file


@pytest.mark.slow
def test_dynamic_axes_other_batch_sizes_and_lengths(trained, exported):
    model, tok = trained
    session = deploy.onnx_session(exported[0], threads=1)
    for texts, length in ((MIXED[:1], None), (MIXED * 5, None), (MIXED[:3], 100)):
        enc = tok(texts, return_tensors="pt", truncation=True,
                  **({"padding": True} if length is None else
                     {"padding": "max_length", "max_length": length}))
        np.testing.assert_allclose(deploy.predict_onnx(session, enc), torch_logits(model, enc),
                                   atol=1e-4, rtol=0)
    # numpy input without token_type_ids / attention_mask: BERT's defaults are filled in
    enc = tok(MIXED[:2], padding=True, return_tensors="np")
    full = deploy.predict_onnx(session, dict(enc))
    assert enc["attention_mask"][1].all()  # row 1 is the longest: no padding to mask
    bare = deploy.predict_onnx(session, {"input_ids": enc["input_ids"][1:2]})
    np.testing.assert_allclose(bare[0], full[1], atol=1e-5)


@pytest.mark.slow
def test_texts_keep_their_order_and_metadata(trained, exported):
    model, tok = trained
    session = deploy.onnx_session(exported[0], threads=2)
    texts = toy_texts(70, seed=9)
    logits = deploy.predict_onnx(session, texts, tok, batch_size=16)
    from tinylab.evaluate import predict_logits

    expected, _ = predict_logits(model, texts, tok, batch_size=16)
    np.testing.assert_allclose(logits, expected.numpy(), atol=1e-4, rtol=0)
    meta = session.get_modelmeta().custom_metadata_map
    assert json.loads(meta["id2label"]) == {"0": "negative", "1": "positive"}
    assert int(meta["max_length"]) == 128  # the tiny model's position table


@pytest.mark.slow
def test_int8_file_is_quantized_and_agrees_with_fp32(trained, exported):
    import onnx

    _, tok = trained
    fp32, int8 = exported
    ops = {n.op_type for n in onnx.load(str(int8)).graph.node}
    assert "MatMulInteger" in ops and "DynamicQuantizeLinear" in ops  # really quantized
    texts = toy_texts(200, seed=11)
    a = deploy.predict_onnx(deploy.onnx_session(fp32, threads=1), texts, tok)
    b = deploy.predict_onnx(deploy.onnx_session(int8, threads=1), texts, tok)
    pred = a.argmax(-1)
    assert 0.3 < pred.mean() < 0.7  # both classes predicted: agreement is not trivial
    assert (pred == np.array([_label(t) for t in texts])).mean() > 0.9  # the model learnt
    assert (pred == b.argmax(-1)).mean() >= 0.95
    margin_a, margin_b = a[:, 1] - a[:, 0], b[:, 1] - b[:, 0]
    assert np.corrcoef(margin_a, margin_b)[0, 1] > 0.98
    assert not np.array_equal(a, b)  # int8 arithmetic differs from fp32


@pytest.mark.slow
def test_latency_table_rows(trained, exported):
    model, tok = trained
    table = deploy.latency_table({"pytorch": model, "onnx": exported[0]}, tok,
                                 toy_texts(8, seed=1), seq_lens=(8, 24), threads=(1, 2),
                                 batch_size=2, warmup=0, repeats=2)
    assert len(table) == 2 * 2 * 2
    assert set(table["runtime"]) == {"pytorch", "onnxruntime"}
    assert sorted(set(table["seq_len"])) == [8, 24] and sorted(set(table["threads"])) == [1, 2]
    assert (table["median_ms"] > 0).all() and (table["repeats"] == 2).all()
    np.testing.assert_allclose(table["examples_per_s"], 2 / (table["median_ms"] / 1000))
    assert torch.get_num_threads() == 1  # conftest's setting restored
    assert not model.training


@pytest.mark.slow
def test_falls_back_to_the_torchscript_exporter(trained, tmp_path, monkeypatch, caplog):
    """When the dynamo exporter fails (older torch, unusual model code), the TorchScript
    exporter writes the file, and the same logits check guards it."""
    model, tok = trained
    real_export = torch.onnx.export

    def dynamo_fails(*args, dynamo=True, **kwargs):
        if dynamo:
            raise RuntimeError("simulated dynamo failure")
        return real_export(*args, dynamo=False, **kwargs)

    monkeypatch.setattr(torch.onnx, "export", dynamo_fails)
    with caplog.at_level("WARNING", logger="tinylab.deploy"):
        path = deploy.export_onnx(model, tok, tmp_path / "student.onnx")
    assert "simulated dynamo failure" in caplog.text and "TorchScript" in caplog.text
    session = deploy.onnx_session(path, threads=1)
    assert "torchscript" in session.get_modelmeta().custom_metadata_map["exporter"]
    enc = tok(MIXED * 3, padding=True, return_tensors="pt")
    np.testing.assert_allclose(deploy.predict_onnx(session, enc), torch_logits(model, enc),
                               atol=1e-4, rtol=0)


def test_failed_export_in_export_student_is_a_card_note(untrained, tmp_path, monkeypatch):
    from tinylab.export import export_student

    def broken(*args, **kwargs):
        raise RuntimeError("graph capture failed\nlong traceback text")

    monkeypatch.setattr(deploy, "export_onnx", broken)
    model, tok = untrained
    out = export_student(model, tok, tmp_path / "student", onnx=True)
    assert (out / "model.safetensors").exists() and not (out / "model.onnx").exists()
    card = (out / "README.md").read_text()
    assert "the ONNX export failed (RuntimeError: graph capture failed)" in card
    assert "long traceback" not in card


def test_missing_folder_is_a_clear_error(untrained, tmp_path):
    model, tok = untrained
    with pytest.raises(FileNotFoundError, match="does not exist; create it first"):
        deploy.export_onnx(model, tok, tmp_path / "missing" / "student.onnx")
    with pytest.raises(FileNotFoundError, match="write one with export_onnx"):
        deploy.onnx_session(tmp_path / "nothing.onnx")
    with pytest.raises(FileNotFoundError, match="write one with export_onnx"):
        deploy.quantize_onnx(tmp_path / "nothing.onnx", tmp_path / "out.onnx")


@pytest.mark.slow
def test_bad_arguments_are_named(exported, tmp_path):
    fp32, _ = exported
    with pytest.raises(ValueError, match="would overwrite its input"):
        deploy.quantize_onnx(fp32, fp32)
    with pytest.raises(ValueError, match="threads must be a positive int"):
        deploy.onnx_session(fp32, threads=0)
    with pytest.raises(KeyError, match="needs input_ids"):
        deploy.predict_onnx(deploy.onnx_session(fp32, threads=1), {"attention_mask": [[1]]})
    with pytest.raises(TypeError, match="list of texts and the tokenizer"):
        deploy.predict_onnx(deploy.onnx_session(fp32, threads=1), ["no tokenizer"])


@pytest.fixture()
def no_onnxruntime(monkeypatch):
    """Make ``import onnxruntime`` (and its submodules) fail, as on a machine without it."""
    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):
        if name == "onnxruntime" or name.startswith("onnxruntime."):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    for name in [m for m in __import__("sys").modules if m.split(".")[0] == "onnxruntime"]:
        monkeypatch.delitem(__import__("sys").modules, name)


def test_missing_onnxruntime_names_the_install_command(untrained, tmp_path, no_onnxruntime):
    model, tok = untrained
    assert not deploy.onnx_available()
    with pytest.raises(deploy.OnnxNotAvailableError, match=r'tinylab-course\[deploy\]'):
        deploy.export_onnx(model, tok, tmp_path / "student.onnx")
    with pytest.raises(ImportError, match="onnxruntime is not installed"):
        deploy.onnx_session(tmp_path / "student.onnx")
    assert not list(tmp_path.iterdir())  # nothing half-written


def test_export_student_without_onnxruntime_still_exports(untrained, tmp_path,
                                                          no_onnxruntime):
    from tinylab.export import export_student

    model, tok = untrained
    out = export_student(model, tok, tmp_path / "student", onnx=True)
    assert (out / "model.safetensors").exists() and not (out / "model.onnx").exists()
    card = (out / "README.md").read_text()
    assert "No `model.onnx` was written: onnxruntime is not installed" in card
    assert "tinylab-course[deploy]" in card


@pytest.mark.slow
def test_export_student_writes_a_matching_model_onnx(trained, tmp_path):
    from tinylab.export import export_student

    model, tok = trained
    out = export_student(model, tok, tmp_path / "student", label_names=["rotten", "fresh"],
                         onnx=True)
    assert (out / "model.onnx").is_file()
    assert [p.name for p in tmp_path.iterdir()] == ["student"]  # no temporary files left
    # as the model card says: plain onnxruntime + the folder's tokenizer
    import onnxruntime as ort

    folder_tok = AutoTokenizer.from_pretrained(out)
    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    enc = folder_tok(MIXED, padding=True, truncation=True, return_tensors="np")
    logits = session.run(["logits"], {i.name: enc[i.name] for i in session.get_inputs()})[0]
    np.testing.assert_allclose(logits, torch_logits(model, tok(MIXED, padding=True,
                                                                return_tensors="pt")),
                               atol=1e-4, rtol=0)
    meta = session.get_modelmeta().custom_metadata_map
    assert json.loads(meta["id2label"]) == {"0": "rotten", "1": "fresh"}
    card = (out / "README.md").read_text()
    assert "## Run it with ONNX Runtime" in card and "quantize_dynamic(" in card
