"""Exercises of notebooks 04-06 (notebook 05 has more in its own test file): each checker accepts
its reference, rejects the typical wrong answers with a message naming the mistake, and the
references agree with independent computations (the package's tested functions, loops over
tokens, PyTorch's own quantizer, the paper's recipe)."""
from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F

from tinylab.exercises import check, get, names
from tinylab.exercises.nb04 import _attention_cases, layer_mapping, masked_attention_mse
from tinylab.exercises.nb05 import stage_plan
from tinylab.exercises.nb07 import fake_quantize_int8
from tinylab.losses import attention_mse, layer_map


def test_modules_register_their_exercises():
    assert names("nb04") == ["nb04.hidden_loss", "nb04.layer_mapping",
                             "nb04.masked_attention_mse"]
    assert "nb05.stage_plan" in names("nb05")          # notebook 05 may hold more
    assert names("nb07") == ["nb07.fake_quantize_int8"]


@pytest.mark.parametrize("name", ["nb04.layer_mapping", "nb04.masked_attention_mse",
                                  "nb04.hidden_loss", "nb05.stage_plan",
                                  "nb07.fake_quantize_int8"])
def test_reference_passes(name, capsys):
    assert check(name, get(name).reference) is True
    assert capsys.readouterr().out.strip() == f"[{name}] the reference solution passes"


# -- nb04.layer_mapping ---------------------------------------------------------------------

@pytest.mark.parametrize("strategy", ["uniform", "top", "bottom"])
def test_layer_mapping_matches_the_paper(strategy):
    # Jiao et al. 2020, "Transformer distillation", for TinyBERT4 / BERT-base (M=4, N=12).
    expected = {"uniform": [3, 6, 9, 12], "top": [9, 10, 11, 12], "bottom": [1, 2, 3, 4]}
    assert layer_mapping(4, 12, strategy) == expected[strategy] == layer_map(4, 12, strategy)


def test_layer_mapping_names_off_by_one(capsys):
    zero_based = lambda m, n, s: [x - 1 for x in layer_mapping(m, n, s)]  # noqa: E731
    assert check("nb04.layer_mapping", zero_based) is False
    assert "0-based" in capsys.readouterr().out


def test_layer_mapping_rejects_top_for_uniform(capsys):
    assert check("nb04.layer_mapping", lambda m, n, s: layer_mapping(m, n, "top")) is False
    assert "uniform, M=4, N=12: got [9, 10, 11, 12], expected [3, 6, 9, 12]" in \
        capsys.readouterr().out


# -- nb04.masked_attention_mse -----------------------------------------------------------------

def test_masked_attention_reference_agrees_with_an_explicit_loop():
    for student, teacher, mask in _attention_cases(seed=3):
        total, count = 0.0, 0
        for b in range(student.shape[0]):
            n = int(mask[b].sum())  # real tokens come first
            diff = student[b, :, :n, :n] - teacher[b, :, :n, :n]
            total += float(diff.double().pow(2).sum())
            count += diff.numel()
        expected = torch.tensor(total / count, dtype=torch.float32)
        torch.testing.assert_close(masked_attention_mse(student, teacher, mask), expected)
        torch.testing.assert_close(attention_mse(student, teacher, mask), expected)


def test_masked_attention_names_the_two_usual_mistakes(capsys):
    assert check("nb04.masked_attention_mse", lambda s, t, m: (s - t).pow(2).mean()) is False
    assert "mean over every entry" in capsys.readouterr().out

    def keys_only(s, t, m):
        keys = m.bool()[:, None, None, :].expand_as(s)
        return (s[keys] - t[keys]).pow(2).mean()
    assert check("nb04.masked_attention_mse", keys_only) is False
    assert "padded query rows" in capsys.readouterr().out


def test_masked_attention_reports_overflow(capsys):
    # squaring the finfo.min entries before masking overflows to inf
    def square_first(s, t, m):
        sq = (s.double() * 1e10 - t.double()).float().pow(2)
        return sq.mean()
    assert check("nb04.masked_attention_mse", square_first) is False
    assert "select the real (query, key) pairs" in capsys.readouterr().out


# -- nb05.stage_plan -------------------------------------------------------------------------

def test_stage_plan_agrees_with_tinybertloss_stages(tiny_bert_dir):
    from transformers import AutoConfig

    from tinylab.losses import TinyBertLoss

    config = AutoConfig.from_pretrained(tiny_bert_dir)
    loss = TinyBertLoss(config, config)
    for stage in ("general", "intermediate", "prediction"):
        assert sorted(stage_plan(stage)["terms"]) == sorted(loss.active_terms(stage))


def test_stage_plan_explains_the_teacher_mistake(capsys):
    def finetuned_everywhere(stage):
        return {**stage_plan(stage), "teacher": "finetuned"}
    assert check("nb05.stage_plan", finetuned_everywhere) is False
    assert "pre-trained (not fine-tuned)" in capsys.readouterr().out

    def gold_labels(stage):
        plan = stage_plan(stage)
        return {**plan, "data": "task data with gold labels"} if stage == "prediction" else plan
    assert check("nb05.stage_plan", gold_labels) is False
    assert "gold labels are never used" in capsys.readouterr().out


# -- nb07.fake_quantize_int8 -------------------------------------------------------------------

def test_fake_quantize_matches_pytorch_dynamic_quantization_bit_for_bit():
    from torch.ao.quantization import quantize_dynamic

    gen = torch.Generator().manual_seed(7)
    for _ in range(20):
        weight = torch.randn(5, 9, generator=gen) * float(torch.rand(1, generator=gen) + 0.01)
        layer = torch.nn.Sequential(torch.nn.Linear(9, 5))
        with torch.no_grad():
            layer[0].weight.copy_(weight)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            stored = quantize_dynamic(layer, {torch.nn.Linear}, dtype=torch.qint8)[0].weight()
        assert stored.q_zero_point() == 0
        torch.testing.assert_close(fake_quantize_int8(weight), stored.dequantize(), rtol=0,
                                   atol=0)
        # the rounding error of symmetric int8 is at most half a step
        assert (fake_quantize_int8(weight) - weight).abs().max() <= stored.q_scale() / 2 + 1e-7


def test_fake_quantize_accepts_division_and_rejects_unrounded(capsys):
    def divide(w):
        s = w.abs().max() / 127.5
        return torch.clamp(torch.round(w / s), -128, 127) * s
    assert check("nb07.fake_quantize_int8", divide) is True
    capsys.readouterr()
    assert check("nb07.fake_quantize_int8", lambda w: w) is False
    assert "int8 has only 256" in capsys.readouterr().out
    assert check("nb07.fake_quantize_int8",
                 lambda w: torch.round(w / (w.abs().max() / 127)) * (w.abs().max() / 127)) is False


# -- nb04.hidden_loss ------------------------------------------------------------------------

def test_hidden_loss_reference_agrees_with_the_package_and_a_loop():
    from tinylab.exercises.nb04 import _hidden_cases, hidden_loss
    from tinylab.losses import hidden_mse

    for student, teacher, projection, mask in _hidden_cases(seed=4):
        total, count = 0.0, 0
        with torch.no_grad():
            for b in range(len(mask)):
                for position in range(mask.shape[1]):
                    if mask[b, position]:
                        projected = projection.weight @ student[b, position] + projection.bias
                        total += float((projected - teacher[b, position]).double().pow(2).sum())
                        count += teacher.shape[-1]
        expected = torch.tensor(total / count, dtype=torch.float32)
        torch.testing.assert_close(hidden_loss(student, teacher, projection, mask).detach(),
                                   expected)
        torch.testing.assert_close(hidden_mse(projection(student), teacher, mask).detach(),
                                   expected)


def test_hidden_loss_matches_tinybertloss_hidden_term(tiny_bert_dir, tiny_teacher_dir):
    # The package's hidden term is sum over mapped layers of hidden_loss(H_m, H_g(m), W_h, mask).
    from transformers import AutoConfig

    from tinylab.exercises.nb04 import hidden_loss
    from tinylab.losses import TinyBertLoss

    s_config = AutoConfig.from_pretrained(tiny_bert_dir)
    t_config = AutoConfig.from_pretrained(tiny_teacher_dir)
    t_config.num_hidden_layers = 8
    loss_fn = TinyBertLoss(s_config, t_config, weights={"attention": 0})
    gen = torch.Generator().manual_seed(0)
    mask = torch.tensor([[1, 1, 1, 1, 0], [1, 1, 0, 0, 0]])
    s_hidden = tuple(torch.randn(2, 5, s_config.hidden_size, generator=gen) for _ in range(5))
    t_hidden = tuple(torch.randn(2, 5, t_config.hidden_size, generator=gen) for _ in range(9))
    losses = loss_fn({"hidden_states": s_hidden}, {"hidden_states": t_hidden}, mask)
    expected = sum(hidden_loss(s_hidden[m], t_hidden[n], loss_fn.hidden_projection, mask)
                   for m, n in enumerate(loss_fn.mapping, start=1))
    torch.testing.assert_close(losses["hidden"], expected)
    torch.testing.assert_close(
        losses["embedding"], hidden_loss(s_hidden[0], t_hidden[0], loss_fn.embedding_projection,
                                         mask))


def _projected_wrong_side(s, t, W, m):
    return (W(t) - s)[m.bool()].pow(2).mean()


@pytest.mark.parametrize("wrong, message", [
    (_projected_wrong_side, "you projected the teacher instead of the student"),
    (lambda s, t, W, m: (W(s) - t).pow(2).mean(), "the mean over every position, padding"),
    (lambda s, t, W, m: ((W(s) - t).pow(2) * m[..., None]).mean(),
     "you zeroed the padded positions but still divided by every position"),
    (lambda s, t, W, m: (W(s) - t)[m.bool()].pow(2).sum(-1).mean(), "summed over the d_T"),
    (lambda s, t, W, m: torch.stack([(W(s) - t)[b, m[b].bool()].pow(2).mean()
                                     for b in range(len(m))]).mean(),
     "averaged each sentence first"),
    (lambda s, t, W, m: (s - t)[m.bool()].pow(2).mean(), "the student's states are not projected"),
])
def test_hidden_loss_names_the_usual_mistakes(wrong, message, capsys):
    assert check("nb04.hidden_loss", wrong) is False
    out = capsys.readouterr().out
    assert "[nb04.hidden_loss] not yet: lengths [5, 2, 3], d_S=6, d_T=6" in out, out
    assert message in out, out


def test_hidden_loss_explains_a_shape_error_and_a_detached_projection(capsys):
    # Once the widths differ, projecting the teacher fails inside nn.Linear: say why.
    def teacher_side_only_when_wide(s, t, W, m):
        return (W(t) - s)[m.bool()].pow(2).mean() if s.shape[-1] != t.shape[-1] else \
            (W(s) - t)[m.bool()].pow(2).mean()
    assert check("nb04.hidden_loss", teacher_side_only_when_wide) is False
    assert "apply it to the student's (B, L, d_S) states" in capsys.readouterr().out

    def frozen_projection(s, t, W, m):
        projected = F.linear(s, W.weight.detach(), W.bias.detach())
        return (projected - t)[m.bool()].pow(2).mean()
    assert check("nb04.hidden_loss", frozen_projection) is False
    assert "no gradient reached W_h" in capsys.readouterr().out
