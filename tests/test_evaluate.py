"""tinylab.evaluate: metrics against plain numpy, predictions against one-at-a-time forwards,
parameter counts against manual sums, latency and the comparison table (no timing thresholds)."""
from __future__ import annotations

import datasets
import numpy as np
import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from tinylab import evaluate as ev

TEXTS = ["a good film", "bad , boring and dull", "i love it", "the worst movie ever made",
         "great actors", "so slow", "funny", "not good at all , really"]
LABELS = [1, 0, 1, 0, 1, 0, 1, 0]


@pytest.fixture(scope="module")
def models(tiny_teacher_dir, tiny_bert_dir):
    """(teacher 4x48, student 4x32, shared tokenizer), from conftest's saved tiny BERTs."""
    return (AutoModelForSequenceClassification.from_pretrained(tiny_teacher_dir).eval(),
            AutoModelForSequenceClassification.from_pretrained(tiny_bert_dir).eval(),
            AutoTokenizer.from_pretrained(tiny_teacher_dir))


def numpy_metrics(pred, gold, c):
    """Independent reference: explicit loops."""
    cm = np.zeros((c, c), dtype=int)
    for g, p in zip(gold, pred):
        cm[g, p] += 1
    f1s = []
    for k in range(c):
        tp = cm[k, k]
        fp = cm[:, k].sum() - tp
        fn = cm[k, :].sum() - tp
        f1s.append(0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn))
    return np.trace(cm) / len(gold), float(np.mean(f1s)), cm.tolist()


def test_classification_metrics_match_numpy():
    rng = np.random.default_rng(0)
    gold = rng.integers(0, 3, 200)
    pred = np.where(rng.random(200) < 0.6, gold, rng.integers(0, 2, 200))  # class 2 rarer
    acc, f1, cm = numpy_metrics(pred, gold, 4)  # class 3 never occurs: F1 0, still averaged
    got = ev.classification_metrics(pred, gold, 4)
    assert got["accuracy"] == pytest.approx(acc)
    assert got["macro_f1"] == pytest.approx(f1)
    assert got["confusion"] == cm and got["n"] == 200


def test_classification_metrics_reject_out_of_range():
    with pytest.raises(ValueError, match="num_labels"):
        ev.classification_metrics([0, 2], [0, 1], 2)


def one_by_one(model, tok, texts):
    with torch.no_grad():
        return torch.cat([model(**tok(t, return_tensors="pt")).logits for t in texts])


def test_predict_logits_keeps_order_and_matches_unpadded(models):
    teacher, _, tok = models
    logits, labels = ev.predict_logits(teacher, TEXTS, tok, batch_size=3)
    assert labels is None
    torch.testing.assert_close(logits, one_by_one(teacher, tok, TEXTS), atol=1e-5, rtol=1e-4)
    assert teacher.training is False


def test_evaluate_model_on_texts_tokenised_data_and_loader(models):
    teacher, _, tok = models
    ds = datasets.Dataset.from_dict({"text": TEXTS, "label": LABELS})
    pred = one_by_one(teacher, tok, TEXTS).argmax(-1).numpy()
    acc, f1, cm = numpy_metrics(pred, LABELS, 2)
    res = ev.evaluate_model(teacher, ds, tok, batch_size=3)
    assert res["accuracy"] == pytest.approx(acc) and res["macro_f1"] == pytest.approx(f1)
    assert res["confusion"] == cm and res["n"] == len(TEXTS)

    tokenised = ds.map(lambda b: tok(b["text"]), batched=True, remove_columns=["text"])
    assert ev.evaluate_model(teacher, tokenised, tok, batch_size=3) == res

    loader = [{**dict(tok(TEXTS[i:i + 4], padding=True, return_tensors="pt")),
               "labels": torch.tensor(LABELS[i:i + 4])} for i in range(0, len(TEXTS), 4)]
    assert ev.evaluate_model(teacher, loader) == res


def test_evaluate_model_with_an_accelerator_matches_one_by_one(models):
    """The Accelerate path (prepared loader + gather_for_metrics) on one process: same metrics
    as the independent one-text-at-a-time reference, for raw and tokenised data; the
    multi-process case is tests/test_multiprocess.py."""
    from tinylab.distill import make_accelerator

    teacher, _, tok = models
    ds = datasets.Dataset.from_dict({"text": TEXTS, "label": LABELS})
    pred = one_by_one(teacher, tok, TEXTS).argmax(-1).numpy()
    acc, f1, cm = numpy_metrics(pred, LABELS, 2)
    accelerator = make_accelerator("cpu")
    res = ev.evaluate_model(teacher, ds, tok, batch_size=3, accelerator=accelerator)
    assert res["accuracy"] == pytest.approx(acc) and res["macro_f1"] == pytest.approx(f1)
    assert res["confusion"] == cm and res["n"] == len(TEXTS)
    tokenised = ds.map(lambda b: tok(b["text"]), batched=True, remove_columns=["text"])
    assert ev.evaluate_model(teacher, tokenised, tok, batch_size=3,
                             accelerator=accelerator) == res
    with pytest.raises(ValueError, match="gold labels"):
        ev.gathered_predictions(teacher, ds.remove_columns("label"), tok, accelerator)


def test_evaluate_model_needs_labels(models):
    teacher, _, tok = models
    with pytest.raises(ValueError, match="labels"):
        ev.evaluate_model(teacher, TEXTS, tok)


def test_count_parameters_against_manual_sums(models):
    teacher, student, _ = models
    for model in (teacher, student):
        emb = model.bert.embeddings
        manual_emb = sum(m.weight.numel() for m in (emb.word_embeddings, emb.position_embeddings,
                                                     emb.token_type_embeddings))
        manual_total = sum(t.numel() for t in {id(p): p for p in model.parameters()}.values())
        got = ev.count_parameters(model)
        assert got == {"total": manual_total, "embedding": manual_emb,
                       "non_embedding": manual_total - manual_emb}
        assert got["non_embedding"] == model.num_parameters(exclude_embeddings=True)


def test_size_on_disk_is_about_four_bytes_per_parameter(models):
    _, student, _ = models
    n = ev.count_parameters(student)["total"]
    size = ev.size_on_disk(student)
    assert 4 * n <= size <= 4 * n + 64_000  # float32 + safetensors header


def test_size_on_disk_of_a_dynamically_quantized_model(models):
    """int8 Linear weights are packed (safetensors cannot hold them): size falls back to
    torch.save of the state dict, and must come out smaller than the float32 model."""
    import copy

    _, student, _ = models
    quantized = torch.ao.quantization.quantize_dynamic(copy.deepcopy(student),
                                                       {torch.nn.Linear}, dtype=torch.qint8)
    size = ev.size_on_disk(quantized)
    assert 0 < size < ev.size_on_disk(student)


class Sleepy(torch.nn.Module):
    """A model whose forward pass takes at least ``seconds``: a known latency to measure."""

    def __init__(self, model, seconds):
        super().__init__()
        self.model, self.seconds = model, seconds
        self.config = model.config

    def forward(self, **inputs):
        import time

        time.sleep(self.seconds)
        return self.model(**inputs)


def test_measure_latency_measures_a_known_delay(models):
    _, student, tok = models
    slow = Sleepy(student, 0.03)
    res = ev.measure_latency(slow, tok, TEXTS[:3], batch_sizes=(1, 4), warmup=1, repeats=3)
    assert set(res) == {1, 4}
    for bs, r in res.items():
        assert r["median_ms"] >= 30                    # the 30 ms sleep is inside the timing
        assert r["examples_per_s"] <= bs / 0.03        # so throughput cannot exceed b / 30 ms
        assert r["repeats"] == 3 and r["device"] == "cpu"
    fixed = ev.measure_latency(student, tok, TEXTS, batch_sizes=(2,), seq_len=16, warmup=0,
                               repeats=1)
    assert fixed[2]["seq_len"] == 16


class Recorder(torch.nn.Module):
    """Passes through, remembering each call's thread count and first token ids."""

    def __init__(self, model):
        super().__init__()
        self.model, self.calls = model, []

    def forward(self, **inputs):
        self.calls.append((torch.get_num_threads(), tuple(inputs["input_ids"][0].tolist())))
        return self.model(**inputs)


def test_latency_uses_several_batches_a_fixed_thread_count_and_shape(models):
    _, student, tok = models
    rec = Recorder(student)
    before = torch.get_num_threads()
    res = ev.measure_latency(rec, tok, TEXTS, batch_sizes=(1,), seq_len=24, warmup=0,
                             repeats=2, threads=1)
    count = min(8, len(TEXTS))
    assert res[1]["batches"] == count and res[1]["threads"] == 1 and res[1]["seq_len"] == 24
    # every batch in every round (Timer adds warm-up passes of its own before each one)
    assert len(rec.calls) >= 2 * count and len(rec.calls) % count == 0
    assert {threads for threads, _ in rec.calls} == {1}      # timed at the thread count asked
    assert torch.get_num_threads() == before                 # and the setting restored
    assert len({ids for _, ids in rec.calls}) == count       # different sentences, not one
    assert {len(ids) for _, ids in rec.calls} == {24}        # padded to the fixed length


def test_compare_models_table(models):
    teacher, student, tok = models
    ds = datasets.Dataset.from_dict({"text": TEXTS, "label": LABELS})
    df = ev.compare_models({"teacher": teacher, "student": student}, tok, ds, TEXTS,
                           batch_sizes=(1, 4), warmup=1, repeats=2)
    assert list(df.index) == ["teacher", "student"]
    for col in ("accuracy", "macro_f1", "params", "non_embedding_params", "size_mb",
                "latency_b1_ms", "latency_b4_ms", "speedup_b1", "speedup_b4", "size_ratio",
                "params_ratio"):
        assert col in df.columns, col
    slow = ev.compare_models({"slow": Sleepy(student, 0.03), "fast": student}, tok, ds, TEXTS,
                             batch_sizes=(1,), warmup=1, repeats=3)
    assert slow.loc["fast", "speedup_b1"] > 1.5         # against a reference 30 ms slower
    assert df.loc["student", "params_ratio"] == pytest.approx(
        ev.count_parameters(teacher)["total"] / ev.count_parameters(student)["total"])
    assert df.loc["student", "accuracy"] == ev.evaluate_model(student, ds, tok)["accuracy"]
    assert (df[["latency_b1_ms", "latency_b4_ms"]] > 0).all().all()
    with pytest.raises(ValueError, match="reference"):
        ev.compare_models({"s": student}, tok, ds, TEXTS, reference="teacher")


def test_compare_models_takes_scores_already_computed(models, monkeypatch):
    """``metrics=``: a model scored before (``tinylab distill`` needs its confusion matrix) is
    not scored again; the others still are."""
    teacher, student, tok = models
    ds = datasets.Dataset.from_dict({"text": TEXTS, "label": LABELS})
    known = ev.evaluate_model(teacher, ds, tok)
    scored = []
    real = ev.evaluate_model
    monkeypatch.setattr(ev, "evaluate_model",
                        lambda model, *a, **k: scored.append(model) or real(model, *a, **k))
    df = ev.compare_models({"teacher": teacher, "student": student}, tok, ds, TEXTS,
                           batch_sizes=(1,), warmup=1, repeats=1, metrics={"teacher": known})
    assert scored == [student]
    assert (df.loc["teacher", "accuracy"], df.loc["teacher", "macro_f1"]) == (
        known["accuracy"], known["macro_f1"])
    assert df.loc["student", "accuracy"] == real(student, ds, tok)["accuracy"]
