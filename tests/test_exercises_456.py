"""Exercises of notebooks 04-06: each checker accepts its reference, rejects the typical wrong
answers with a message naming the mistake, and the references agree with independent
computations (the package's tested functions, PyTorch's own quantizer, the paper's recipe)."""
from __future__ import annotations

import warnings

import pytest
import torch

from tinylab.exercises import check, get, names
from tinylab.exercises.nb04 import _attention_cases, layer_mapping, masked_attention_mse
from tinylab.exercises.nb05 import stage_plan
from tinylab.exercises.nb06 import fake_quantize_int8
from tinylab.losses import attention_mse, layer_map


def test_modules_register_their_exercises():
    assert names("nb04") == ["nb04.layer_mapping", "nb04.masked_attention_mse"]
    assert "nb05.stage_plan" in names("nb05")          # notebook 05 may hold more
    assert names("nb06") == ["nb06.fake_quantize_int8"]


@pytest.mark.parametrize("name", ["nb04.layer_mapping", "nb04.masked_attention_mse",
                                  "nb05.stage_plan", "nb06.fake_quantize_int8"])
def test_reference_passes(name, capsys):
    assert check(name, get(name).reference) is True
    assert capsys.readouterr().out.strip() == f"[{name}] the reference solution passes"


# -- nb04.layer_mapping ---------------------------------------------------------------------

@pytest.mark.parametrize("strategy", ["uniform", "top", "bottom"])
def test_layer_mapping_matches_the_paper(strategy):
    # Jiao et al. 2020, Sec. 3.1 for TinyBERT4 / BERT-base (M=4, N=12).
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


# -- nb06.fake_quantize_int8 -------------------------------------------------------------------

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
    assert check("nb06.fake_quantize_int8", divide) is True
    capsys.readouterr()
    assert check("nb06.fake_quantize_int8", lambda w: w) is False
    assert "int8 has only 256" in capsys.readouterr().out
    assert check("nb06.fake_quantize_int8",
                 lambda w: torch.round(w / (w.abs().max() / 127)) * (w.abs().max() / 127)) is False
