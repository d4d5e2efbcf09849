"""Exercises of notebook 04 (the combined TinyBERT loss): the layer mapping g(m), and the
padding-masked attention MSE.

Each checker compares the learner's function with the package's tested implementation in
:mod:`tinylab.losses` on inputs chosen to catch the usual mistakes (0- vs 1-based layers, a
student as deep as the teacher, padded keys holding ``finfo.min``, rows of different lengths).
"""
from __future__ import annotations

import torch

from tinylab.exercises import register


# -- 1. the layer mapping ----------------------------------------------------------------------

def layer_mapping(num_student_layers: int, num_teacher_layers: int, strategy: str) -> list[int]:
    """Teacher layer n = g(m) for student layers m = 1..M (1-based, 0 = embeddings is implied).

    uniform: g(m) = m * N / M;  top: g(m) = N - M + m;  bottom: g(m) = m.
    """
    m_layers, n_layers = num_student_layers, num_teacher_layers
    if strategy == "uniform":
        step = n_layers // m_layers
        return [m * step for m in range(1, m_layers + 1)]
    if strategy == "top":
        return [n_layers - m_layers + m for m in range(1, m_layers + 1)]
    if strategy == "bottom":
        return [m for m in range(1, m_layers + 1)]
    raise ValueError(f"unknown strategy {strategy!r}")


_MAPPING_CASES = [(4, 12), (3, 6), (2, 6), (6, 6), (1, 4), (2, 4)]


def _check_layer_mapping(candidate) -> None:
    from tinylab.losses import layer_map

    for strategy in ("uniform", "top", "bottom"):
        for m, n in _MAPPING_CASES:
            got = candidate(m, n, strategy)
            expected = layer_map(m, n, strategy)
            assert got is not None, "your function returned None: return a list of ints"
            got = [int(x) for x in got]
            assert len(got) == m, (f"{strategy}, M={m}, N={n}: expected one teacher layer per "
                                   f"student layer ({m} values), got {len(got)}: {got}")
            if got == [x - 1 for x in expected]:
                raise AssertionError(f"{strategy}, M={m}, N={n}: got {got}, expected {expected}. "
                                     f"Your layers are 0-based; number transformer layers from 1 "
                                     f"(layer 0 is the embedding output)")
            assert got == expected, (f"{strategy}, M={m}, N={n}: got {got}, expected {expected}")


register("nb04.layer_mapping", checker=_check_layer_mapping, reference=layer_mapping,
         forbidden=("tinylab.losses.layer_map", "tinylab.losses.TinyBertLoss"),
         why="this exercise asks you to write g(m) yourself; layer_map is what the checker "
             "compares you with",
         hint="Number student layers m = 1..M and teacher layers 1..N (0 is the embedding "
              "output). Uniform skips N/M teacher layers per student layer, so student layer M "
              "meets teacher layer N; top keeps the last M teacher layers (N-M+1..N); bottom "
              "the first M (1..M).")


# -- 2. the padding-masked attention MSE --------------------------------------------------------

def masked_attention_mse(student_scores: torch.Tensor, teacher_scores: torch.Tensor,
                         attention_mask: torch.Tensor) -> torch.Tensor:
    """Mean of (A^S - A^T)^2 over heads and the (query, key) pairs where both are real tokens.

    Shapes: scores (B, H, L, L); attention_mask (B, L), 1 = real token, 0 = padding.
    """
    real = attention_mask.bool()
    pairs = real[:, None, :, None] & real[:, None, None, :]        # (B, 1, L, L)
    pairs = pairs.expand_as(student_scores)                         # (B, H, L, L)
    diff = student_scores[pairs] - teacher_scores[pairs]            # only real pairs: no inf
    return diff.pow(2).mean()


def _attention_cases(seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Random scores whose padded key columns hold finfo.min, as Hugging Face returns them."""
    gen = torch.Generator().manual_seed(seed)
    cases = []
    for lengths, heads, width in (([5, 3, 4], 2, 5), ([2, 6], 3, 6), ([4, 4], 2, 4)):
        batch = len(lengths)
        mask = torch.zeros(batch, width, dtype=torch.long)
        for b, n in enumerate(lengths):
            mask[b, :n] = 1
        additive = (1 - mask[:, None, None, :].float()) * torch.finfo(torch.float32).min
        student = torch.randn(batch, heads, width, width, generator=gen) + additive
        teacher = 2 * torch.randn(batch, heads, width, width, generator=gen) + additive
        cases.append((student, teacher, mask))
    return cases


def _check_masked_attention(candidate) -> None:
    from tinylab.losses import attention_mse

    for student, teacher, mask in _attention_cases():
        got = candidate(student.clone(), teacher.clone(), mask.clone())
        assert isinstance(got, torch.Tensor), f"return a tensor, got {type(got).__name__}"
        assert got.dim() == 0, f"return a scalar (0-dim tensor), got shape {tuple(got.shape)}"
        lengths = mask.sum(1).tolist()
        assert torch.isfinite(got), (f"lengths {lengths}: the loss is {got.item()}. Padded key "
                                     f"columns hold finfo.min; select the real (query, key) "
                                     f"pairs before you subtract and square")
        expected = attention_mse(student, teacher, mask)
        everything = (student - teacher).pow(2).mean()
        if torch.allclose(got, everything) and not torch.allclose(everything, expected):
            raise AssertionError(f"lengths {lengths}: got {got.item():.6g}, expected "
                                 f"{expected.item():.6g}. That is the mean over every entry: "
                                 f"the padded pairs (finfo.min on both sides, difference 0) "
                                 f"dilute it. Average over the real (query, key) pairs only")
        keys_only = _keys_only_mse(student, teacher, mask)
        if torch.allclose(got, keys_only) and not torch.allclose(keys_only, expected):
            raise AssertionError(f"lengths {lengths}: got {got.item():.6g}, expected "
                                 f"{expected.item():.6g}. You masked padded keys but kept padded "
                                 f"query rows; a pair counts only if query AND key are real")
        torch.testing.assert_close(got, expected,
                                   msg=lambda m: f"lengths {lengths}, {student.shape[1]} heads: {m}")


def _keys_only_mse(student, teacher, mask) -> torch.Tensor:
    keys = mask.bool()[:, None, None, :].expand_as(student)
    return (student[keys] - teacher[keys]).pow(2).mean()


register("nb04.masked_attention_mse", checker=_check_masked_attention,
         reference=masked_attention_mse,
         forbidden=("tinylab.losses.attention_mse", "tinylab.losses.TinyBertLoss"),
         why="this exercise asks you to select the real (query, key) pairs yourself; "
             "attention_mse is what the checker compares you with",
         hint="Build a (B, 1, L, L) boolean of real pairs from the mask: real[:, None, :, None] & "
              "real[:, None, None, :]. Expand it to the scores' shape and index both tensors with "
              "it (so the finfo.min entries are never subtracted), then take the mean of the "
              "squared differences.")
