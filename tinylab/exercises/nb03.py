"""Exercises of notebook 03 (soft-label math): softmax with temperature, the soft cross-entropy
of TinyBERT's prediction layer, and its gradient.

Each exercise refuses the library call that would do it in one line (``torch.softmax``,
``F.cross_entropy``, autograd, ...): the checker compares the learner's function with exactly
those, on random inputs, and names the usual mistakes.
"""
from __future__ import annotations

import torch

from tinylab.exercises import assert_matches, register

# What only the checkers (and their helpers) need is imported inside them: the answer key
# copies this module's top-level imports into every solution cell
# (tinylab.course.answer_key), and the learner's notebook should not receive them.


def _inputs(seed: int = 0) -> list[tuple[torch.Tensor, float]]:
    """Test cases: random logits of a few shapes, small and large temperatures, huge logits."""
    gen = torch.Generator().manual_seed(seed)
    cases = [(torch.randn(5, generator=gen) * 3, t) for t in (0.5, 1.0, 2.0, 10.0)]
    cases.append((torch.randn(4, 3, generator=gen) * 3, 4.0))          # a batch: softmax per row
    cases.append((torch.tensor([1000.0, 999.0, 990.0]), 1.0))           # exp(1000) overflows
    return cases


# -- 1. softmax with temperature -----------------------------------------------------------------

def softmax_with_temperature(logits: torch.Tensor, T: float) -> torch.Tensor:
    """p_i = exp(z_i / T) / sum_j exp(z_j / T) over the last dimension, computed stably."""
    scaled = logits / T
    scaled = scaled - scaled.max(dim=-1, keepdim=True).values   # same result, no overflow
    exp = scaled.exp()
    return exp / exp.sum(dim=-1, keepdim=True)


def _check_softmax(candidate) -> None:
    for logits, t in _inputs():
        got = candidate(logits.clone(), t)
        assert isinstance(got, torch.Tensor), f"return a tensor, got {type(got).__name__}"
        assert got.shape == logits.shape, (f"logits of shape {tuple(logits.shape)} gave shape "
                                           f"{tuple(got.shape)}; keep the shape")
        assert torch.isfinite(got).all(), (f"non-finite probabilities for logits {logits.tolist()}"
                                           f" (overflow? subtract the maximum logit first)")
        torch.testing.assert_close(got, torch.softmax(logits / t, dim=-1),
                                   msg=lambda m: f"T={t}, logits shape {tuple(logits.shape)}: {m}")


SOFTMAX_FUNCTIONS = (
    "torch.softmax", "torch.log_softmax", "torch._softmax", "torch._log_softmax",
    "torch.special.softmax", "torch.special.log_softmax",
    "torch.nn.functional.softmax", "torch.nn.functional.log_softmax",
    "torch.nn.functional.softmin", "torch.Tensor.softmax", "torch.Tensor.log_softmax",
    "torch.nn.Softmax", "torch.nn.LogSoftmax", "torch.nn.Softmin",
    "scipy.special.softmax", "scipy.special.log_softmax",
)

register("nb03.softmax_with_temperature", checker=_check_softmax,
         reference=softmax_with_temperature, forbidden=SOFTMAX_FUNCTIONS,
         why="this exercise asks you to write the softmax yourself (torch.exp and sums are "
             "fine; torch.logsumexp too)",
         hint=("Softmax is exp, then divide by the sum, over the last dimension. What does "
               "exp(1000) give in float32? And what happens to a softmax when every logit moves "
               "by the same amount?",
               "Divide the logits by T, then subtract each row's largest value (the result does "
               "not change, and exp() can no longer overflow); exponentiate, and divide by the "
               "row sums, keeping that dimension so the division broadcasts row by row."))


# -- 2. the gradient of the soft loss --------------------------------------------------------------

def soft_loss_gradient(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
                       T: float) -> torch.Tensor:
    """d/dz_S of -sum_i p_T,i log p_S,i with p = softmax(z / T): (p_S - p_T) / T."""
    p_student = torch.softmax(student_logits / T, dim=-1)
    p_teacher = torch.softmax(teacher_logits / T, dim=-1)
    return (p_student - p_teacher) / T


def _check_gradient(candidate) -> None:
    gen = torch.Generator().manual_seed(1)
    for t in (1.0, 2.0, 5.0):
        z_s = torch.randn(6, generator=gen) * 2
        z_t = torch.randn(6, generator=gen) * 2
        leaf = z_s.clone().requires_grad_(True)
        loss = -(torch.softmax(z_t / t, -1) * torch.log_softmax(leaf / t, -1)).sum()
        (expected,) = torch.autograd.grad(loss, leaf)
        with torch.no_grad():
            got = candidate(z_s.clone(), z_t.clone(), t)
        assert isinstance(got, torch.Tensor), f"return a tensor, got {type(got).__name__}"
        assert got.shape == z_s.shape, f"expected shape {tuple(z_s.shape)}, got {tuple(got.shape)}"
        torch.testing.assert_close(got, expected, msg=lambda m: f"T={t}: {m}")


register("nb03.soft_loss_gradient", checker=_check_gradient, reference=soft_loss_gradient,
         forbidden=("torch.autograd.grad", "torch.autograd.backward", "torch.Tensor.backward",
                    "torch.autograd.functional.jacobian", "torch.autograd.functional.vjp",
                    "torch.autograd.forward_ad.make_dual", "torch.func.grad",
                    "torch.func.grad_and_value", "torch.func.vjp", "torch.func.jacrev",
                    "torch.func.jacfwd"),
         why="this exercise asks you to derive the gradient by hand; autograd is what the "
             "checker compares you with",
         hint=("Write the loss as a function of the student's logits alone, "
               "-sum_i p_T,i log softmax(z / T)_i, and differentiate by hand: what is the "
               "derivative of log softmax(u)_i with respect to u_j, and what does u = z / T add? "
               "(The checker calls your function under torch.no_grad(): no autograd.)",
               "d log softmax(u)_i / du_j = [i = j] - softmax(u)_j. Weighted by p_T,i and summed "
               "over i (the weights add up to 1), the minus sign turns it into 'student "
               "probability minus teacher probability' at j; the inner derivative du/dz is 1/T. "
               "Compute both probabilities at the same temperature T."))


# -- 3. the soft cross-entropy with temperature ------------------------------------------------

def soft_cross_entropy(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
                       T: float) -> torch.Tensor:
    """TinyBERT's prediction-layer loss (L_pred; Hinton et al. 2015): a scalar.

    Shapes: logits (B, C). With p_T = softmax(z_T / T) and log p_S = log_softmax(z_S / T)::

        L = (1/B) sum_b  -sum_c p_T[b, c] * log p_S[b, c]
    """
    scaled_student = student_logits / T
    log_p_student = scaled_student - torch.logsumexp(scaled_student, dim=-1, keepdim=True)
    scaled_teacher = teacher_logits / T
    p_teacher = (scaled_teacher - torch.logsumexp(scaled_teacher, dim=-1, keepdim=True)).exp()
    return -(p_teacher * log_p_student).sum(dim=-1).mean()


def _soft_ce_cases(seed: int = 5) -> list[tuple[torch.Tensor, torch.Tensor, float]]:
    """(student logits, teacher logits, T): batches of several sizes, T below, at and above 1.

    The first case (B=4, C=3, T=2) tells every typical mistake apart from the right answer.
    """
    gen = torch.Generator().manual_seed(seed)
    cases = []
    for batch, classes, t in ((4, 3, 2.0), (6, 2, 4.0), (3, 5, 1.0), (5, 4, 0.5), (1, 3, 8.0)):
        student = torch.randn(batch, classes, generator=gen) * 2
        teacher = torch.randn(batch, classes, generator=gen) * 3
        cases.append((student, teacher, t))
    return cases


def _soft_ce_mistakes(student: torch.Tensor, teacher: torch.Tensor, t: float
                      ) -> dict[str, torch.Tensor]:
    """What the usual wrong versions of the loss return, keyed by the message that names them."""
    import torch.nn.functional as F

    p_t, log_p_t = F.softmax(teacher / t, -1), F.log_softmax(teacher / t, -1)
    log_p_s = F.log_softmax(student / t, -1)
    per_class = -p_t * log_p_s
    return {
        "the student's logits are not divided by T (both sides need the same temperature)":
            -(p_t * F.log_softmax(student, -1)).sum(-1).mean(),
        "the teacher's logits are not divided by T (both sides need the same temperature)":
            -(F.softmax(teacher, -1) * log_p_s).sum(-1).mean(),
        "that is KL(p_T || p_S), the cross-entropy minus the teacher's entropy H(p_T); this "
        "exercise asks for the cross-entropy itself":
            (p_t * (log_p_t - log_p_s)).sum(-1).mean(),
        "the targets are the teacher's log-probabilities; the target is the probability "
        "distribution p_T = softmax(z_T / T)":
            -(log_p_t * log_p_s).sum(-1).mean(),
        "the loss is summed over the batch; take the mean over the B examples (sum over the "
        "classes only)":
            per_class.sum(),
        "the loss is averaged over the classes too (the official TinyBERT code's 1/C); sum "
        "over the classes, then average over the batch":
            per_class.mean(),
        "teacher and student are swapped: the target is the teacher's p_T, the log is the "
        "student's":
            -(F.softmax(student / t, -1) * log_p_t).sum(-1).mean(),
        "the loss is multiplied by T^2 (Hinton et al.'s factor for combined losses); this "
        "exercise asks for the plain cross-entropy":
            per_class.sum(-1).mean() * t ** 2,
    }


def _check_soft_ce(candidate) -> None:
    import torch.nn.functional as F

    for student, teacher, t in _soft_ce_cases():
        leaf = student.clone().requires_grad_(True)
        got = candidate(leaf, teacher.clone(), t)
        assert isinstance(got, torch.Tensor), f"return a tensor, got {type(got).__name__}"
        assert got.dim() == 0, (f"return a scalar (0-dim tensor, the batch mean), got shape "
                                f"{tuple(got.shape)}")
        p_t = F.softmax(teacher / t, -1)
        expected = -(p_t * F.log_softmax(student / t, -1)).sum(-1).mean()
        where = f"B={student.shape[0]}, C={student.shape[1]}, T={t}"
        assert torch.isfinite(got), f"{where}: the loss is {got.item()}"
        assert_matches(got, expected, lambda: _soft_ce_mistakes(student, teacher, t), where)
        assert got.requires_grad, (f"{where}: the loss does not depend on the student's logits "
                                   f"any more (a .detach(), .item() or torch.no_grad() inside?); "
                                   f"training needs its gradient")
        (grad,) = torch.autograd.grad(got, leaf)
        by_formula = (F.softmax(student / t, -1) - p_t) / (t * student.shape[0])
        torch.testing.assert_close(grad, by_formula, rtol=1e-4, atol=1e-6,
                                   msg=lambda m: f"{where}: the gradient w.r.t. the student "
                                                 f"logits is not (p_S - p_T) / (T B): {m}")


register("nb03.soft_cross_entropy", checker=_check_soft_ce, reference=soft_cross_entropy,
         forbidden=("tinylab.losses.soft_cross_entropy", "tinylab.losses.kd_kl_div",
                    "tinylab.losses.hinton_kd_loss", "tinylab.losses.TinyBertLoss",
                    "torch.nn.functional.cross_entropy", "torch.nn.functional.kl_div",
                    "torch.nn.CrossEntropyLoss", "torch.nn.KLDivLoss", "torch.kl_div",
                    "torch._C._nn.cross_entropy_loss",
                    "torch.distributions.kl.kl_divergence"),
         why="this exercise asks you to write the loss from its formula (your softmax, "
             "torch.log and torch.log_softmax are fine)",
         hint=("Both logit tensors get the same temperature. Which model gives the target "
               "distribution, and which one goes inside the log? Over which axis do you sum, "
               "and over which do you average?",
               "The target is the teacher's softmax at T (your softmax_with_temperature gives "
               "it); inside the log, the student's probabilities at T (a log-softmax, or the log "
               "of your softmax). Multiply them, sum over the classes, negate, and average over "
               "the batch: a scalar that keeps its gradient."))
