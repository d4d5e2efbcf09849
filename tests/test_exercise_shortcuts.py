"""Each exercise refuses the library function that would solve it in one call: the learner's
answer is stopped at that call and the message names the function (and the checker's own use of
the same function, to compute the expected values, is not affected)."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tinylab.exercises import check


def _confusion_from_metrics(predictions, labels, num_classes):
    from tinylab.evaluate import classification_metrics

    return torch.tensor(classification_metrics(predictions, labels, num_classes)["confusion"])


def _autograd_gradient(student_logits, teacher_logits, T):
    with torch.enable_grad():
        leaf = student_logits.clone().requires_grad_(True)
        loss = -(F.softmax(teacher_logits / T, -1) * F.log_softmax(leaf / T, -1)).sum()
        loss.backward()
    return leaf.grad


def _func_gradient(student_logits, teacher_logits, T):
    def loss(z):
        return -(F.softmax(teacher_logits / T, -1) * F.log_softmax(z / T, -1)).sum()
    with torch.enable_grad():
        return torch.func.grad(loss)(student_logits)


def _package_soft_ce(s, t, T):
    from tinylab.losses import soft_cross_entropy
    return soft_cross_entropy(s, t, T)


def _hidden_mse(s, t, W, mask):
    from tinylab.losses import hidden_mse
    return hidden_mse(W(s), t, mask)


def _layer_map(m, n, strategy):
    from tinylab.losses import layer_map
    return layer_map(m, n, strategy)


def _attention_mse(s, t, mask):
    from tinylab.losses import attention_mse
    return attention_mse(s, t, mask)


def _quantize(weight):
    scale = float(weight.abs().max()) / 127.5
    return torch.quantize_per_tensor(weight, scale, 0, torch.qint8).dequantize()


def _value_relation(s, t, mask):
    from tinylab.losses import minilm_value_relation_kl
    return minilm_value_relation_kl(s, t, mask)


def _attention_kl_of_relations(s, t, mask):
    from tinylab.losses import minilm_attention_kl

    def relation(v):
        return v @ v.transpose(-1, -2) / v.shape[-1] ** 0.5
    return minilm_attention_kl(relation(s), relation(t), mask)


def _fake_quantize(weight):
    scale = float(weight.abs().max()) / 127.5
    return torch.fake_quantize_per_tensor_affine(weight, scale, 0, -128, 127)


SHORTCUTS = [
    ("nb02.confusion_matrix", _confusion_from_metrics,
     "tinylab.evaluate.classification_metrics"),
    ("nb03.softmax_with_temperature", lambda z, t: torch.softmax(z / t, -1), "torch.softmax"),
    ("nb03.softmax_with_temperature", lambda z, t: (z / t).softmax(-1), "torch.Tensor.softmax"),
    ("nb03.softmax_with_temperature", lambda z, t: F.softmax(z / t, -1),
     "torch.nn.functional.softmax"),
    ("nb03.softmax_with_temperature", lambda z, t: F.log_softmax(z / t, -1).exp(),
     "torch.nn.functional.log_softmax"),
    ("nb03.softmax_with_temperature", lambda z, t: torch.log_softmax(z / t, -1).exp(),
     "torch.log_softmax"),
    ("nb03.softmax_with_temperature", lambda z, t: torch.special.softmax(z / t, -1),
     "torch.special.softmax"),
    ("nb03.softmax_with_temperature", lambda z, t: torch.nn.Softmax(-1)(z / t),
     "torch.nn.Softmax"),
    ("nb03.soft_loss_gradient", _autograd_gradient, "torch.Tensor.backward"),
    ("nb03.soft_loss_gradient", _func_gradient, "torch.func.grad"),
    ("nb03.soft_cross_entropy", lambda s, t, T: F.cross_entropy(s / T, F.softmax(t / T, -1)),
     "torch.nn.functional.cross_entropy"),
    ("nb03.soft_cross_entropy",
     lambda s, t, T: F.kl_div(F.log_softmax(s / T, -1), F.softmax(t / T, -1),
                              reduction="batchmean"), "torch.nn.functional.kl_div"),
    ("nb03.soft_cross_entropy", _package_soft_ce, "tinylab.losses.soft_cross_entropy"),
    ("nb03.soft_cross_entropy",
     lambda s, t, T: torch.nn.CrossEntropyLoss()(s / T, F.softmax(t / T, -1)),
     "torch.nn.CrossEntropyLoss"),
    ("nb04.layer_mapping", _layer_map, "tinylab.losses.layer_map"),
    ("nb04.hidden_loss", _hidden_mse, "tinylab.losses.hidden_mse"),
    ("nb04.masked_attention_mse", _attention_mse, "tinylab.losses.attention_mse"),
    ("nb07.fake_quantize_int8", _quantize, "torch.quantize_per_tensor"),
    ("nb07.fake_quantize_int8", _fake_quantize, "torch.fake_quantize_per_tensor_affine"),
    ("nb08.value_relation_kl", _value_relation, "tinylab.losses.minilm_value_relation_kl"),
    ("nb08.value_relation_kl", _attention_kl_of_relations, "tinylab.losses.minilm_attention_kl"),
]


@pytest.mark.parametrize("name, shortcut, function", SHORTCUTS,
                         ids=[f"{n}-{f}" for n, _, f in SHORTCUTS])
def test_library_shortcut_is_refused(name, shortcut, function, capsys):
    assert check(name, shortcut) is False
    out = capsys.readouterr().out
    assert f"[{name}] refused: your code calls {function} - " in out, out
    assert "hint:" in out


@pytest.mark.parametrize("name, function", [
    ("nb03.softmax_with_temperature", torch.softmax),
    ("nb04.masked_attention_mse", "tinylab.losses.attention_mse"),
    ("nb04.layer_mapping", "tinylab.losses.layer_map"),
    ("nb08.value_relation_kl", "tinylab.losses.minilm_value_relation_kl"),
])
def test_the_library_function_itself_is_refused(name, function, capsys):
    from tinylab.exercises import resolve

    candidate = resolve(function) if isinstance(function, str) else function
    assert check(name, candidate) is False
    assert "refused: your code calls" in capsys.readouterr().out


def test_shortcuts_would_otherwise_pass():
    # The refusals above are not wrong answers in disguise: each shortcut computes the right
    # values (it is refused for what it calls, not for what it returns).
    from tinylab.exercises.nb03 import soft_loss_gradient, softmax_with_temperature
    from tinylab.exercises.nb04 import _attention_cases, layer_mapping, masked_attention_mse

    z = torch.randn(4, 3)
    torch.testing.assert_close(torch.softmax(z / 2, -1), softmax_with_temperature(z, 2.0))
    zs, zt = torch.randn(5), torch.randn(5)
    torch.testing.assert_close(_autograd_gradient(zs, zt, 2.0), soft_loss_gradient(zs, zt, 2.0))
    torch.testing.assert_close(_func_gradient(zs, zt, 2.0), soft_loss_gradient(zs, zt, 2.0))
    assert _layer_map(4, 12, "uniform") == layer_mapping(4, 12, "uniform")
    for s, t, mask in _attention_cases():
        torch.testing.assert_close(_attention_mse(s, t, mask), masked_attention_mse(s, t, mask))
    from tinylab.exercises.nb08 import _cases, value_relation_kl
    for s, t, mask in _cases():
        torch.testing.assert_close(_value_relation(s, t, mask), value_relation_kl(s, t, mask))
        torch.testing.assert_close(_attention_kl_of_relations(s, t, mask),
                                   value_relation_kl(s, t, mask))
