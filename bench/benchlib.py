"""What the benchmark scripts share: budgets, machine facts, FLOP counts, result files.

The scripts in ``bench/`` are thin drivers around the ``tinylab`` package; this module holds
only what is about *measuring*, not about distilling:

* :data:`BUDGETS` - how much work a benchmark does (``ci`` smoke test, ``bench`` = a
  documented reduction of the ``quick`` profile that fits this 2-core machine, ``quick``);
* :func:`machine_info` - CPU, cores, threads, memory, load average, library versions;
* :func:`forward_flops` and :func:`matmul_peak` - the FLOP model and the machine's measured
  matrix-multiply peak (the physical limit the achieved FLOP/s are compared with);
* :func:`write_json` / :func:`write_text` (atomic) and :func:`markdown_table`.

FLOP model (multiply-add = 2 FLOPs), for a BERT of L layers, width d, feed-forward width f,
on a padded batch of B sequences of T tokens::

    per token, per layer:   2 * (4 d^2 + 2 d f)        Q, K, V, O and the two FFN matrices
    per sequence, per layer: 2 * 2 * T^2 * d            QK^T and (softmax) V
    per sequence:           2 * d^2 + 2 * d * C         pooler and classifier
    forward  = B * (T * L * 2(4d^2 + 2df) + L * 4 T^2 d + 2d^2 + 2dC)
    training step = 3 x forward                          backward ~ 2 x forward

i.e. ~2 x (parameters in matrix multiplies) x tokens, plus attention's 2 x 2 x T^2 x d per
layer. Embedding look-ups, layer norms, softmax and element-wise losses are not counted (they
are memory-bound and small in FLOPs). Padded positions are counted: the hardware computes them.
"""
from __future__ import annotations

import json
import math
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"

# --------------------------------------------------------------------------------------------
# Budgets
# --------------------------------------------------------------------------------------------

# ``bench`` keeps the quick profile's models, data splits, teacher and optimiser settings and
# shrinks only how much data the student stages see, so it reuses the quick profile's
# fine-tuned teacher (same cache key).
#: budget -> (profile, preset of ``tinylab.config.PRESETS`` or None, description).
BUDGETS: dict[str, tuple[str, str | None, str]] = {
    "ci": ("ci", None, "the ci profile: a few hundred examples, one epoch per stage (smoke test; "
                       "the numbers mean nothing)"),
    "bench": ("quick", "bench",
              "the quick profile (same teacher, general distillation, splits, learning rates; "
              "the 3-layer student the tables were measured with) with the task stages "
              "shrunk: 1,200 task sources with up to 2 augmentations each, 300 steps per task "
              "stage (preset 'bench' in tinylab.config.PRESETS)"),
    "quick": ("quick", None, "the quick profile unchanged (the course's budget; several hours "
                             "for the full ablation grid on a 2-core CPU)"),
    "notebook": ("quick", "two-stage", "the setting notebooks 05 and 06 train with: the quick "
                                       "profile with the step caps of preset 'two-stage'"),
}


def budget_config(budget: str, extra: Iterable[str] = ()):
    """The ``tinylab.config.Config`` of a budget (plus extra ``key=value`` overrides)."""
    from tinylab.config import get_config

    if budget not in BUDGETS:
        raise ValueError(f"unknown budget {budget!r}; choose one of {', '.join(BUDGETS)}")
    profile, preset, _ = BUDGETS[budget]
    return get_config(profile, list(extra), preset=preset)


def budget_record(budget: str, extra: Sequence[str] = ()) -> dict[str, Any]:
    """What a result file says about the budget that produced it."""
    from tinylab.config import preset_overrides

    profile, preset, description = BUDGETS[budget]
    return {"budget": budget, "profile": profile,
            "overrides": [*preset_overrides(preset, profile), *extra],
            "description": description}


def start(args) -> tuple[int, dict[str, Any], Path, Any]:
    """What every benchmark's ``main`` does first: quiet the libraries, set the thread count
    (``args.threads``), record the machine, and return ``(threads, machine, results folder,
    config)`` for ``args.budget`` (``args.output`` overrides the folder)."""
    quiet_libraries()
    threads = set_threads(args.threads)
    return (threads, machine_info(), results_dir(args.budget, args.output),
            budget_config(args.budget))


def quiet_libraries() -> None:
    """The environment the Makefile sets, for scripts started by hand."""
    for key, value in (("TRANSFORMERS_VERBOSITY", "error"), ("HF_HUB_OFFLINE", "1"),
                       ("HF_DATASETS_OFFLINE", "1"), ("TOKENIZERS_PARALLELISM", "false"),
                       ("HF_HUB_DISABLE_PROGRESS_BARS", "1")):
        os.environ.setdefault(key, value)
    import warnings

    warnings.filterwarnings("ignore", message=".*torch.ao.quantization is deprecated.*")
    warnings.filterwarnings("ignore", message=".*quantize_per_tensor.*deprecated.*")


def thread_budget() -> int:
    """The torch threads a benchmark may use in all: ``OMP_NUM_THREADS`` when it is set (``make
    test`` sets 1, so that its parallel test workers do not oversubscribe the cores: threads
    that wait for each other on a shared core slow down many times over), else one per core."""
    value = os.environ.get("OMP_NUM_THREADS", "").strip()
    if value.isdigit() and int(value) >= 1:
        return int(value)
    return os.cpu_count() or 1


def set_threads(threads: int | None) -> int:
    """Use ``threads`` torch threads (``None``: torch's default, one per core)."""
    import torch

    if threads is not None:
        if threads < 1:
            raise ValueError(f"--threads must be >= 1, got {threads}")
        torch.set_num_threads(threads)
    return torch.get_num_threads()


# --------------------------------------------------------------------------------------------
# The machine
# --------------------------------------------------------------------------------------------

def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _memory_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 2 ** 20, 1)
    except OSError:
        pass
    return None


def load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def machine_info() -> dict[str, Any]:
    """CPU model, cores, torch threads, memory, load average and library versions."""
    import torch

    from tinylab.pipeline import library_versions

    flags = ""
    try:
        text = Path("/proc/cpuinfo").read_text()
        flags = next((l for l in text.splitlines() if l.startswith("flags")), "")
    except OSError:
        pass
    simd = [f for f in ("avx512f", "avx512_bf16", "amx_tile", "avx2", "fma") if f" {f}" in flags]
    return {"cpu": _cpu_model(), "cores": os.cpu_count(), "simd": simd,
            "torch_threads": torch.get_num_threads(), "memory_gib": _memory_gib(),
            "load_average_1_5_15min": load_average(), "versions": library_versions(),
            "date_utc": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}


def machine_line(info: Mapping[str, Any]) -> str:
    """One Markdown line describing the machine a result came from."""
    v = info.get("versions", {})
    load = info.get("load_average_1_5_15min")
    text = (f"Machine: {info['cpu']}, {info['cores']} cores ({', '.join(info['simd']) or 'no AVX'}), "
            f"{info['memory_gib']} GiB RAM, torch {v.get('torch')} with "
            f"{info['torch_threads']} thread(s), transformers {v.get('transformers')}, "
            f"Python {v.get('python')}; {info['date_utc']}")
    if load:
        text += f"; load average at start {load[0]}"
        if info.get("cores") and load[0] > info["cores"]:
            text += " (**busy machine: other processes shared the CPU, timings are pessimistic**)"
    return text + "."


# --------------------------------------------------------------------------------------------
# FLOPs
# --------------------------------------------------------------------------------------------

def model_shape(config) -> dict[str, int]:
    """The numbers the FLOP model needs, from a ``BertConfig``."""
    return {"layers": config.num_hidden_layers, "d": config.hidden_size,
            "ffn": config.intermediate_size, "classes": config.num_labels}


def forward_flops(shape: Mapping[str, int], batch: int, length: int) -> float:
    """FLOPs of one forward pass of a BERT classifier on a padded ``batch x length`` input
    (the formula in the module docstring)."""
    L, d, f, c = shape["layers"], shape["d"], shape["ffn"], shape["classes"]
    per_token = L * 2 * (4 * d * d + 2 * d * f)
    per_sequence = L * 4 * length * length * d + 2 * d * d + 2 * d * c
    return float(batch * (length * per_token + per_sequence))


def matmul_peak(n: int = 2048, repeats: int = 5, threads: int | None = None,
                dtype: str = "fp32") -> dict[str, Any]:
    """Best GEMM rate of this machine in ``dtype`` (``"fp32"`` or ``"bf16"``): ``C = A @ B``
    with ``n x n`` matrices, best of ``repeats`` (after one warm-up), ``2 n^3`` FLOPs each.
    ``threads`` torch threads (``None``: the current setting; restored afterwards). A CPU
    with ``avx512_bf16`` or AMX multiplies bf16 matrices about twice as fast as fp32 ones, so
    utilisation is only meaningful against the best of the two."""
    import torch

    torch_dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[dtype]
    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        a, b = torch.randn(n, n, dtype=torch_dtype), torch.randn(n, n, dtype=torch_dtype)
        out = torch.empty(n, n, dtype=torch_dtype)
        torch.matmul(a, b, out=out)  # warm-up: allocate, choose the kernel
        best = math.inf
        for _ in range(repeats):
            start = time.perf_counter()
            torch.matmul(a, b, out=out)
            best = min(best, time.perf_counter() - start)
        return {"n": n, "dtype": dtype, "threads": torch.get_num_threads(), "best_seconds": best,
                "flops_per_s": 2 * n ** 3 / best, "repeats": repeats}
    finally:
        torch.set_num_threads(before)


# --------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------

def write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` atomically (the package's helper: temporary file, fsync, rename)."""
    from tinylab.atomic import atomic_write_text

    return atomic_write_text(path, text)


def _plain(obj: Any) -> Any:
    if isinstance(obj, float) and not math.isfinite(obj):
        return str(obj)
    if isinstance(obj, Mapping):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if hasattr(obj, "item") and callable(obj.item):  # numpy / torch scalars
        return obj.item()
    return obj


def write_json(path: str | Path, data: Any) -> Path:
    """Write ``data`` as indented JSON, atomically."""
    return write_text(path, json.dumps(_plain(data), indent=1) + "\n")


def results_dir(budget: str, output: str | Path | None = None) -> Path:
    """``bench/results/<budget>/`` unless ``--output`` says otherwise."""
    return Path(output) if output is not None else RESULTS_DIR / budget


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[Any]],
                   align: str | None = None) -> str:
    """A GitHub Markdown table; ``align`` is one letter per column (``l`` or ``r``)."""
    header = [str(h) for h in header]
    align = align or "l" + "r" * (len(header) - 1)
    marks = ["---:" if a == "r" else ":---" for a in align]
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(marks) + " |"]
    for row in rows:
        lines.append("| " + " | ".join(str(c) for c in row) + " |")
    return "\n".join(lines)


def command_line() -> str:
    """The command that is running, as a reader would type it (for the Markdown fragments)."""
    script = Path(sys.argv[0])
    try:
        script = script.resolve().relative_to(REPO_DIR)
    except ValueError:
        pass
    return " ".join([".venv/bin/python", str(script), *sys.argv[1:]])


def fmt_si(value: float, unit: str = "") -> str:
    """``1.23e9`` -> ``"1.23 G"`` + unit."""
    for factor, prefix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= factor:
            return f"{value / factor:.3g} {prefix}{unit}"
    return f"{value:.3g} {unit}".rstrip()
