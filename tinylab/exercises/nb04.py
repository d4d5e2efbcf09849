"""Exercises of notebook 04 (the combined TinyBERT loss): the layer mapping g(m), the
padding-masked attention MSE, and the hidden-state MSE through the projection W_h.

Each checker compares the learner's function with the package's tested implementation in
:mod:`tinylab.losses` (or, for the hidden-state loss, with the formula written out) on inputs
chosen to catch the usual mistakes (0- vs 1-based layers, a student as deep as the teacher,
padded keys holding ``finfo.min``, rows of different lengths, padded positions holding ordinary
vectors, the projection on the wrong side), and refuses those implementations as answers.
"""
from __future__ import annotations

import torch

from tinylab.exercises import assert_matches, register

# What only the checkers (and their helpers) need is imported inside them: the answer key
# copies this module's top-level imports into every solution cell
# (tinylab.course.answer_key), and the learner's notebook should not receive them.


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
         hint=("Number the student layers m = 1..M and the teacher layers 1..N (0 is the "
               "embedding output, not a layer here). For each strategy, which teacher layer "
               "should the last student layer meet?",
               "Uniform: each student layer advances N/M teacher layers, so student layer M "
               "meets teacher layer N. Top: the last M teacher layers in order (N-M+1 .. N). "
               "Bottom: the first M (1 .. M)."))


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
         hint=("Padded key columns hold finfo.min in both tensors: what happens to them when "
               "you subtract and square? Which (query, key) pairs should count: think of the "
               "row and the column.",
               "Build a boolean of real pairs from the (B, L) mask: a pair counts when its query "
               "AND its key are real tokens, (B, 1, L, L) by broadcasting a row and a column "
               "view of the mask. Expand it to the scores' shape, select those entries of both "
               "tensors (finfo.min is then never subtracted) and average the squared "
               "differences."))


# -- 3. the hidden-state loss through the projection W_h -----------------------------------------

def hidden_loss(student_hidden: torch.Tensor, teacher_hidden: torch.Tensor,
                W_h: torch.nn.Linear, attention_mask: torch.Tensor) -> torch.Tensor:
    """MSE(H^S W_h, H^T) over the real tokens and the teacher's d_T features (L_hidn).

    Shapes: student_hidden (B, L, d_S), teacher_hidden (B, L, d_T), W_h an nn.Linear(d_S, d_T),
    attention_mask (B, L) with 1 = real token, 0 = padding. Returns a scalar.
    """
    projected = W_h(student_hidden)                          # (B, L, d_T): H^S W_h
    real = attention_mask.bool()                             # (B, L)
    diff = projected[real] - teacher_hidden[real]            # (real tokens, d_T)
    return diff.pow(2).mean()


def _hidden_cases(seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor, torch.nn.Linear,
                                                torch.Tensor]]:
    """(H^S, H^T, W_h, mask): padded rows of different lengths, whose padded positions hold
    ordinary vectors (as a BERT returns them). The first case has d_S == d_T, so projecting the
    wrong side runs instead of failing on shapes, and its W_h is not the identity."""
    gen = torch.Generator().manual_seed(seed)
    cases = []
    for lengths, d_s, d_t in (([5, 2, 3], 6, 6), ([4, 1], 4, 7), ([3, 3, 6, 2], 5, 8)):
        width = max(lengths)
        mask = torch.zeros(len(lengths), width, dtype=torch.long)
        for row, n in enumerate(lengths):
            mask[row, :n] = 1
        student = torch.randn(len(lengths), width, d_s, generator=gen)
        teacher = torch.randn(len(lengths), width, d_t, generator=gen) * 2
        projection = torch.nn.Linear(d_s, d_t)
        with torch.no_grad():
            projection.weight.copy_(torch.randn(d_t, d_s, generator=gen) * 0.5)
            projection.bias.copy_(torch.randn(d_t, generator=gen) * 0.1)
        cases.append((student, teacher, projection, mask))
    return cases


def _hidden_mistakes(student, teacher, projection, mask) -> dict[str, torch.Tensor]:
    """What the usual wrong versions of the loss return, keyed by the message that names them."""
    with torch.no_grad():
        projected = projection(student)
        real = mask.bool()
        squared = (projected - teacher).pow(2)                       # (B, L, d_T)
        per_token = squared.mean(-1)                                 # (B, L)
        width = teacher.shape[-1]
        mistakes = {
            "that is the mean over every position, padding included: padded tokens carry "
            "vectors too, and they are not text. Average over the real tokens only":
                squared.mean(),
            "you zeroed the padded positions but still divided by every position; divide by "
            "(number of real tokens) x d_T":
                (squared * real[..., None]).sum() / squared.numel(),
            "you summed over the d_T features; MSE averages over them too: divide by "
            "(number of real tokens) x d_T":
                squared.sum(-1)[real].mean(),
            "you averaged each sentence first, then the sentences, so a 2-token review weighs "
            "as much as a 40-token one; average over all real tokens of the batch at once":
                torch.stack([per_token[b, real[b]].mean() for b in range(len(mask))]).mean(),
            "that is the sum of the squared differences; MSE takes their mean":
                squared[real].sum(),
        }
        if student.shape[-1] == width:
            mistakes["you projected the teacher instead of the student: W_h maps the student's "
                     "d_S features into the teacher's d_T space, so compare W_h(H^S) with H^T"] = \
                (projection(teacher) - student).pow(2)[real].mean()
            mistakes["the student's states are not projected: compare W_h(H^S), not H^S, "
                     "with H^T"] = (student - teacher).pow(2)[real].mean()
    return mistakes


def _check_hidden_loss(candidate) -> None:
    import copy

    for student, teacher, projection, mask in _hidden_cases():
        lengths, d_s, d_t = mask.sum(1).tolist(), student.shape[-1], teacher.shape[-1]
        where = f"lengths {lengths}, d_S={d_s}, d_T={d_t}"
        theirs = copy.deepcopy(projection)
        leaf = student.clone().requires_grad_(True)
        try:
            got = candidate(leaf, teacher.clone(), theirs, mask.clone())
        except RuntimeError as err:
            if "mat1 and mat2" in str(err) or "shapes cannot be multiplied" in str(err):
                raise AssertionError(f"{where}: {err}. W_h is nn.Linear(d_S, d_T): apply it to "
                                     f"the student's (B, L, d_S) states, not to the teacher's "
                                     f"(B, L, d_T) ones") from None
            raise
        assert isinstance(got, torch.Tensor), f"return a tensor, got {type(got).__name__}"
        assert got.dim() == 0, f"return a scalar (0-dim tensor), got shape {tuple(got.shape)}"
        assert torch.isfinite(got), f"{where}: the loss is {got.item()}"
        mine = copy.deepcopy(projection)
        real = mask.bool()
        expected = (mine(student)[real] - teacher[real]).pow(2).sum() / (real.sum() * d_t)
        assert_matches(got, expected,
                       lambda: _hidden_mistakes(student, teacher, projection, mask), where)
        assert got.requires_grad, (f"{where}: the loss does not depend on the student or W_h "
                                   f"any more (a .detach(), .item() or torch.no_grad() inside?); "
                                   f"both are trained through it")
        got.backward()
        expected.backward()
        assert theirs.weight.grad is not None, (f"{where}: no gradient reached W_h; use the "
                                                f"W_h you were given (it is trained with the "
                                                f"student)")
        torch.testing.assert_close(theirs.weight.grad, mine.weight.grad, rtol=1e-4, atol=1e-6,
                                   msg=lambda m: f"{where}: the gradient w.r.t. W_h differs: {m}")


register("nb04.hidden_loss", checker=_check_hidden_loss, reference=hidden_loss,
         forbidden=("tinylab.losses.hidden_mse", "tinylab.losses.TinyBertLoss"),
         why="this exercise asks you to project and mask yourself; hidden_mse is what the "
             "checker compares you with",
         hint=("W_h maps d_S features to d_T: which of the two tensors does it apply to? "
               "Padded positions carry ordinary vectors: what should the mean run over?",
               "Project the student's states with W_h (an nn.Linear: call it), select the real "
               "tokens of both tensors with the boolean mask (boolean indexing leaves a "
               "(real tokens, d_T) matrix), subtract, square, and take one mean over all real "
               "tokens and all d_T features."))
