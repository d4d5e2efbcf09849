"""tinylab: learn (and do) TinyBERT-style knowledge distillation of Transformers.

The package mirrors the course notebooks, one module per idea (see ``docs/design.md``):
``config`` -> ``assets`` -> ``data`` -> ``models`` -> ``losses`` -> ``augment`` -> ``distill`` ->
``evaluate`` -> ``export`` / ``deploy`` (ONNX) -> ``plots``. Heavy modules (torch, transformers) are imported on first
use, so ``import tinylab`` and ``tinylab --help`` stay fast. The course tooling (running the
notebooks, what they call at run time, the answer key, cache packs, the GPU check) is the
subpackage :mod:`tinylab.course`.
"""
from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0.dev0"

# public name -> module that defines it
_EXPORTS = {
    "get_config": "config", "Config": "config", "PROFILES": "config",
    "fetch": "assets", "asset_path": "assets", "cache_dir": "assets",
    "load_task": "data", "load_general_corpus": "data", "tokenize": "data",
    "make_dataloader": "data",
    "load_teacher": "models", "build_student": "models", "use_attention_scores": "models",
    "check_compatible": "models", "SCORES_ATTN": "attention",
    "soft_cross_entropy": "losses", "kd_kl_div": "losses", "attention_mse": "losses",
    "hidden_mse": "losses", "layer_map": "losses", "TinyBertLoss": "losses",
    "augment_dataset": "augment",
    "finetune_teacher": "distill", "general_distillation": "distill",
    "task_distillation": "distill", "train_baseline": "distill", "History": "distill",
    "general_student": "distill",
    "evaluate_model": "evaluate", "count_parameters": "evaluate",
    "measure_latency": "evaluate", "compare_models": "evaluate",
    "export_student": "export", "export_onnx": "deploy", "quantize_onnx": "deploy",
    "onnx_session": "deploy", "predict_onnx": "deploy", "load_pretrained": "models",
    "run_pipeline": "pipeline",
}

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        module = importlib.import_module(f"tinylab.{_EXPORTS[name]}")
        return getattr(module, name)
    raise AttributeError(f"module 'tinylab' has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__
