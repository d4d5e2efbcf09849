"""``make gpu-check`` / ``tinylab gpu-check``: the course on a CUDA GPU, in a few minutes.

The development machines of this project have no GPU, so the GPU path is written to be right
by construction and tested on the CPU (``tests/test_device.py`` runs every stage's loss on
PyTorch's ``meta`` device). This command is the check that needs the real thing. On a machine
with a CUDA GPU (a Colab GPU runtime, a workstation) it runs, with a fresh temporary cache:

1. the ``ci`` profile pipeline (``tinylab distill``) on ``device=cuda`` in fp32, asserting at
   every optimiser step that the loss is finite (the loop itself stops on a non-finite one)
   and that CUDA memory is in use (the models really are on the GPU);
2. the same in fp16 autocast (``precision=fp16``, Accelerate's gradient scaling), and in bf16
   where the GPU supports it;
3. all course notebooks under ``ci`` with ``TINYLAB_DEVICE=cuda``, asserting that each one
   ran without an error and reported ``device: cuda`` in its set-up cell.

It prints one line per check and a total, and exits 0 only if everything passed. Without a
CUDA GPU it stops at once with one line (exit 2).
"""
from __future__ import annotations

import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

from tinylab.config import get_config
from tinylab.course.runner import fresh_cache, run_course

__all__ = ["run_gpu_check", "notebook_devices"]


def notebook_devices(executed: str | Path) -> list[str]:
    """The ``device: ...`` values an executed notebook printed (its set-up cell prints one)."""
    nb = json.loads(Path(executed).read_text(encoding="utf-8"))
    found = []
    for cell in nb.get("cells", []):
        for output in cell.get("outputs", []):
            text = output.get("text", "")
            text = "".join(text) if isinstance(text, list) else text
            for part in text.split("device: ")[1:]:
                found.append(part.split()[0].rstrip(","))
    return found


def _pipeline_check(device: str, precision: str, out: Path) -> str:
    # torch and the pipeline here, not at the top: `import tinylab.course` stays light
    import torch

    from tinylab.pipeline import run_pipeline

    steps = {"n": 0}

    def on_gpu_and_finite(info) -> None:
        steps["n"] += 1
        assert math.isfinite(info.record["total"]), f"{info.stage} step {info.step}: non-finite"
        if device == "cuda":
            assert torch.cuda.memory_allocated() > 0, "no CUDA memory in use: models on the CPU?"

    cfg = get_config("ci", [f"device={device}", f"precision={precision}"])
    report = run_pipeline(cfg, output_dir=out, progress=False, callbacks=[on_gpu_and_finite])
    assert report["training_device"].startswith(device), report["training_device"]
    acc = report["summary"]["student_accuracy"]
    return f"{steps['n']} steps on {report['training_device']}, student accuracy {acc:.3f}"


def _notebooks_check(device: str, out: Path) -> str:
    code = run_course(profile="ci", output_dir=out, progress=False, execution_timeout=600)
    assert code == 0, f"a notebook failed; see {out / 'summary.md'}"
    summary = json.loads((out / "summary.json").read_text())
    for run in summary["notebooks"]:
        devices = notebook_devices(run["output"])
        assert devices and all(d.startswith(device) for d in devices), (
            f"{run['name']} reported devices {devices}, expected {device}")
    times = ", ".join(f"{r['name'][:2]} {r['wall_time_s']:.0f} s" for r in summary["notebooks"])
    return f"{len(summary['notebooks'])} notebooks on {device} ({times})"


def run_gpu_check(device: str = "cuda", output_dir: str | Path | None = None) -> int:
    """Run the checks on ``device``; return 0 if all passed, 1 otherwise (2: no such device)."""
    import torch  # here, not at the top: see _pipeline_check

    from tinylab.device import DeviceError, resolve_device

    try:
        resolve_device(device)
    except DeviceError as err:
        print(f"tinylab gpu-check: {err}", file=sys.stderr)
        return 2
    out = Path(output_dir or tempfile.mkdtemp(prefix="tinylab-gpu-check-"))
    out.mkdir(parents=True, exist_ok=True)
    precisions = ["fp32"]
    if device == "cuda":
        precisions.append("fp16")
        if torch.cuda.is_bf16_supported():
            precisions.append("bf16")
    checks: list[tuple[str, Callable[[], str]]] = [
        (f"pipeline ci, {p}", lambda p=p: _pipeline_check(device, p, out / f"pipeline-{p}"))
        for p in precisions]
    checks.append(("notebooks ci", lambda: _notebooks_check(device, out / "notebooks")))

    saved = {k: os.environ.get(k) for k in ("TINYLAB_CACHE", "TINYLAB_DEVICE")}
    os.environ["TINYLAB_CACHE"] = str(fresh_cache(tempfile.mkdtemp(dir=out, prefix="cache-")))
    os.environ["TINYLAB_DEVICE"] = device
    failed, start = 0, time.perf_counter()
    try:
        for name, check in checks:
            t0 = time.perf_counter()
            try:
                detail = check()
                print(f"PASS  {name:<20} {time.perf_counter() - t0:6.1f} s  {detail}", flush=True)
            except Exception as err:  # noqa: BLE001 - report every check, then fail
                failed += 1
                print(f"FAIL  {name:<20} {time.perf_counter() - t0:6.1f} s  "
                      f"{type(err).__name__}: {err}", flush=True)
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    total = time.perf_counter() - start
    name = torch.cuda.get_device_name() if device == "cuda" else device
    print(f"gpu-check on {name}: {len(checks) - failed} passed, {failed} failed "
          f"in {total:.0f} s (outputs in {out})")
    return 1 if failed else 0
