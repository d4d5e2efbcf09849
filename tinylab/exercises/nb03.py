"""Exercises of notebook 03 (soft-label math): softmax with temperature, the soft-loss gradient."""
from __future__ import annotations

import torch

from tinylab.exercises import register


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
         hint="Divide the logits by T, subtract the largest value of each row (softmax does not "
              "change when every logit moves by the same amount, and exp() no longer overflows), "
              "exponentiate, and divide by the row sum (dim=-1, keepdim=True).")


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
         hint="Write the chain rule through log_softmax(z / T): d(-sum_i p_T,i log p_S,i)/dz_j = "
              "(p_S,j - p_T,j) / T, with both p computed at the same temperature T. No autograd "
              "needed (the checker calls your function under torch.no_grad()).")
