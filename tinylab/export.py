"""Ship the student as a plain Hugging Face model folder.

A TinyBERT is an ordinary ``BertForSequenceClassification`` with a smaller config (there is no
``TinyBertModel`` class in transformers), so the export is ``save_pretrained`` plus care for
three things that bite users of the official checkpoints (docs/paper-vs-code.md):

* **no tinylab at load time**: during distillation the model may run the custom attention
  implementation ``"tinylab_scores"`` (to return pre-softmax scores). The exported
  ``config.json`` never names it, so the folder loads with the default ``sdpa`` anywhere;
* **readable labels**: ``id2label`` / ``label2id`` hold the task's names (``"positive"``), not
  ``LABEL_1``, so ``pipeline("text-classification", model=folder)`` answers in words;
* **one complete export or none, and nobody else's files touched**: everything is written
  to a temporary folder next to the target first. A new folder is then renamed into place;
  into an existing one only the files the export writes are moved, one rename each, after
  the new export is complete. Other files there (a user's notes, a converted copy) stay.

The folder also gets a short ``README.md`` model card and ``tinylab_metadata.json`` (the
``metadata`` you pass, e.g. the config and the measured metrics)::

    >>> from transformers import pipeline                                  # doctest: +SKIP
    >>> pipeline("text-classification", model="runs/quick/student")("A gem.")  # doctest: +SKIP
    [{'label': 'positive', 'score': 0.93}]
"""
from __future__ import annotations

import copy
import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Any, Mapping, Sequence

from tinylab.assets import sha256_file
from tinylab.atomic import atomic_write_text
from tinylab.deploy import onnx_card_section, write_folder_onnx

__all__ = ["STANDARD_ATTENTION", "export_student", "model_card"]

#: Attention implementations every transformers install knows; anything else is replaced.
STANDARD_ATTENTION = ("eager", "sdpa", "flash_attention_2", "flex_attention")
_ATTN_KEYS = ("attn_implementation", "_attn_implementation", "_attn_implementation_internal")


def _label_maps(config: Any, label_names: Sequence[str] | None) -> dict[int, str]:
    num_labels = int(config.num_labels)
    if label_names is None:
        return {int(i): str(n) for i, n in config.id2label.items()}
    names = [str(n) for n in label_names]
    if len(names) != num_labels:
        raise ValueError(f"label_names has {len(names)} names {names} but the model has "
                         f"{num_labels} outputs; pass one name per output, in class-id order")
    if len(set(names)) != len(names):
        raise ValueError(f"label_names must be distinct, got {names}")
    return dict(enumerate(names))


def _clean_config_json(path: Path) -> None:
    """Drop any custom attention implementation from ``config.json`` (it would need tinylab)."""
    data = json.loads(path.read_text())
    changed = False
    for key in _ATTN_KEYS:
        if key in data and data[key] not in STANDARD_ATTENTION:
            del data[key]  # absent -> transformers picks its default (sdpa) when loading
            changed = True
    if changed:
        atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 1 else f"{value:.4g}"
    return str(value)


def model_card(config: Any, id2label: Mapping[int, str], metadata: Mapping[str, Any] | None
               ) -> str:
    """The ``README.md`` text: what the model is, how it was distilled, how to use it, metrics.

    Recognised ``metadata`` keys (all optional): ``teacher`` (name), ``task``, ``profile``,
    ``description`` (free text), ``metrics`` (a flat dict, e.g. from
    :func:`tinylab.evaluate.evaluate_model` plus latency); other keys are listed as they are.
    """
    meta = dict(metadata or {})
    teacher = meta.pop("teacher", None)
    task = meta.pop("task", None)
    metrics = meta.pop("metrics", None) or {}
    description = meta.pop("description", None)
    labels = ", ".join(f"`{i}`: {name}" for i, name in sorted(id2label.items()))
    lines = [
        "---", "library_name: transformers", "pipeline_tag: text-classification",
        "tags: [knowledge-distillation, tinybert, tinylab]", "---", "",
        "# TinyBERT-style distilled student", "",
        f"A `BertForSequenceClassification` with {config.num_hidden_layers} layers, hidden size "
        f"{config.hidden_size}, {config.num_attention_heads} heads and feed-forward size "
        f"{config.intermediate_size}, distilled with [tinylab](https://github.com/tinylab/"
        "tinylab) following TinyBERT (Jiao et al., 2020, arXiv:1909.10351)" +
        (f" from the teacher `{teacher}`" if teacher else "") +
        (f" on the task `{task}`." if task else "."), "",
        "## How it was distilled", "",
        "TinyBERT's recipe: general distillation on unlabelled text, then task-specific "
        "distillation on (augmented) task data - first the transformer layers (embedding, "
        "pre-softmax attention-score and hidden-state MSE against mapped teacher layers), then "
        "the prediction layer (soft cross-entropy against the teacher's logits). Which stages "
        "ran for this model, and with which settings, is recorded in `tinylab_metadata.json`.",
        "",
    ]
    if description:
        lines += [str(description), ""]
    lines += ["## Labels", "", labels, "", "## Use", "", "```python",
              "from transformers import pipeline", "",
              'classifier = pipeline("text-classification", model="PATH/TO/THIS/FOLDER")',
              "# truncation: texts longer than the model's 512 positions would fail otherwise",
              'classifier("A thoughtful, beautifully made film.", truncation=True)', "```", "",
              "Loading needs only `transformers` and `torch` (tinylab is not required).", ""]
    if metrics:
        lines += ["## Metrics", "", "As reported by the tinylab run that exported the model.", "",
                  "| metric | value |", "|---|---|"]
        lines += [f"| {k} | {_fmt(v)} |" for k, v in metrics.items()
                  if not isinstance(v, (list, dict))]
        lines.append("")
    if meta:
        lines += ["## Run details", ""]
        lines += [f"- {k}: " + (_fmt(v) if not isinstance(v, (dict, list))
                                else "see `tinylab_metadata.json`") for k, v in meta.items()]
        lines.append("")
    return "\n".join(lines)


def _cap_model_max_length(folder: Path, model: Any) -> None:
    """Make ``truncation=True`` safe: the saved tokenizer truncates to at most the model's
    position table (a tokenizer built from a bare vocabulary says 10^30, and a 5,000-word text
    would then index past the last position embedding)."""
    positions = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    config_file = folder / "tokenizer_config.json"
    if not positions or not config_file.exists():
        return
    config = json.loads(config_file.read_text())
    current = config.get("model_max_length")
    if not isinstance(current, (int, float)) or current > positions:
        config["model_max_length"] = int(positions)
        config_file.write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n")


def export_student(model: Any, tokenizer: Any, out_dir: str | Path, *,
                   label_names: Sequence[str] | None = None,
                   metadata: Mapping[str, Any] | None = None, onnx: bool = False) -> Path:
    """Save ``model`` + ``tokenizer`` to ``out_dir`` as a standard transformers folder.

    Writes ``config.json`` (readable ``id2label``, standard attention), ``model.safetensors``,
    the tokenizer files, ``README.md`` (:func:`model_card`) and ``tinylab_metadata.json``.
    ``label_names``: one name per class id (default: keep the model's ``id2label``).
    ``metadata``: JSON-serialisable details for the card and the JSON file.
    ``onnx=True``: write ``model.onnx`` too (:func:`tinylab.deploy.write_folder_onnx`; the card
    says how to run it with ONNX Runtime) when onnx, onnxruntime and onnxscript are installed;
    otherwise, or if that export fails, the card and the log say why and the export goes on
    without it. (Off by default: the ONNX export and its check against PyTorch take seconds.)
    The caller's model is not modified. Returns the folder's path.
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"export target {out_dir} exists and is not a folder")
    id2label = _label_maps(model.config, label_names)
    try:
        meta_json = json.dumps(dict(metadata or {}), indent=2, default=str)
    except (TypeError, ValueError) as err:
        raise ValueError(f"metadata must be JSON-serialisable: {err}") from None

    config = copy.deepcopy(model.config)
    config.id2label = id2label
    config.label2id = {name: i for i, name in id2label.items()}
    if getattr(config, "_attn_implementation", None) not in STANDARD_ATTENTION:
        config._attn_implementation = "sdpa" if hasattr(config, "_attn_implementation") else None
    config.architectures = [type(model).__name__]

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.with_name(f".{out_dir.name}.{uuid.uuid4().hex}.tmp")
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        config.save_pretrained(tmp)  # overwrite config.json with the cleaned copy
        _clean_config_json(tmp / "config.json")
        tokenizer.save_pretrained(tmp)
        _cap_model_max_length(tmp, model)
        card = model_card(config, id2label, metadata)
        if onnx:
            skipped = write_folder_onnx(model, tokenizer, tmp, id2label=id2label)  # never raises
            card += onnx_card_section(skipped)
        (tmp / "README.md").write_text(card)
        (tmp / "tinylab_metadata.json").write_text(meta_json + "\n")
        _write_manifest(tmp)
        if out_dir.exists():
            _replace_files(tmp, out_dir)  # the complete new export exists; now move it in
        else:
            tmp.rename(out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


#: Moved in last, so a reader that finds the new ``config.json`` finds the new weights too.
_WRITTEN_LAST = ("config.json", "tinylab_metadata.json", ".tinylab-export.json")
#: The list of files an export wrote, with their sha256: how the next export recognises them.
EXPORT_MANIFEST = ".tinylab-export.json"


def _replace_files(new: Path, out_dir: Path) -> None:
    """Move every file of the complete export ``new`` into the existing ``out_dir``.

    Only the file names the export writes are replaced, one atomic rename each (a symbolic
    link of that name is replaced, never written through); every other file in ``out_dir``,
    such as a user's notes or a copy converted by another tool, stays as it was. A file the
    previous export wrote and this one does not (say ``model.onnx``, when ONNX export is no
    longer available) is removed only if :data:`EXPORT_MANIFEST` lists it with the sha256 it
    still has: stale weights must not sit next to new ones, and an edited file is the user's.
    A folder in the way of one of the export's file names is refused before anything moves.
    """
    names = sorted((p.relative_to(new) for p in new.rglob("*") if p.is_file()),
                   key=lambda rel: (rel.as_posix() in _WRITTEN_LAST, rel.as_posix()))
    for rel in names:
        target = out_dir / rel
        if target.is_dir() and not target.is_symlink():
            raise ValueError(f"cannot export into {out_dir}: {target} is a folder, and the "
                             f"export writes a file of that name; move it away or choose "
                             f"another output")
    try:
        previous = json.loads((out_dir / EXPORT_MANIFEST).read_text()).get("files", {})
    except (OSError, ValueError, AttributeError):
        previous = {}
    written = {rel.as_posix() for rel in names}
    for name, sha in previous.items():
        old = out_dir / name
        if (name not in written and "/" not in name and name not in ("", ".", "..")
                and old.is_file() and not old.is_symlink() and sha256_file(old) == sha):
            old.unlink()
    for rel in names:
        (out_dir / rel).parent.mkdir(parents=True, exist_ok=True)
        os.replace(new / rel, out_dir / rel)


def _write_manifest(folder: Path) -> None:
    """:data:`EXPORT_MANIFEST`: every file of the export in ``folder`` and its sha256."""
    files = {p.relative_to(folder).as_posix(): sha256_file(p) for p in sorted(folder.rglob("*"))
             if p.is_file() and p.name != EXPORT_MANIFEST}
    (folder / EXPORT_MANIFEST).write_text(json.dumps({"files": files}, indent=1) + "\n")
