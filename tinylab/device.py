"""Where tensors live and in which precision the arithmetic runs: one story for CPU, CUDA and MPS.

Two settings decide it, both in :class:`tinylab.config.Config` (and in ``$TINYLAB_DEVICE`` /
``$TINYLAB_PRECISION``, which a notebook or ``tinylab distill`` picks up):

* ``device``: ``"auto"`` (CUDA if PyTorch sees a GPU, else Apple's MPS, else the CPU),
  ``"cpu"``, ``"cuda"`` or ``"mps"``. :func:`resolve_device` turns it into a
  ``torch.device`` and refuses, in one line, a device this machine does not have.
* ``precision``: ``"fp32"`` (the default), ``"bf16"``, ``"fp16"`` or ``"auto"`` (bf16 where the
  hardware computes it natively, else fp32). Mixed precision means *autocast*: matrix
  multiplies run in 16 bits, while the master weights, the optimiser state and the losses stay
  in float32 (Micikevicius et al. 2018, "Mixed Precision Training"). Accelerate applies it
  (``Accelerator(mixed_precision=...)``); :func:`resolve_precision` checks the hardware first.

:func:`resolve_device_and_precision` resolves the two settings together, and it is the one place
that does: the pipeline's checks before any work, :func:`make_accelerator` (the training
device and precision) and the cache keys (``precision="auto"`` enters a key as what it
resolves to, :mod:`tinylab.distill.cache`) all call it.

The rules the rest of tinylab keeps, so that the same code runs on every device:

* every public function that returns a model says in its docstring where the model is;
* batches follow the model: ``to_device(batch, model_device(model))`` (or ``model.device``),
  never a hard-coded ``"cpu"`` or ``"cuda"``;
* cached teacher outputs stay in CPU memory (a GPU has far less of it) and move to the
  device one batch at a time;
* timing on a GPU calls :func:`synchronize` before reading the clock (CUDA kernels run
  asynchronously: without it one times the launch, not the work).
"""
from __future__ import annotations

import platform
from functools import lru_cache
from typing import Any, Mapping

import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState, PartialState
from accelerate.utils import DistributedDataParallelKwargs

__all__ = ["DEVICES", "PRECISIONS", "resolve_device", "resolve_precision",
           "resolve_device_and_precision", "make_accelerator", "cpu_supports_bf16", "to_device",
           "model_device", "synchronize", "describe", "accelerate_precision", "DeviceError"]

DEVICES = ("auto", "cpu", "cuda", "mps")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")


class DeviceError(ValueError):
    """A device or precision this machine cannot provide (a ``ValueError``: bad input)."""


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def resolve_device(setting: str | torch.device = "auto") -> torch.device:
    """The ``torch.device`` for a ``device`` setting; checks that this machine has it.

    ``"auto"``: ``cuda`` if ``torch.cuda.is_available()``, else ``mps``, else ``cpu``.
    An explicit ``"cuda"`` on a machine without a usable GPU raises :class:`DeviceError` with
    one line that names the torch build and the fix, before any data or model is loaded.
    """
    name = str(setting).strip().lower()
    if name not in DEVICES:
        raise DeviceError(f"unknown device {setting!r}; use one of {', '.join(DEVICES)}")
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps") if _mps_available() else torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        build = f"torch {torch.__version__}" + (
            ", a CPU-only build" if torch.version.cuda is None else f", CUDA {torch.version.cuda}")
        raise DeviceError(f"device=cuda but PyTorch sees no CUDA GPU on this machine ({build}); "
                          f"use device=auto or device=cpu (on Colab: Runtime > Change runtime "
                          f"type > GPU)")
    if name == "mps" and not _mps_available():
        raise DeviceError("device=mps but Apple's MPS backend is not available here; use "
                          "device=auto or device=cpu")
    return torch.device(name)


@lru_cache(maxsize=1)
def cpu_supports_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (x86: ``avx512_bf16`` or AMX; Arm: ``bf16``).

    Without it PyTorch still accepts bf16 on the CPU, but emulates it and runs slower than
    float32, so ``precision="auto"`` stays at fp32 there.
    """
    flags: set[str] = set()
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as handle:
            for line in handle:
                if line.lower().startswith(("flags", "features")):
                    flags.update(line.split(":", 1)[1].split())
    except OSError:
        pass
    if platform.system() == "Darwin" and platform.machine() == "arm64":
        return True  # Apple M2 and later implement bf16; M1 emulates it (still correct)
    return bool(flags & {"avx512_bf16", "amx_bf16", "bf16"})


def resolve_precision(setting: str = "fp32", device: torch.device | str = "cpu") -> str:
    """``"fp32"``, ``"bf16"`` or ``"fp16"`` for a ``precision`` setting on ``device``.

    ``"auto"``: bf16 on a GPU that supports it (Ampere and newer) or a CPU with native bf16
    (:func:`cpu_supports_bf16`), otherwise fp32. An explicit 16-bit precision the hardware
    lacks raises :class:`DeviceError` in one line: fp16 autocast needs CUDA; bf16 needs a
    bf16-capable GPU or CPU.
    """
    name = str(setting).strip().lower()
    if name not in PRECISIONS:
        raise DeviceError(f"unknown precision {setting!r}; use one of {', '.join(PRECISIONS)}")
    device = torch.device(device)
    if device.type == "cuda":
        bf16 = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
        where = "this GPU"
    elif device.type == "mps":
        bf16, where = False, "MPS"
    else:
        bf16, where = cpu_supports_bf16(), "this CPU (no avx512_bf16 or AMX)"
    if name == "auto":
        return "bf16" if bf16 else "fp32"
    if name == "bf16" and not bf16:
        raise DeviceError(f"precision=bf16 is not supported natively by {where}; use "
                          f"precision=fp32 or precision=auto")
    if name == "fp16" and device.type != "cuda":
        raise DeviceError(f"precision=fp16 needs a CUDA GPU (device is {device.type}); use "
                          f"precision=bf16 where supported, or fp32")
    return name


def resolve_device_and_precision(device: str | torch.device = "auto", precision: str = "fp32"
                                 ) -> tuple[torch.device, str]:
    """``(torch.device, "fp32" | "bf16" | "fp16")`` for the ``device`` and ``precision``
    settings of a run: :func:`resolve_device`, then :func:`resolve_precision` on that device.

    Raises :class:`DeviceError` in one line when this machine lacks either. ``"auto"``
    precision depends on the device (bf16 where it is native, else fp32), which is why the two
    are resolved together.
    """
    target = resolve_device(device)
    return target, resolve_precision(precision, target)


def make_accelerator(device: str = "auto", precision: str = "fp32", **kwargs: Any):
    """An ``accelerate.Accelerator`` for ``device`` and ``precision`` (``Config.device`` /
    ``Config.precision``).

    Both are checked first (:func:`resolve_device_and_precision`): a device or precision this
    machine lacks is a one-line :class:`DeviceError`. ``device="cpu"`` sets Accelerate's
    ``cpu=True``, which also makes several processes started by ``torchrun`` on a machine
    without a GPU a multi-process CPU run (gloo), so ``torchrun --nproc_per_node 2 ... tinylab
    distill`` trains data-parallel on two CPU processes. (``accelerate launch --cpu
    --num_processes 2`` starts a single process on such a machine; use ``torchrun``.)
    ``precision`` becomes ``mixed_precision`` (autocast; the master weights stay fp32).

    Accelerate keeps one mixed precision per process. In a single process (a notebook, a
    benchmark comparing fp32 with bf16) nothing else holds on to it, so asking for another
    precision starts Accelerate's state afresh; in a multi-process run it is refused in one
    line (every process must train in the same precision).
    """
    target, resolved = resolve_device_and_precision(device, precision)
    kwargs.setdefault("cpu", target.type == "cpu")
    kwargs.setdefault("mixed_precision", accelerate_precision(resolved))
    _allow_precision_change(kwargs["mixed_precision"])
    # Ablations (e.g. hidden weight 0) leave some parameters without a gradient; DDP must be
    # told to expect that, or it stops with "Expected to have finished reduction".
    kwargs.setdefault("kwargs_handlers",
                      [DistributedDataParallelKwargs(find_unused_parameters=True)])
    return Accelerator(**kwargs)


def _allow_precision_change(mixed_precision: str) -> None:
    """Let a single process switch Accelerate's mixed precision (see :func:`make_accelerator`)."""
    if not AcceleratorState._shared_state:
        return  # nothing set yet
    current = AcceleratorState._shared_state.get("_mixed_precision")
    if current is None or current == mixed_precision:
        return
    if PartialState().num_processes > 1:
        raise DeviceError(f"this run's processes already train with precision {current!r}; "
                          f"one run cannot switch to {mixed_precision!r}: restart it with the "
                          f"precision setting you want")
    AcceleratorState._reset_state()  # Accelerate's own reset; the process state is kept


def accelerate_precision(precision: str) -> str:
    """Accelerate's ``mixed_precision`` name for a resolved precision (``"no"`` for fp32)."""
    return {"fp32": "no", "bf16": "bf16", "fp16": "fp16"}[precision]


def model_device(model: torch.nn.Module) -> torch.device:
    """The device of a model's first parameter (CPU for a model without parameters)."""
    try:
        return next(model.parameters()).device
    except StopIteration:
        return torch.device("cpu")


def to_device(batch: Mapping[str, Any], device: torch.device | str) -> dict[str, Any]:
    """A copy of ``batch`` (e.g. a tokenizer's output) with every tensor moved to ``device``.

    Other values (lists, strings) pass through unchanged. ``non_blocking`` lets a copy from
    pinned CPU memory overlap with GPU work; on the CPU it changes nothing.
    """
    device = torch.device(device)
    return {k: (v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v)
            for k, v in dict(batch).items()}


def synchronize(device: torch.device | str) -> None:
    """Wait until the device has finished its queued work (CUDA and MPS run asynchronously)."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps" and hasattr(torch, "mps"):
        torch.mps.synchronize()


def describe(device: torch.device | str, precision: str = "fp32") -> str:
    """A one-line description for reports, e.g. ``"cuda (NVIDIA T4), fp16"`` or ``"cpu, fp32"``."""
    device = torch.device(device)
    name = device.type
    if device.type == "cuda" and torch.cuda.is_available():
        name += f" ({torch.cuda.get_device_name(device)})"
    elif device.type == "cpu":
        name += f" ({torch.get_num_threads()} threads)"
    return f"{name}, {precision}"
