"""Teacher loading, student construction (random / teacher / pca / pre-trained) and checks."""
from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import (BertConfig, BertForSequenceClassification, BertTokenizerFast,
                          DistilBertConfig)

from tinylab.attention import SCORES_ATTN, uses_attention_scores
from tinylab.config import StudentConfig
from tinylab.losses import layer_map
from tinylab.models import build_student, check_compatible, load_teacher, pca_projection


@pytest.fixture(scope="module")
def teacher(tiny_teacher_dir):
    """4 layers, width 48, 4 heads, labels negative/positive."""
    return load_teacher(tiny_teacher_dir)


def spec(**changes) -> StudentConfig:
    base = dict(num_layers=2, hidden_size=16, num_heads=4, intermediate_size=32, init="random")
    return StudentConfig(**(base | changes))


def in_memory_teacher(vocab: int = 100, hidden: int = 48, seed: int = 0):
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=vocab, hidden_size=hidden, num_hidden_layers=4,
                        num_attention_heads=4, intermediate_size=2 * hidden,
                        max_position_embeddings=32, attn_implementation=SCORES_ATTN)
    return BertForSequenceClassification(config).eval()


# ---------------------------------------------------------------------------------------------
# load_teacher
# ---------------------------------------------------------------------------------------------

def test_load_teacher_keeps_a_fine_tuned_head(teacher, tiny_teacher_dir):
    model, tokenizer = teacher
    assert isinstance(model, BertForSequenceClassification)
    assert uses_attention_scores(model)
    assert model.config.id2label == {0: "negative", 1: "positive"}
    saved = BertForSequenceClassification.from_pretrained(tiny_teacher_dir)
    torch.testing.assert_close(model.classifier.weight, saved.classifier.weight)
    assert tokenizer("a film")["input_ids"][0] == tokenizer.cls_token_id


def test_load_teacher_new_head_from_label_names(tiny_teacher_dir):
    model, _ = load_teacher(tiny_teacher_dir, id2label=["bad", "okay", "good"])
    assert model.config.num_labels == 3
    assert model.config.label2id == {"bad": 0, "okay": 1, "good": 2}
    assert model.classifier.weight.shape == (3, 48)
    model, _ = load_teacher(tiny_teacher_dir, num_labels=5)
    assert model.classifier.weight.shape == (5, 48)


def test_load_teacher_errors(tiny_teacher_dir, tmp_path):
    with pytest.raises(ValueError, match="disagrees"):
        load_teacher(tiny_teacher_dir, num_labels=3, id2label=["a", "b"])
    DistilBertConfig().save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="'distilbert' model"):
        load_teacher(tmp_path)


def test_load_teacher_resolves_offline_names_through_assets(monkeypatch, tiny_teacher_dir):
    from tinylab import assets

    calls = []
    monkeypatch.setattr(assets, "resolve_model_path",
                        lambda name: calls.append(name) or str(tiny_teacher_dir))
    model, _ = load_teacher("offline:all-MiniLM-L6-v2")
    assert calls == ["offline:all-MiniLM-L6-v2"]
    assert model.config.hidden_size == 48


# ---------------------------------------------------------------------------------------------
# build_student
# ---------------------------------------------------------------------------------------------

def test_random_student_shape_and_shared_settings(teacher):
    model, _ = teacher
    student = build_student(model, spec())
    c, t = student.config, model.config
    assert (c.num_hidden_layers, c.hidden_size, c.num_attention_heads, c.intermediate_size) == (
        2, 16, 4, 32)
    for name in ("vocab_size", "max_position_embeddings", "type_vocab_size", "pad_token_id",
                 "hidden_act", "layer_norm_eps"):
        assert getattr(c, name) == getattr(t, name), name
    assert c.id2label == t.id2label
    assert uses_attention_scores(student) and student.training
    relabelled = build_student(model, spec(), id2label={0: "neg", 1: "neu", 2: "pos"})
    assert relabelled.config.num_labels == 3 and relabelled.classifier.out_features == 3


def test_spec_errors(teacher):
    model, _ = teacher
    with pytest.raises(ValueError, match="not divisible"):
        build_student(model, spec(hidden_size=18))
    with pytest.raises(ValueError, match="num_layers must be a positive int"):
        build_student(model, spec(num_layers=0))


def test_teacher_init_copies_uniformly_mapped_layers(teacher):
    model, _ = teacher
    student = build_student(model, spec(hidden_size=48, intermediate_size=96, init="teacher"))
    t_state, s_state = model.state_dict(), student.state_dict()
    for m, n in ((0, 1), (1, 3)):   # student layers 1, 2 <- teacher layers 2, 4 (0-based here)
        for key, value in student.bert.encoder.layer[m].state_dict().items():
            torch.testing.assert_close(value, model.bert.encoder.layer[n].state_dict()[key])
    for key in s_state:
        if key.startswith(("bert.embeddings.", "bert.pooler.")):
            torch.testing.assert_close(s_state[key], t_state[key])
    with pytest.raises(ValueError, match="widths must match.*hidden_size: student 16 vs teacher "
                                         "48"):
        build_student(model, spec(init="teacher"))
    with pytest.raises(ValueError, match="multiple"):
        build_student(model, spec(num_layers=3, hidden_size=48, intermediate_size=96,
                                  init="teacher"))


def test_pca_projection_matches_numpy_reference():
    table = torch.randn(200, 12, generator=torch.Generator().manual_seed(0)) @ torch.diag(
        torch.linspace(3, 0.1, 12))
    projection, mean, explained = pca_projection(table, 4)
    x = table.double().numpy()
    centred = x - x.mean(0)
    eigenvalues, eigenvectors = np.linalg.eigh(np.cov(centred, rowvar=False))
    top = eigenvectors[:, ::-1][:, :4]
    assert explained == pytest.approx(eigenvalues[::-1][:4].sum() / eigenvalues.sum(), rel=1e-6)
    ours = projection.double().numpy()
    signs = np.sign((ours * top).sum(0))
    np.testing.assert_allclose(ours * signs, top, atol=1e-5)
    np.testing.assert_allclose(mean.numpy(), x.mean(0), atol=1e-6)
    with pytest.raises(ValueError, match="at most"):
        pca_projection(table, 13)


def test_pca_init_projects_all_three_embedding_tables(caplog):
    model = in_memory_teacher()
    with caplog.at_level(logging.INFO, logger="tinylab.models"):
        student = build_student(model, spec(init="pca"))
    assert "PCA" in caplog.text and "variance" in caplog.text
    projection, mean, _ = pca_projection(model.bert.embeddings.word_embeddings.weight, 16)
    emb_t, emb_s = model.bert.embeddings, student.bert.embeddings
    torch.testing.assert_close(emb_s.word_embeddings.weight,
                               (emb_t.word_embeddings.weight - mean) @ projection)
    torch.testing.assert_close(emb_s.position_embeddings.weight,
                               emb_t.position_embeddings.weight @ projection)
    torch.testing.assert_close(emb_s.token_type_embeddings.weight,
                               emb_t.token_type_embeddings.weight @ projection)
    # projected rows keep the teacher's geometry as far as 16 directions allow: distances
    # between word vectors correlate strongly with the teacher's
    centred_t = emb_t.word_embeddings.weight.detach() - mean
    d_t = torch.cdist(centred_t[:50], centred_t[:50]).flatten()
    d_s = torch.cdist(emb_s.word_embeddings.weight[:50].detach(),
                      emb_s.word_embeddings.weight[:50].detach()).flatten()
    assert torch.corrcoef(torch.stack([d_t, d_s]))[0, 1] > 0.5
    with pytest.raises(ValueError, match="at most"):
        build_student(model, spec(hidden_size=64, intermediate_size=64, init="pca"))


def _randomised(model):
    """BERT starts biases at 0 and LayerNorms at 1/0: give every parameter a value so that a
    projection that dropped a bias or a scale would show."""
    torch.manual_seed(1)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(0.1 * torch.randn_like(param))
    return model


def _attention_and_ffn(layer, x, heads):
    """Reference forward pieces of one BERT layer computed from its weights alone: per-head
    scores (B, H, L, L), the attention block's output before its LayerNorm, and the
    feed-forward output (B, L, d) for input ``x`` (B, L, d), no mask."""
    def linear(module, inp):
        return inp @ module.weight.T + module.bias

    def split(t):
        b, length, d = t.shape
        return t.view(b, length, heads, d // heads).transpose(1, 2)

    attn = layer.attention
    q, k, v = (split(linear(m, x)) for m in (attn.self.query, attn.self.key, attn.self.value))
    scores = q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5
    mixed = (scores.softmax(-1) @ v).transpose(1, 2).reshape(x.shape[0], x.shape[1], -1)
    attention_out = linear(attn.output.dense, mixed)
    ffn_out = linear(layer.output.dense,
                     torch.nn.functional.gelu(linear(layer.intermediate.dense, x)))
    return scores, attention_out, ffn_out


def test_pca_layers_at_full_width_is_the_teacher_rotated():
    """With the student as wide as the teacher, P is a rotation, every head keeps all its
    directions and every FFN unit is kept: the student's layer m on x P must give the mapped
    teacher layer's attention scores exactly, and its attention and FFN outputs rotated by P."""
    model = _randomised(in_memory_teacher(hidden=48))
    student = build_student(model, spec(hidden_size=48, intermediate_size=96, init="pca-layers"))
    projection, _, _ = pca_projection(model.bert.embeddings.word_embeddings.weight, 48)
    torch.testing.assert_close(projection.T @ projection, torch.eye(48), atol=1e-5, rtol=0)
    x = torch.randn(2, 5, 48, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        for m, n in enumerate(layer_map(2, 4, "uniform")):
            t_scores, t_attn, t_ffn = _attention_and_ffn(model.bert.encoder.layer[n - 1], x, 4)
            s_scores, s_attn, s_ffn = _attention_and_ffn(student.bert.encoder.layer[m],
                                                         x @ projection, 4)
            torch.testing.assert_close(s_scores, t_scores, atol=1e-4, rtol=1e-4)
            torch.testing.assert_close(s_attn, t_attn @ projection, atol=1e-4, rtol=1e-4)
            torch.testing.assert_close(s_ffn, t_ffn @ projection, atol=1e-4, rtol=1e-4)
        pooler_t, pooler_s = model.bert.pooler.dense, student.bert.pooler.dense
        torch.testing.assert_close(pooler_s(x @ projection), pooler_t(x) @ projection,
                                   atol=1e-4, rtol=1e-4)


def test_pca_layers_narrow_student_keeps_the_score_scale_and_refuses_other_shapes():
    model = _randomised(in_memory_teacher(hidden=48))
    student = build_student(model, spec(init="pca-layers"))    # width 16, 4 heads of 4, FFN 32
    projection, mean, _ = pca_projection(model.bert.embeddings.word_embeddings.weight, 16)
    torch.testing.assert_close(student.bert.embeddings.word_embeddings.weight,
                               (model.bert.embeddings.word_embeddings.weight - mean) @ projection)
    norm_t, norm_s = model.bert.embeddings.LayerNorm, student.bert.embeddings.LayerNorm
    torch.testing.assert_close(norm_s.bias, norm_t.bias @ projection)
    torch.testing.assert_close(norm_s.weight, norm_t.weight @ projection.pow(2))
    # scores of a head cut from 12 to 4 directions stay on the teacher's scale: on inputs in
    # the kept subspace, their spread is close to the teacher's, not 3x smaller
    x = torch.randn(4, 6, 16, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        t_scores, _, _ = _attention_and_ffn(model.bert.encoder.layer[1], x @ projection.T, 4)
        s_scores, _, _ = _attention_and_ffn(student.bert.encoder.layer[0], x, 4)
    ratio = float(s_scores.std() / t_scores.std())
    assert 0.5 < ratio < 1.5, ratio
    with pytest.raises(ValueError, match="attention heads: student 8 vs teacher 4"):
        build_student(model, spec(num_heads=8, init="pca-layers"))
    with pytest.raises(ValueError, match="intermediate size: student 128 vs teacher 96"):
        build_student(model, spec(intermediate_size=128, init="pca-layers"))


@pytest.fixture()
def official_style_checkpoint(teacher, tmp_path):
    """A saved student plus official-code extras: fit_denses.* keys, no model_type."""
    model, tokenizer = teacher
    folder = tmp_path / "general_tinybert"
    pretrained = build_student(model, spec())
    pretrained.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    weights = load_file(folder / "model.safetensors")
    for i in range(3):
        weights[f"fit_denses.{i}.weight"] = torch.randn(48, 16)
        weights[f"fit_denses.{i}.bias"] = torch.zeros(48)
    save_file(weights, folder / "model.safetensors", metadata={"format": "pt"})
    config = json.loads((folder / "config.json").read_text())
    config.pop("model_type", None)
    (folder / "config.json").write_text(json.dumps(config))
    return folder, pretrained


def test_pretrained_student_loads_weights_strips_fit_denses_new_head(
        teacher, official_style_checkpoint, caplog):
    model, tokenizer = teacher
    folder, pretrained = official_style_checkpoint
    with caplog.at_level(logging.WARNING, logger="tinylab.models"):
        student = build_student(model, spec(init=str(folder)))
    assert "fit_denses.0.weight" in caplog.text and "left out 6" in caplog.text
    assert not any(k.startswith("fit_dense") for k in student.state_dict())
    saved = pretrained.state_dict()
    for key, value in student.state_dict().items():
        if key.startswith("bert."):
            torch.testing.assert_close(value, saved[key])
    assert not torch.equal(student.classifier.weight, saved["classifier.weight"])
    assert uses_attention_scores(student) and student.training
    check_compatible(model, student, tokenizer=tokenizer)


def test_pretrained_student_errors(teacher, official_style_checkpoint):
    model, _ = teacher
    folder, _ = official_style_checkpoint
    with pytest.raises(ValueError, match="num_layers=4 but the checkpoint has 2"):
        build_student(model, spec(num_layers=4, init=str(folder)))
    with pytest.raises(ValueError, match="neither one of"):
        build_student(model, spec(init="pcaa"))


# ---------------------------------------------------------------------------------------------
# check_compatible
# ---------------------------------------------------------------------------------------------

def test_check_compatible_accepts_a_built_student(teacher):
    model, tokenizer = teacher
    check_compatible(model, build_student(model, spec()), tokenizer=tokenizer)


def test_check_compatible_lists_every_problem():
    teacher = in_memory_teacher(vocab=100)
    config = BertConfig(vocab_size=90, hidden_size=18, num_hidden_layers=3,
                        num_attention_heads=6, intermediate_size=36, type_vocab_size=1,
                        id2label={0: "positive", 1: "negative"})
    student = BertForSequenceClassification(config)
    with pytest.raises(ValueError) as err:
        check_compatible(teacher, student)
    message = str(err.value)
    for expected in ("vocabulary size: teacher 100, student 90", "token types",
                     "label order", "heads: teacher 4, student 6",
                     "does not return pre-softmax scores", "multiple of the student's 3"):
        assert expected in message
    # without attention distillation, heads and score capture do not matter
    with pytest.raises(ValueError) as err:
        check_compatible(teacher, student, need_attention=False, need_prediction=False,
                         layer_mapping="top")
    assert "heads" not in str(err.value) and "pre-softmax" not in str(err.value)
    assert "layers" not in str(err.value) and "label" not in str(err.value)
    assert "vocabulary size" in str(err.value)


def test_check_compatible_tokenizer_and_vocabulary_contents(teacher, tmp_path):
    model, tokenizer = teacher
    vocab = tokenizer.get_vocab()
    # a student saved with the same vocabulary size but two tokens swapped
    folder = tmp_path / "student"
    build_student(model, spec()).save_pretrained(folder)
    swapped = dict(vocab)
    swapped["[UNK]"], swapped["[CLS]"] = vocab["[CLS]"], vocab["[UNK]"]
    BertTokenizerFast(vocab=swapped).save_pretrained(folder)
    student = BertForSequenceClassification.from_pretrained(folder,
                                                            attn_implementation=SCORES_ATTN)
    with pytest.raises(ValueError, match="vocabulary contents differ: id 1 is '\\[UNK\\]' for "
                                         "the teacher, '\\[CLS\\]' for the student"):
        check_compatible(model, student, tokenizer=tokenizer)
    big = dict(vocab) | {f"extra{i}": len(vocab) + i for i in range(3)}
    with pytest.raises(ValueError, match="embedding tables hold"):
        check_compatible(model, build_student(model, spec()),
                         tokenizer=BertTokenizerFast(vocab=big))
