"""tinylab.similarity: linear CKA and attention distances against independent references, and
the per-layer table on real (tiny) models: a model compared with itself is identical."""
from __future__ import annotations

import copy

import pytest
import torch

from conftest import toy_texts
from tinylab.similarity import attention_maps, attention_tv, layer_similarity, linear_cka


def _kernel_cka(x: torch.Tensor, y: torch.Tensor) -> float:
    """CKA in its kernel form, HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L)) with K = X X^T and the
    centring matrix H = I - 11^T / n (Kornblith et al. 2019)."""
    n = x.shape[0]
    h = torch.eye(n, dtype=torch.float64) - 1.0 / n
    k, l_ = x.double() @ x.double().T, y.double() @ y.double().T

    def hsic(a, b):
        return torch.trace(a @ h @ b @ h) / (n - 1) ** 2
    return float(hsic(k, l_) / torch.sqrt(hsic(k, k) * hsic(l_, l_)))


def test_linear_cka_matches_the_kernel_form():
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(40, 7, generator=gen), torch.randn(40, 11, generator=gen)
    y = y + 0.5 * x @ torch.randn(7, 11, generator=gen)     # partly related
    assert linear_cka(x, y) == pytest.approx(_kernel_cka(x, y), rel=1e-9)


def test_linear_cka_ignores_rotation_scale_and_offset():
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(50, 6, generator=gen)
    rotation, _ = torch.linalg.qr(torch.randn(6, 6, generator=gen))
    assert linear_cka(x, 3.0 * x @ rotation + 5.0) == pytest.approx(1.0, abs=1e-9)
    assert linear_cka(x, torch.randn(50, 6, generator=gen)) < 0.5


def test_linear_cka_refuses_mismatched_rows():
    with pytest.raises(ValueError, match=r"same n, got \(4, 3\) and \(5, 3\)"):
        linear_cka(torch.randn(4, 3), torch.randn(5, 3))


def test_attention_tv_matches_an_explicit_loop():
    gen = torch.Generator().manual_seed(2)
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]])
    additive = (1 - mask[:, None, None, :].float()) * torch.finfo(torch.float32).min
    s = torch.randn(2, 3, 4, 4, generator=gen) + additive
    t = 2 * torch.randn(2, 3, 4, 4, generator=gen) + additive
    total, count = 0.0, 0
    for b in range(2):
        n = int(mask[b].sum())
        for h in range(3):
            for q in range(n):
                p = torch.softmax(s[b, h, q, :n].double(), -1)
                r = torch.softmax(t[b, h, q, :n].double(), -1)
                total += 0.5 * float((p - r).abs().sum())
                count += 1
    assert attention_tv(s, t, mask) == pytest.approx(total / count, rel=1e-5)
    assert attention_tv(s, s, mask) == pytest.approx(0.0, abs=1e-7)


@pytest.fixture(scope="module")
def models(tiny_teacher_dir):
    from tinylab.config import StudentConfig
    from tinylab.models import build_student, load_teacher

    teacher, tokenizer = load_teacher(tiny_teacher_dir)
    torch.manual_seed(0)
    student = build_student(teacher, StudentConfig(num_layers=2, hidden_size=24, num_heads=4,
                                                   intermediate_size=48))
    return teacher, student, tokenizer


def test_a_model_is_identical_to_itself_and_keeps_its_attention(models):
    teacher, student, tokenizer = models
    before = teacher.config._attn_implementation
    texts = toy_texts(6, seed=3)
    table = layer_similarity(teacher, {"copy": copy.deepcopy(teacher), "student": student},
                             texts, tokenizer)
    assert teacher.config._attn_implementation == before       # restored after the call
    same = table[table.model == "copy"]
    assert same.student_layer.tolist() == same.teacher_layer.tolist() == [1, 2, 3, 4]
    assert same.attention_mse.max() == pytest.approx(0.0, abs=1e-10)
    assert same.attention_tv.max() == pytest.approx(0.0, abs=1e-6)
    assert same.hidden_cka.min() == pytest.approx(1.0, abs=1e-6)
    other = table[table.model == "student"]
    assert other.teacher_layer.tolist() == [2, 4]              # uniform g(m) = 2m for M=2, N=4
    # random weights of std 0.02 attend almost uniformly: small but real differences
    assert (other.attention_tv > 1e-4).all() and (other.hidden_cka < 0.99).all()


def test_attention_maps_are_trimmed_distributions(models):
    teacher, _, tokenizer = models
    tokens, maps = attention_maps(teacher, "a slow film , never beautiful", tokenizer)
    assert tokens[0] == "[CLS]" and tokens[-1] == "[SEP]" and "[PAD]" not in tokens
    assert len(maps) == 4 and maps[0].shape == (4, len(tokens), len(tokens))
    torch.testing.assert_close(maps[2].sum(-1), torch.ones(4, len(tokens)))
