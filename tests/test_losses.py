"""TinyBERT loss terms: parity with independent references, masking, gradients, layer maps."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from transformers import BertConfig, BertForSequenceClassification

from tinylab.attention import SCORES_ATTN
from tinylab.config import LossConfig
from tinylab.losses import (TinyBertLoss, attention_mse, hidden_mse, hinton_kd_loss, kd_kl_div,
                            layer_map, soft_cross_entropy)

NEG = torch.finfo(torch.float32).min


def logits_pair(seed: int = 0, batch: int = 5, classes: int = 3):
    gen = torch.Generator().manual_seed(seed)
    student = torch.randn(batch, classes, generator=gen, requires_grad=True)
    teacher = torch.randn(batch, classes, generator=gen) * 2
    return student, teacher


def padding_mask() -> torch.Tensor:
    return torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0], [1, 1, 0, 0, 0, 0]])


# ---------------------------------------------------------------------------------------------
# prediction losses
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("temperature", [1.0, 2.5])
def test_soft_cross_entropy_matches_cross_entropy_with_probability_targets(temperature):
    s, t = logits_pair()
    reference = F.cross_entropy(s / temperature, F.softmax(t / temperature, -1))
    torch.testing.assert_close(soft_cross_entropy(s, t, temperature), reference)
    torch.testing.assert_close(soft_cross_entropy(s, t, temperature, scale_t2=True),
                               reference * temperature ** 2)


@pytest.mark.parametrize("temperature, alpha", [(1.0, 0.0), (2.0, 0.1), (4.0, 0.5), (2.0, 1.0)])
def test_hinton_kd_loss_matches_the_papers_formula(temperature, alpha):
    # Hinton et al. 2015, Sec. 2, written out per example with plain Python floats.
    s, t = logits_pair(seed=3, classes=4)
    labels = torch.tensor([0, 3, 1, 2, 2])
    hard = soft = 0.0
    for zs, zt, y in zip(s.tolist(), t.tolist(), labels.tolist()):
        log_q1 = [v - math.log(sum(math.exp(u) for u in zs)) for v in zs]
        p = [math.exp(v / temperature) for v in zt]
        p = [v / sum(p) for v in p]
        q = [math.exp(v / temperature) for v in zs]
        q = [v / sum(q) for v in q]
        hard += -log_q1[y] / len(labels)
        soft += sum(pi * math.log(pi / qi) for pi, qi in zip(p, q)) / len(labels)
    out = hinton_kd_loss(s, t, labels, temperature, alpha)
    assert out["hard"].item() == pytest.approx(hard, rel=1e-5)
    assert out["soft"].item() == pytest.approx(soft * temperature ** 2, rel=1e-5)
    assert out["total"].item() == pytest.approx(
        alpha * hard + (1 - alpha) * temperature ** 2 * soft, rel=1e-5)


def test_hinton_kd_loss_refuses_bad_alpha_and_labels():
    s, t = logits_pair()
    with pytest.raises(ValueError, match=r"alpha .* \[0, 1\], got 1.5"):
        hinton_kd_loss(s, t, torch.zeros(5, dtype=torch.long), alpha=1.5)
    with pytest.raises(ValueError, match=r"labels must have shape \(batch,\) = \(5,\)"):
        hinton_kd_loss(s, t, torch.zeros(4, dtype=torch.long))


def test_soft_cross_entropy_official_is_mean_over_batch_and_classes():
    s, t = logits_pair(classes=4)
    # docs/paper-vs-code.md: (-softmax(z_T/t) * log_softmax(z_S/t)).mean(), written out with loops
    p = [[math.exp(v) for v in row] for row in t.tolist()]
    p = [[v / sum(row) for v in row] for row in p]
    log_q = [[v - math.log(sum(math.exp(u) for u in row)) for v in row] for row in s.tolist()]
    expected = -sum(pi * qi for pr, qr in zip(p, log_q) for pi, qi in zip(pr, qr)) / (5 * 4)
    assert soft_cross_entropy(s, t, official=True).item() == pytest.approx(expected, rel=1e-5)
    torch.testing.assert_close(soft_cross_entropy(s, t, official=True) * 4,
                               soft_cross_entropy(s, t))


@pytest.mark.parametrize("temperature", [1.0, 3.0])
def test_kd_kl_div_matches_torch_kl_div(temperature):
    s, t = logits_pair(seed=1)
    reference = F.kl_div(F.log_softmax(s / temperature, -1), F.softmax(t / temperature, -1),
                         reduction="batchmean")
    torch.testing.assert_close(kd_kl_div(s, t, temperature, scale_t2=False), reference)
    torch.testing.assert_close(kd_kl_div(s, t, temperature), reference * temperature ** 2)


def test_cross_entropy_minus_kl_is_teacher_entropy_and_gradients_agree():
    s, t = logits_pair(seed=2)
    p_t = F.softmax(t, -1)
    entropy = -(p_t * p_t.log()).sum(-1).mean()
    ce, kl = soft_cross_entropy(s, t), kd_kl_div(s, t, scale_t2=False)
    torch.testing.assert_close(ce - kl, entropy)
    grad_ce, = torch.autograd.grad(ce, s)
    grad_kl, = torch.autograd.grad(kl, s)
    torch.testing.assert_close(grad_ce, grad_kl)


def test_prediction_losses_at_student_equals_teacher():
    _, t = logits_pair()
    assert kd_kl_div(t.clone(), t).abs().item() < 1e-6
    p_t = F.softmax(t, -1)
    torch.testing.assert_close(soft_cross_entropy(t.clone(), t), -(p_t * p_t.log()).sum(-1).mean())


def test_prediction_losses_never_send_gradient_to_teacher():
    s, t = logits_pair()
    t.requires_grad_(True)
    (soft_cross_entropy(s, t) + kd_kl_div(s, t)).backward()
    assert s.grad is not None and s.grad.abs().sum() > 0
    assert t.grad is None


def test_prediction_losses_reject_bad_input():
    s, t = logits_pair()
    with pytest.raises(ValueError, match="temperature"):
        soft_cross_entropy(s, t, 0.0)
    with pytest.raises(ValueError, match="shape"):
        kd_kl_div(s, t[:, :2])


# ---------------------------------------------------------------------------------------------
# attention and hidden MSE
# ---------------------------------------------------------------------------------------------

def scores_with_mask(seed: int, mask: torch.Tensor, heads: int = 2, fill: float = NEG):
    gen = torch.Generator().manual_seed(seed)
    batch, length = mask.shape
    scores = torch.randn(batch, heads, length, length, generator=gen) * 3
    return scores.masked_fill(~mask.bool()[:, None, None, :], fill)


def reference_masked_attention_mse(s, t, mask):
    """Loop over (b, h, q, k) with both query and key real (TextBrewer's att_mse convention)."""
    total, count = 0.0, 0
    batch, heads, length, _ = s.shape
    for b in range(batch):
        for h in range(heads):
            for q in range(length):
                for k in range(length):
                    if mask[b, q] and mask[b, k]:
                        total += (s[b, h, q, k].item() - t[b, h, q, k].item()) ** 2
                        count += 1
    return total / count


def test_attention_mse_masked_matches_loop_reference():
    mask = padding_mask()
    s, t = scores_with_mask(0, mask), scores_with_mask(1, mask)
    assert attention_mse(s, t, mask).item() == pytest.approx(
        reference_masked_attention_mse(s, t, mask), rel=1e-5)


@pytest.mark.parametrize("garbage", [NEG, -10000.0, float("-inf"), float("nan"), 1e30])
def test_attention_mse_masked_ignores_padded_entries(garbage):
    mask = padding_mask()
    s, t = scores_with_mask(0, mask), scores_with_mask(1, mask)
    expected = attention_mse(s, t, mask)
    pad = ~(mask.bool()[:, :, None] & mask.bool()[:, None, :])[:, None].expand_as(s)
    s2, t2 = s.clone().requires_grad_(True), t.clone()
    with torch.no_grad():
        s2[pad] = garbage
        t2[pad] = -garbage if garbage == garbage else garbage
    loss = attention_mse(s2, t2, mask)
    torch.testing.assert_close(loss, expected)
    loss.backward()
    assert torch.isfinite(s2.grad).all() and (s2.grad[pad] == 0).all()


def test_attention_mse_unmasked_plain_mse_and_the_finfo_min_mask():
    clean_s, clean_t = torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4)
    torch.testing.assert_close(attention_mse(clean_s, clean_t), F.mse_loss(clean_s, clean_t))
    mask = padding_mask()
    additive = torch.zeros(mask.shape).masked_fill(mask == 0, NEG)[:, None, None, :]
    s = scores_with_mask(0, mask, fill=0.0) + additive     # what transformers 5 hands back
    t = scores_with_mask(1, mask, fill=0.0) + additive
    pad = ~mask.bool()[:, None, None, :].expand_as(s)
    assert (s[pad] == NEG).all() and (t[pad] == NEG).all()  # float32 absorbs the score
    # same padding on both sides: plain MSE is finite and equals the official clamp, but it
    # is not the masked mean (padded cells count in the denominator)
    plain = attention_mse(s, t)
    torch.testing.assert_close(plain, attention_mse(s, t, official=True))
    assert plain < attention_mse(s, t, mask)
    # one side masked with the official code's -10000, the other with finfo.min: overflow
    t_official = t.masked_fill(pad, -10000.0)
    assert torch.isinf(attention_mse(s, t_official))
    torch.testing.assert_close(attention_mse(s, t_official, mask), attention_mse(s, t, mask))


def test_attention_mse_official_matches_spec_formula():
    mask = padding_mask()
    for fill in (-10000.0, NEG):   # the official code's mask value, and transformers 5's
        s, t = scores_with_mask(0, mask, fill=fill), scores_with_mask(1, mask, fill=fill)
        s_ref = torch.where(s <= -1e2, torch.zeros_like(s), s)
        t_ref = torch.where(t <= -1e2, torch.zeros_like(t), t)
        expected = ((s_ref - t_ref) ** 2).sum() / s.numel()   # padded cells count as 0
        torch.testing.assert_close(attention_mse(s, t, mask, official=True), expected)
    # padded query rows are NOT masked by the official code: they change the loss
    s2 = s.clone()
    s2[2, :, 4, :2] += 5.0
    assert attention_mse(s2, t, official=True) != attention_mse(s, t, official=True)
    torch.testing.assert_close(attention_mse(s2, t, mask), attention_mse(s, t, mask))


def test_hidden_mse_masked_and_plain():
    mask = padding_mask()
    gen = torch.Generator().manual_seed(3)
    s, t = torch.randn(3, 6, 5, generator=gen), torch.randn(3, 6, 5, generator=gen)
    real = mask.bool()
    expected = ((s[real] - t[real]) ** 2).sum() / (real.sum() * 5)
    torch.testing.assert_close(hidden_mse(s, t, mask), expected)
    torch.testing.assert_close(hidden_mse(s, t), F.mse_loss(s, t))
    s2, t2 = s.clone(), t.clone()
    s2[~real], t2[~real] = 1e30, float("nan")
    torch.testing.assert_close(hidden_mse(s2, t2, mask), expected)
    assert hidden_mse(t.clone(), t, mask).item() == 0.0


def test_transformer_losses_reject_bad_shapes():
    with pytest.raises(ValueError, match="shape"):
        attention_mse(torch.zeros(1, 2, 3, 3), torch.zeros(1, 3, 3, 3))
    with pytest.raises(ValueError, match="attention_mask"):
        hidden_mse(torch.zeros(2, 4, 3), torch.zeros(2, 4, 3), torch.ones(2, 5))


# ---------------------------------------------------------------------------------------------
# layer mapping
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("m, n, strategy, expected", [
    (4, 12, "uniform", [3, 6, 9, 12]),
    (6, 12, "uniform", [2, 4, 6, 8, 10, 12]),
    (3, 6, "uniform", [2, 4, 6]),
    (2, 6, "uniform", [3, 6]),
    (6, 6, "uniform", [1, 2, 3, 4, 5, 6]),
    (4, 12, "top", [9, 10, 11, 12]),
    (4, 6, "top", [3, 4, 5, 6]),
    (4, 12, "bottom", [1, 2, 3, 4]),
])
def test_layer_map_tables(m, n, strategy, expected):
    assert layer_map(m, n, strategy) == expected


def test_layer_map_uniform_equals_official_indexing():
    # the authors' code: official attention index i*k + k - 1 (0-based), hidden index i*k for i >= 1
    m, n = 4, 12
    k = n // m
    assert layer_map(m, n) == [i * k + k - 1 + 1 for i in range(m)]
    assert layer_map(m, n) == [i * k for i in range(1, m + 1)]


@pytest.mark.parametrize("m, n", [(m, n) for n in range(1, 25) for m in range(1, n + 1)])
def test_layer_map_spread_against_fractions(m, n):
    # reference: the smallest teacher layer at or past the exact fraction m'/M of the depth,
    # found with exact rational arithmetic
    from fractions import Fraction
    expected = [next(layer for layer in range(1, n + 1) if layer >= Fraction(i * n, m))
                for i in range(1, m + 1)]
    assert layer_map(m, n, "spread") == expected
    assert layer_map(m, n, "spread")[-1] == n                       # always ends on top
    assert len(set(layer_map(m, n, "spread"))) == m                 # never two on one layer
    if n % m == 0:
        assert layer_map(m, n, "spread") == layer_map(m, n, "uniform")


def test_layer_map_official_block_indexing_is_bottom_when_depths_do_not_divide():
    # the authors' code: layers_per_block = N // M, student layer i -> teacher i*k + k - 1
    # (0-based); with N=6, M=4 that is the first four layers, not a spread
    m, n = 4, 6
    k = n // m
    assert [i * k + k - 1 + 1 for i in range(m)] == layer_map(m, n, "bottom")
    assert layer_map(m, n, "spread") == [2, 3, 5, 6]


@pytest.mark.parametrize("m, n, strategy, message", [
    (4, 6, "uniform", "multiple.*'spread'"),
    (7, 6, "uniform", "more layers"),
    (0, 6, "top", "positive"),
    (2, 6, "middle", "unknown layer mapping"),
])
def test_layer_map_errors(m, n, strategy, message):
    with pytest.raises(ValueError, match=message):
        layer_map(m, n, strategy)


# ---------------------------------------------------------------------------------------------
# TinyBertLoss
# ---------------------------------------------------------------------------------------------

def bert(layers: int, hidden: int, heads: int = 4, seed: int = 0) -> BertForSequenceClassification:
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=50, hidden_size=hidden, num_hidden_layers=layers,
                        num_attention_heads=heads, intermediate_size=2 * hidden,
                        max_position_embeddings=16, attn_implementation=SCORES_ATTN)
    return BertForSequenceClassification(config).eval()


def batch():
    mask = padding_mask()
    ids = torch.randint(5, 50, mask.shape, generator=torch.Generator().manual_seed(7))
    return {"input_ids": ids.masked_fill(mask == 0, 0), "attention_mask": mask}


def run(model, inputs, grad=True):
    with torch.set_grad_enabled(grad):
        return model(**inputs, output_hidden_states=True, output_attentions=True)


@pytest.fixture(scope="module")
def pair():
    return bert(4, 32, seed=0), bert(2, 16, seed=1)


def test_tinybert_loss_matches_manual_composition(pair):
    teacher, student = pair
    inputs = batch()
    t_out, s_out = run(teacher, inputs, grad=False), run(student, inputs)
    loss_fn = TinyBertLoss(student.config, teacher.config, temperature=2.0,
                           weights={"embedding": 0.5, "attention": 2.0})
    mask = inputs["attention_mask"]
    real = mask.bool()
    pairs = (real[:, :, None] & real[:, None, :])[:, None].expand(-1, 4, -1, -1)

    def mse_rows(a, b):   # plain torch: mean over real tokens and features
        return ((a[real] - b[real]) ** 2).mean()

    w_e, w_h = loss_fn.embedding_projection, loss_fn.hidden_projection
    emb = mse_rows(s_out.hidden_states[0] @ w_e.weight.T + w_e.bias, t_out.hidden_states[0])
    hid = sum(mse_rows(s_out.hidden_states[m] @ w_h.weight.T + w_h.bias, t_out.hidden_states[n])
              for m, n in ((1, 2), (2, 4)))
    att = sum(((s_out.attentions[m - 1][pairs] - t_out.attentions[n - 1][pairs]) ** 2).mean()
              for m, n in ((1, 2), (2, 4)))
    got = loss_fn(s_out, t_out, mask)
    torch.testing.assert_close(got["embedding"], emb)
    torch.testing.assert_close(got["hidden"], hid)
    torch.testing.assert_close(got["attention"], att)
    assert got["prediction"].item() == 0.0
    torch.testing.assert_close(got["total"], 0.5 * emb + hid + 2.0 * att)

    pred = loss_fn(s_out, t_out, mask, stage="prediction")
    ref = F.cross_entropy(s_out.logits / 2.0, F.softmax(t_out.logits / 2.0, -1))
    torch.testing.assert_close(pred["prediction"], ref)
    torch.testing.assert_close(pred["total"], ref)
    assert pred["embedding"].item() == pred["attention"].item() == pred["hidden"].item() == 0.0


def test_tinybert_loss_zero_when_student_is_teacher():
    teacher = bert(2, 16, seed=3)
    inputs = batch()
    out = run(teacher, inputs, grad=False)
    loss_fn = TinyBertLoss(teacher.config, teacher.config)   # equal widths: identity W
    for stage in ("general", "intermediate", "prediction"):
        got = loss_fn(out, out, inputs["attention_mask"], stage=stage)
        if stage == "prediction":   # soft CE at equality = the teacher's entropy, KL = 0
            p = F.softmax(out.logits, -1)
            torch.testing.assert_close(got["total"], -(p * p.log()).sum(-1).mean())
        else:
            assert got["total"].item() == 0.0
    official = TinyBertLoss(teacher.config, teacher.config, official_attention=True,
                            shared_projection=True)
    assert official(out, out, inputs["attention_mask"])["total"].item() == 0.0


def test_tinybert_loss_ignores_padded_tokens_end_to_end(pair):
    teacher, student = pair
    inputs = batch()
    changed = dict(inputs, input_ids=inputs["input_ids"].masked_fill(
        inputs["attention_mask"] == 0, 33))   # different tokens under the padding
    loss_fn = TinyBertLoss(student.config, teacher.config)
    a = loss_fn(run(student, inputs, False), run(teacher, inputs, False), inputs["attention_mask"])
    b = loss_fn(run(student, changed, False), run(teacher, changed, False),
                inputs["attention_mask"])
    for key in ("embedding", "attention", "hidden", "total"):
        torch.testing.assert_close(a[key], b[key])


def test_tinybert_loss_from_cached_teacher_subset(pair):
    teacher, student = pair
    inputs = batch()
    t_out, s_out = run(teacher, inputs, grad=False), run(student, inputs, grad=False)
    loss_fn = TinyBertLoss(student.config, teacher.config)
    assert loss_fn.teacher_layers("general") == {"hidden_states": [0, 2, 4],
                                                 "attentions": [2, 4], "logits": False}
    assert loss_fn.teacher_layers("prediction") == {"hidden_states": [], "attentions": [],
                                                    "logits": True}
    for stage in ("intermediate", "prediction"):
        cached = loss_fn.select_teacher_outputs(t_out, stage)
        full = loss_fn(s_out, t_out, inputs["attention_mask"], stage=stage)
        sub = loss_fn(s_out, cached, inputs["attention_mask"], stage=stage)
        for key in full:
            torch.testing.assert_close(sub[key], full[key])
    cached = loss_fn.select_teacher_outputs(t_out)
    assert set(cached["attentions"]) == {2, 4} and set(cached["hidden_states"]) == {0, 2, 4}
    del cached["attentions"][4]
    with pytest.raises(KeyError, match="layer 4"):
        loss_fn(s_out, cached, inputs["attention_mask"])


def test_zero_weight_drops_term_and_its_teacher_layers(pair):
    teacher, student = pair
    loss_fn = TinyBertLoss(student.config, teacher.config,
                           weights={"attention": 0.0, "embedding": 0.0})
    assert loss_fn.teacher_layers() == {"hidden_states": [2, 4], "attentions": [],
                                        "logits": False}
    inputs = batch()
    got = loss_fn(run(student, inputs, False), run(teacher, inputs, False),
                  inputs["attention_mask"])
    assert got["attention"].item() == got["embedding"].item() == 0.0
    torch.testing.assert_close(got["total"], got["hidden"])


def test_gradients_reach_student_and_projections_never_teacher(pair):
    teacher, student = pair
    teacher.zero_grad(set_to_none=True)
    student.zero_grad(set_to_none=True)
    inputs = batch()
    t_out, s_out = run(teacher, inputs, grad=True), run(student, inputs, grad=True)
    loss_fn = TinyBertLoss(student.config, teacher.config)
    total = loss_fn(s_out, t_out, inputs["attention_mask"])["total"]
    total = total + loss_fn(s_out, t_out, inputs["attention_mask"], stage="prediction")["total"]
    total.backward()
    assert all(p.grad is None for p in teacher.parameters())
    for p in loss_fn.parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0
    assert student.bert.embeddings.word_embeddings.weight.grad.abs().sum() > 0
    assert student.bert.encoder.layer[0].attention.self.query.weight.grad.abs().sum() > 0
    assert student.classifier.weight.grad.abs().sum() > 0


def test_shared_projection_and_official_switches(pair):
    teacher, student = pair
    inputs = batch()
    t_out, s_out = run(teacher, inputs, False), run(student, inputs, False)
    shared = TinyBertLoss(student.config, teacher.config, shared_projection=True,
                          official_attention=True, official_prediction=True)
    assert [name for name, _ in shared.named_parameters()] == [
        "projections.fit_dense.weight", "projections.fit_dense.bias"]
    paper = TinyBertLoss(student.config, teacher.config)
    assert {n.split(".")[1] for n, _ in paper.named_parameters()} == {
        "embedding_projection", "hidden_projection"}
    got = shared(s_out, t_out, inputs["attention_mask"])
    expected_att = sum(attention_mse(s_out.attentions[m - 1], t_out.attentions[n - 1],
                                     official=True) for m, n in ((1, 2), (2, 4)))
    torch.testing.assert_close(got["attention"], expected_att)
    pred = shared(s_out, t_out, inputs["attention_mask"], stage="prediction")
    torch.testing.assert_close(pred["prediction"],
                               soft_cross_entropy(s_out.logits, t_out.logits, official=True))


def test_official_hidden_counts_padded_positions(pair):
    """official_hidden: embedding/hidden MSE over every position (the authors' code), checked
    against F.mse_loss on the projected tensors; the masked default differs on padded batches."""
    teacher, student = pair
    inputs = batch()
    t_out, s_out = run(teacher, inputs, False), run(student, inputs, False)
    mask = inputs["attention_mask"]
    official = TinyBertLoss(student.config, teacher.config, official_hidden=True)
    paper = TinyBertLoss(student.config, teacher.config)
    paper.load_state_dict(official.state_dict())
    got = official(s_out, t_out, mask)
    w_e, w_h = official.embedding_projection, official.hidden_projection
    emb = F.mse_loss(w_e(s_out.hidden_states[0]), t_out.hidden_states[0])
    hid = sum(F.mse_loss(w_h(s_out.hidden_states[m]), t_out.hidden_states[n])
              for m, n in ((1, 2), (2, 4)))
    torch.testing.assert_close(got["embedding"], emb)
    torch.testing.assert_close(got["hidden"], hid)
    masked = paper(s_out, t_out, mask)
    assert not torch.isclose(masked["hidden"], got["hidden"])
    torch.testing.assert_close(masked["attention"], got["attention"])  # attention unaffected


def test_from_config():
    cfg = LossConfig(layer_mapping="top", attention_weight=0.0, temperature=2.0, scale_t2=True,
                     shared_projection=True, official_prediction=True)
    loss_fn = TinyBertLoss.from_config(cfg, bert(2, 16).config, bert(4, 32).config)
    assert loss_fn.mapping == [3, 4]
    assert loss_fn.weights == {"embedding": 1.0, "attention": 0.0, "hidden": 1.0,
                               "prediction": 1.0}
    assert loss_fn.temperature == 2.0 and loss_fn.scale_t2 and loss_fn.official_prediction
    assert loss_fn.shared_projection


def test_tinybert_loss_errors(pair):
    teacher, student = pair
    six_heads = bert(2, 24, heads=6).config
    with pytest.raises(ValueError, match="6 heads and the teacher 4"):
        TinyBertLoss(six_heads, teacher.config)
    TinyBertLoss(six_heads, teacher.config, weights={"attention": 0})   # fine without attention
    with pytest.raises(ValueError, match="multiple"):
        TinyBertLoss(bert(3, 16).config, teacher.config)
    with pytest.raises(ValueError, match="unknown loss weight"):
        TinyBertLoss(student.config, teacher.config, weights={"attn": 1.0})
    loss_fn = TinyBertLoss(student.config, teacher.config)
    inputs = batch()
    s_out, t_out = run(student, inputs, False), run(teacher, inputs, False)
    with pytest.raises(ValueError, match="unknown stage"):
        loss_fn(s_out, t_out, stage="task")
    no_attn = {"hidden_states": s_out.hidden_states, "logits": s_out.logits}
    with pytest.raises(ValueError, match="output_attentions"):
        loss_fn(no_attn, t_out)
    probs = dict(no_attn, attentions=tuple(a.softmax(-1) for a in s_out.attentions))
    with pytest.raises(ValueError, match="probabilities"):
        loss_fn(probs, t_out, inputs["attention_mask"])


def test_mapped_terms_equal_per_layer_loops_for_full_and_cached_teacher_outputs(pair):
    """The pure mapped terms against explicit per-layer sums of the single-layer terms, with
    the teacher given as its full output and as the cached {layer: tensor} subset."""
    from tinylab.losses import mapped_attention_loss, mapped_hidden_loss, teacher_layers_for

    teacher, student = pair
    inputs = batch()
    t_out, s_out = run(teacher, inputs, False), run(student, inputs, False)
    mask = inputs["attention_mask"]
    mapping = [2, 4]
    w_h = torch.nn.Linear(student.config.hidden_size, teacher.config.hidden_size)
    loop_attn = sum(attention_mse(s_out.attentions[m - 1], t_out.attentions[n - 1], mask)
                    for m, n in ((1, 2), (2, 4)))
    loop_hidden = sum(hidden_mse(w_h(s_out.hidden_states[m]), t_out.hidden_states[n], mask)
                      for m, n in ((1, 2), (2, 4)))
    cached = {"attentions": {n: t_out.attentions[n - 1] for n in mapping},
              "hidden_states": {n: t_out.hidden_states[n] for n in mapping}}
    for t_attn, t_hidden in ((t_out.attentions, t_out.hidden_states),
                             (cached["attentions"], cached["hidden_states"])):
        torch.testing.assert_close(
            mapped_attention_loss(s_out.attentions, t_attn, mapping, mask), loop_attn)
        torch.testing.assert_close(
            mapped_hidden_loss(s_out.hidden_states, t_hidden, mapping, w_h, mask), loop_hidden)
    assert teacher_layers_for(mapping, ["embedding", "hidden"]) == {
        "hidden_states": [0, 2, 4], "attentions": [], "logits": False}
    with pytest.raises(KeyError, match="layer 4 missing"):
        mapped_attention_loss(s_out.attentions, {2: t_out.attentions[1]}, mapping, mask)


def test_projections_identity_shared_and_train_only():
    from tinylab.projections import TinyBertProjections

    x = torch.randn(2, 3, 8)
    same = TinyBertProjections(8, 8)
    torch.testing.assert_close(same.embedding(x), x)
    torch.testing.assert_close(same.hidden(x), x)
    two = TinyBertProjections(8, 12)
    assert two.embedding(x).shape == (2, 3, 12)
    assert two.w_e is not two.w_h
    two.train_only(["hidden"])
    assert [n for n, p in two.named_parameters() if p.requires_grad] == [
        "hidden_projection.weight", "hidden_projection.bias"]
    shared = TinyBertProjections(8, 12, shared=True)
    assert shared.w_e is shared.w_h is shared.fit_dense
    assert not any(p.requires_grad for p in shared.train_only(["attention"]).parameters())
    assert all(p.requires_grad for p in shared.train_only(["embedding"]).parameters())
