"""Checkpoints you can trust: safetensors files, written atomically, enough to resume exactly.

A training stage is resumable when everything that decides its future is saved:

* the weights of every trained module (student, and the projections ``W_e``/``W_h`` that live in
  the loss module) - ``<name>.safetensors``;
* the optimiser state (Adam's two moment estimates per parameter) - ``optimizer.safetensors``;
* the learning-rate scheduler position, the step, the log so far - ``state.json``;
* the random number generators of every process (dropout masks!) - ``rng.safetensors``;
* the data order of the current epoch - ``data_order.safetensors``.

Restore all of it and an interrupted run continues bit-for-bit where an uninterrupted one would
have gone (``tests/test_distill.py`` checks exactly that).

Atomicity: a checkpoint is written into ``step-000120.tmp-<pid>/``, renamed to ``step-000120/``
when complete, and only then does the small ``latest`` file (itself replaced atomically) point to
it. A crash at any moment leaves either the previous checkpoint or the new one, never half of one.
"""
from __future__ import annotations

import contextlib
import json
import random
import re
import shutil
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from safetensors.torch import load_file, load_model, save_file, save_model

from tinylab.atomic import atomic_directory, atomic_write_text  # noqa: F401 (re-exported)

__all__ = ["atomic_write_text", "atomic_directory", "save_checkpoint", "load_checkpoint",
           "clear_checkpoints", "remove_checkpoint_tree",
           "latest_checkpoint", "capture_rng_state", "restore_rng_state", "CheckpointError"]


class CheckpointError(RuntimeError):
    """A checkpoint is missing, incomplete or does not fit the run that tries to resume it."""


# --------------------------------------------------------------------------------------------
# Random number generators
# --------------------------------------------------------------------------------------------

def capture_rng_state() -> dict[str, Any]:
    """The state of Python's, NumPy's and torch's generators (CPU and, if present, CUDA)."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(),
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _rng_to_files(states: list[dict[str, Any]]) -> tuple[dict[str, torch.Tensor], list[dict]]:
    tensors, meta = {}, []
    for rank, s in enumerate(states):
        version, mt, gauss = s["python"]
        kind, keys, pos, has_gauss, cached = s["numpy"]
        tensors[f"rank{rank}.torch"] = s["torch"]
        tensors[f"rank{rank}.python"] = torch.tensor(mt, dtype=torch.int64)
        tensors[f"rank{rank}.numpy"] = torch.from_numpy(np.asarray(keys, dtype=np.int64))
        for i, t in enumerate(s.get("cuda", [])):
            tensors[f"rank{rank}.cuda{i}"] = t
        meta.append({"python": [version, gauss], "numpy": [kind, int(pos), int(has_gauss),
                                                            float(cached)],
                     "cuda_devices": len(s.get("cuda", []))})
    return tensors, meta


def _rng_from_files(tensors: dict[str, torch.Tensor], meta: list[dict]) -> list[dict[str, Any]]:
    states = []
    for rank, m in enumerate(meta):
        version, gauss = m["python"]
        kind, pos, has_gauss, cached = m["numpy"]
        s = {"python": (version, tuple(int(x) for x in tensors[f"rank{rank}.python"].tolist()),
                        gauss),
             "numpy": (kind, tensors[f"rank{rank}.numpy"].numpy().astype(np.uint32), pos,
                       has_gauss, cached),
             "torch": tensors[f"rank{rank}.torch"]}
        if m["cuda_devices"]:
            s["cuda"] = [tensors[f"rank{rank}.cuda{i}"] for i in range(m["cuda_devices"])]
        states.append(s)
    return states


# --------------------------------------------------------------------------------------------
# Optimiser state: tensors to safetensors, the rest (hyper-parameters) to JSON
# --------------------------------------------------------------------------------------------

def _split_optimizer_state(sd: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict]:
    tensors, plain = {}, {}
    for idx, per_param in sd["state"].items():
        plain[str(idx)] = {}
        for key, value in per_param.items():
            if torch.is_tensor(value):
                tensors[f"{idx}.{key}"] = value.detach().cpu().contiguous()
            else:
                plain[str(idx)][key] = value
    return tensors, {"state": plain, "param_groups": sd["param_groups"]}


def _join_optimizer_state(tensors: dict[str, torch.Tensor], meta: dict) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {int(i): dict(v) for i, v in meta["state"].items()}
    for name, value in tensors.items():
        idx, key = name.split(".", 1)
        state.setdefault(int(idx), {})[key] = value
    return {"state": state, "param_groups": meta["param_groups"]}


# --------------------------------------------------------------------------------------------
# Save / load
# --------------------------------------------------------------------------------------------

def latest_checkpoint(directory: str | Path) -> Path | None:
    """The folder the ``latest`` pointer names, or ``None`` when there is no checkpoint yet."""
    pointer = Path(directory) / "latest"
    if not pointer.exists():
        return None
    path = Path(directory) / pointer.read_text().strip()
    if not (path / "state.json").exists():
        raise CheckpointError(f"{pointer} points to {path.name}, which is incomplete or missing; "
                              f"delete {directory} to start the stage again")
    return path


def clear_checkpoints(directory: str | Path) -> list[Path]:
    """Delete the checkpoints tinylab wrote in ``directory``, and nothing else.

    tinylab's own entries are recognised by name and content: the ``latest`` pointer,
    ``step-NNNNNNN/`` folders that hold a ``state.json``, and the ``.step-*.tmp-*`` /
    ``.step-*.old-*`` leftovers of an interrupted write. Any other file or folder (a user's
    notes, data that happens to be there) is left alone. The folder itself is removed only
    when nothing is left in it. Returns what was deleted.
    """
    directory = Path(directory)
    if not directory.is_dir():
        return []
    gone: list[Path] = []
    for entry in sorted(directory.iterdir()):
        ours = (entry.name == "latest" and entry.is_file()) or (
            entry.is_dir() and (
                (re.fullmatch(r"step-\d{7}", entry.name) and (entry / "state.json").exists())
                or re.fullmatch(r"\.step-\d{7}\.(tmp|old)-.+", entry.name)))
        if ours:
            shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
            gone.append(entry)
    with contextlib.suppress(OSError):
        directory.rmdir()  # only succeeds when empty
    return gone


def remove_checkpoint_tree(root: str | Path) -> list[Path]:
    """:func:`clear_checkpoints` in ``root`` and every folder below it, then remove the folders
    that became empty (a finished run's ``checkpoints/teacher``, ``.../task/intermediate``...)."""
    root = Path(root)
    if not root.is_dir():
        return []
    gone: list[Path] = []
    for folder in sorted((p for p in root.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
        if folder.exists():
            gone += clear_checkpoints(folder)
    gone += clear_checkpoints(root)
    return gone


def save_checkpoint(directory: str | Path, *, step: int, modules: dict[str, torch.nn.Module],
                    optimizer: torch.optim.Optimizer, scheduler: Any, state: dict[str, Any],
                    rng_states: list[dict[str, Any]], data_order: list[list[int]],
                    keep: int = 1, extra: Callable[[Path], None] | None = None) -> Path:
    """Write checkpoint ``step`` into ``directory`` and point ``latest`` at it.

    ``modules``: unwrapped modules by name (their ``state_dict`` goes to ``<name>.safetensors``);
    ``state``: JSON-able trainer state (step, epoch, history so far, ...);
    ``rng_states``: one :func:`capture_rng_state` per process (index = process rank);
    ``data_order``: the batches (lists of example indices) of the current epoch.
    ``extra(folder)`` may add files (e.g. early stopping's best weights) before the folder
    becomes the checkpoint. Older checkpoints beyond the newest ``keep`` are deleted. Call it
    on the main process only.
    """
    directory = Path(directory)
    name = f"step-{step:07d}"
    opt_tensors, opt_meta = _split_optimizer_state(optimizer.state_dict())
    rng_tensors, rng_meta = _rng_to_files(rng_states)
    flat = [i for batch in data_order for i in batch]
    with atomic_directory(directory / name) as tmp:
        for mod_name, module in modules.items():
            save_model(module, str(tmp / f"{mod_name}.safetensors"))
        save_file(opt_tensors, str(tmp / "optimizer.safetensors"))
        save_file(rng_tensors, str(tmp / "rng.safetensors"))
        save_file({"indices": torch.tensor(flat, dtype=torch.int64),
                   "batch_sizes": torch.tensor([len(b) for b in data_order], dtype=torch.int64)},
                  str(tmp / "data_order.safetensors"))
        payload = {"step": step, "modules": sorted(modules), "optimizer": opt_meta,
                   "scheduler": scheduler.state_dict(), "rng": rng_meta, "trainer": state}
        (tmp / "state.json").write_text(json.dumps(payload, indent=1))
        if extra is not None:
            extra(tmp)
    atomic_write_text(directory / "latest", name)
    old = sorted(p for p in directory.glob("step-*") if p.is_dir() and p.name != name)
    for p in old[:max(0, len(old) - (keep - 1))]:
        shutil.rmtree(p, ignore_errors=True)
    return directory / name


def load_checkpoint(path: str | Path, *, modules: dict[str, torch.nn.Module],
                    optimizer: torch.optim.Optimizer, scheduler: Any
                    ) -> tuple[dict[str, Any], list[dict[str, Any]], list[list[int]]]:
    """Load a checkpoint written by :func:`save_checkpoint` into the given objects (in place).

    Returns ``(trainer_state, rng_states, data_order)``; restoring the RNG of this process is
    the caller's job (it knows its rank).
    """
    path = Path(path)
    payload = json.loads((path / "state.json").read_text())
    if sorted(modules) != payload["modules"]:
        raise CheckpointError(f"checkpoint {path} holds modules {payload['modules']}, this run "
                              f"trains {sorted(modules)}: it belongs to another stage or config")
    for mod_name, module in modules.items():
        missing, unexpected = load_model(module, str(path / f"{mod_name}.safetensors"),
                                         strict=False)
        if missing or unexpected:
            raise CheckpointError(f"{path / mod_name}.safetensors does not fit the model "
                                  f"(missing {missing[:3]}, unexpected {unexpected[:3]}): "
                                  f"was the model shape changed since the checkpoint?")
    optimizer.load_state_dict(_join_optimizer_state(load_file(str(path / "optimizer.safetensors")),
                                                    payload["optimizer"]))
    scheduler.load_state_dict(payload["scheduler"])
    rng = _rng_from_files(load_file(str(path / "rng.safetensors")), payload["rng"])
    order = load_file(str(path / "data_order.safetensors"))
    flat = order["indices"].tolist()
    batches, start = [], 0
    for n in order["batch_sizes"].tolist():
        batches.append(flat[start:start + n])
        start += n
    return payload["trainer"], rng, batches
