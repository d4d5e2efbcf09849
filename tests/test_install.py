"""Installing: the torch build a machine gets, the locked set, and the Makefile around them.

Nothing here reaches a network: the GPU is a stub ``nvidia-smi`` on ``PATH``, a failing pip is
a stub interpreter, and ``make -n`` prints recipes without running them.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import install_torch  # noqa: E402
import lock  # noqa: E402


def _stub(folder: Path, name: str, script: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text("#!/bin/sh\n" + script + "\n")
    path.chmod(0o755)
    return path


def _dry_run(tmp_path, *args, smi: str | None = None):
    """scripts/install_torch.py --dry-run with only a stub nvidia-smi (or none) on PATH."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    if smi is not None:
        _stub(bin_dir, "nvidia-smi", smi)
    env = {**os.environ, "PATH": f"{bin_dir}:/usr/bin:/bin"}
    return subprocess.run([sys.executable, str(ROOT / "scripts" / "install_torch.py"),
                           "--version", "2.13.0", "--dry-run", *args],
                          capture_output=True, text=True, env=env)


@pytest.mark.skipif(sys.platform != "linux", reason="the CPU/CUDA choice is made on Linux")
def test_linux_without_an_nvidia_gpu_gets_the_cpu_build(tmp_path):
    done = _dry_run(tmp_path)
    assert done.returncode == 0, done.stderr
    assert "the cpu build, torch==2.13.0+cpu (no NVIDIA GPU: nvidia-smi not found)" in done.stdout
    assert "Override: make TORCH_BUILD=" in done.stdout
    assert "--extra-index-url https://download.pytorch.org/whl/cpu" in done.stdout


@pytest.mark.skipif(sys.platform != "linux", reason="the CPU/CUDA choice is made on Linux")
def test_a_listed_gpu_gets_the_cuda_build(tmp_path):
    done = _dry_run(tmp_path, smi='echo "GPU 0: NVIDIA T4 (UUID: GPU-1234)"')
    assert done.returncode == 0, done.stderr
    assert "the cuda build, torch==2.13.0 (NVIDIA GPU found: GPU 0: NVIDIA T4)" in done.stdout
    assert "+cpu" not in done.stdout and "download.pytorch.org" not in done.stdout


@pytest.mark.skipif(sys.platform != "linux", reason="the CPU/CUDA choice is made on Linux")
def test_an_nvidia_smi_that_fails_means_no_gpu(tmp_path):
    done = _dry_run(tmp_path, smi='echo "NVIDIA-SMI has failed" >&2; exit 9')
    assert "the cpu build" in done.stdout and "nvidia-smi lists no GPU (exit 9)" in done.stdout


def test_torch_build_overrides_the_guess_and_a_bad_one_is_refused(tmp_path):
    done = _dry_run(tmp_path, "--build", "cuda")
    assert "the cuda build, torch==2.13.0 (chosen with TORCH_BUILD)" in done.stdout
    bad = _dry_run(tmp_path, "--build", "rocm")
    assert bad.returncode == 2
    assert bad.stderr.strip() == ("install_torch: TORCH_BUILD='rocm' is not one of cpu, cuda, "
                                  "default")


def test_no_source_for_either_build_is_one_line_and_exit_2(tmp_path):
    """pip fails every attempt (here a stub interpreter; on a laptop offline, the network)."""
    python = _stub(tmp_path / "bin", "python",
                   'echo "ERROR: No matching distribution found for torch==2.13.0+cpu" >&2; exit 1')
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "install_torch.py"),
                           "--version", "2.13.0", "--build", "cpu", "--python", str(python)],
                          capture_output=True, text=True)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("install_torch: could not install torch==2.13.0+cpu (cpu build) "
                               "from pip's own configuration or "
                               "https://download.pytorch.org/whl/cpu: ERROR: No matching")


def test_an_installed_build_is_kept_only_when_it_is_the_wanted_one():
    cpu, cuda = install_torch.plan("2.13.0", "cpu"), install_torch.plan("2.13.0", "cuda")
    assert install_torch.satisfied("2.13.0+cpu", cpu, "2.13.0")
    assert not install_torch.satisfied("2.13.0", cpu, "2.13.0")        # CUDA build on a CPU box
    assert not install_torch.satisfied("2.12.1+cpu", cpu, "2.13.0")
    assert install_torch.satisfied("2.13.0", cuda, "2.13.0")
    assert not install_torch.satisfied("2.13.0+cpu", cuda, "2.13.0")
    assert not install_torch.satisfied(None, cuda, "2.13.0")


def _make_n(*args):
    return subprocess.run(["make", "-n", "-B", *args], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "MAKEFLAGS": ""})


def test_make_setup_installs_torch_first_then_exactly_the_lock():
    recipe = _make_n("setup").stdout
    torch_at = recipe.index("scripts/install_torch.py --version 2.13.0")
    lock_at = recipe.index("pip install --quiet -c requirements/lock.txt -e")
    assert torch_at < lock_at < recipe.index("scripts/lock.py --verify")
    assert "ipykernel install" not in recipe   # the venv's own python3 kernel is the one used


def test_make_alone_prints_the_targets():
    done = subprocess.run(["make"], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0
    for target in ("course", "test", "test-latest", "lock", "release-check", "help"):
        assert f"  {target} " in done.stdout


def test_profile_full_is_not_forced_offline():
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    show = ["make", "-s", "--eval", "show: ; @echo HF_HUB_OFFLINE=$$HF_HUB_OFFLINE", "show"]
    quick = subprocess.run(show, cwd=ROOT, capture_output=True, text=True, env=env)
    full = subprocess.run([*show, "PROFILE=full"], cwd=ROOT, capture_output=True, text=True,
                          env=env)
    assert quick.stdout.strip() == "HF_HUB_OFFLINE=1"
    assert full.stdout.strip() == "HF_HUB_OFFLINE="


def test_environment_yml_is_generated_from_the_lock(tmp_path):
    pins = lock.read_pins()
    assert pins["transformers"] and "torch" not in pins
    assert (ROOT / "environment.yml").read_text() == lock.environment_yml(pins,
                                                                         lock.torch_version())
    # and the comparison notices a difference
    pins["transformers"] = "0.0.1"
    assert lock.environment_yml(pins, lock.torch_version()) != (ROOT / "environment.yml").read_text()


@pytest.mark.skipif(os.environ.get("TINYLAB_UNLOCKED") == "1",
                    reason="`make test-latest` runs on the newest versions, not the lock")
def test_lock_verification_names_a_version_that_differs():
    import importlib.metadata as md

    import setuptools  # noqa: F401  (puts its vendored packages' metadata on sys.path)

    pins = lock.read_pins()
    assert lock.verify_installed(pins) == [], "this environment is not the locked set"
    pins["tqdm"] = "0.0.1"
    assert lock.verify_installed(pins) == [f"tqdm: locked 0.0.1, installed {md.version('tqdm')}"]


def test_the_lock_names_no_local_path_and_not_torch():
    text = (ROOT / "requirements" / "lock.txt").read_text(encoding="utf-8")
    entries = [l for l in text.splitlines() if l and not l.lstrip().startswith("#")]
    assert not [l for l in entries if "file://" in l or " @ /" in l or l.startswith(("-e", "/"))]
    assert not [l for l in entries if l.startswith(("torch==", "nvidia-", "triton=="))]
