"""Exercise of notebook 07 (deploying the student): int8 weight quantization by hand.

Dynamic quantization (``torch.ao.quantization.quantize_dynamic``) stores each ``nn.Linear``
weight as 8-bit integers plus one float scale per tensor (symmetric, zero point 0)::

    s = max|W| / 127.5          q = clamp(round(W * (1/s)), -128, 127)          W ~ q * s

and quantizes the activations on the fly at run time. The checker compares the learner's
"fake quantization" (quantize, then dequantize) with what PyTorch itself stores.
"""
from __future__ import annotations

import warnings

import torch

from tinylab.exercises import register

# What only the checkers (and their helpers) need is imported inside them: the answer key
# copies this module's top-level imports into every solution cell
# (tinylab.course.answer_key), and the learner's notebook should not receive them.


def fake_quantize_int8(weight: torch.Tensor) -> torch.Tensor:
    """Symmetric per-tensor int8 quantization of ``weight``, returned dequantized (same shape)."""
    scale = weight.abs().max() / 127.5
    q = torch.clamp(torch.round(weight * (1.0 / scale)), -128, 127)   # as PyTorch rounds it
    return q * scale


def _torch_reference(weight: torch.Tensor) -> torch.Tensor:
    """What quantize_dynamic stores for a Linear with this weight, dequantized."""
    from torch.ao.quantization import quantize_dynamic

    layer = torch.nn.Sequential(torch.nn.Linear(weight.shape[1], weight.shape[0]))
    with torch.no_grad():
        layer[0].weight.copy_(weight)
    with warnings.catch_warnings():  # torch marks torch.ao.quantization as deprecated
        warnings.simplefilter("ignore")
        quantized = quantize_dynamic(layer, {torch.nn.Linear}, dtype=torch.qint8)
        return quantized[0].weight().dequantize()


def _check_fake_quantize(candidate) -> None:
    gen = torch.Generator().manual_seed(0)
    cases = [torch.randn(16, 32, generator=gen) * 0.05,
             torch.randn(8, 8, generator=gen) * 3.0,
             torch.rand(4, 12, generator=gen) + 0.5]          # all positive: symmetric still
    for weight in cases:
        with torch.no_grad():
            got = candidate(weight.clone())
        assert isinstance(got, torch.Tensor), f"return a tensor, got {type(got).__name__}"
        assert got.shape == weight.shape, (f"expected shape {tuple(weight.shape)}, got "
                                           f"{tuple(got.shape)}")
        expected = _torch_reference(weight)
        levels = torch.unique(got).numel()
        assert levels <= 256, (f"your result takes {levels} distinct values; int8 has only 256. "
                               f"Round W / s to integers before multiplying back by s")
        scale = float(weight.abs().max()) / 127.5
        off = (got.float() - expected).abs() > 1e-6
        # A value exactly halfway between two levels (the largest |W| lands on 127.5) may
        # round either way depending on W / s versus W * (1 / s): accept one step there.
        ratio = weight / scale
        ties = (ratio - ratio.floor() - 0.5).abs() < 1e-3
        one_step = ((got.float() - expected).abs() - scale).abs() < 1e-6
        if bool((off & ~(ties & one_step)).any()):
            torch.testing.assert_close(got.float(), expected, rtol=0, atol=1e-6,
                                       msg=lambda m: f"weight with max|W| = "
                                                     f"{weight.abs().max().item():.3g}: {m}")


register("nb07.fake_quantize_int8", checker=_check_fake_quantize, reference=fake_quantize_int8,
         forbidden=("torch.quantize_per_tensor", "torch.quantize_per_tensor_dynamic",
                    "torch.fake_quantize_per_tensor_affine", "torch.quantize_per_channel",
                    "torch.fake_quantize_per_channel_affine",
                    "torch.ao.quantization.quantize_dynamic",
                    "torch.ao.nn.quantized.dynamic.Linear"),
         why="this exercise asks you to compute the scale and round yourself; PyTorch's "
             "quantizer is what the checker compares you with",
         hint=("int8 has the integers -128..127, centred on 0 (symmetric: zero point 0). One "
               "scale for the whole tensor maps the largest |W| to the edge of that range; "
               "quantize, then multiply back.",
               "The scale is max|W| / 127.5 (255 steps across the range). Multiply W by the "
               "inverse of the scale, round to integers, clamp to the int8 range, and multiply "
               "back by the scale. (PyTorch multiplies by 1 / s; dividing by s can round a value "
               "exactly halfway between two levels the other way, which the checker accepts.)"))
