"""``tinylab gpu-check``: what can be checked of it without a GPU."""
from __future__ import annotations

import json

import nbformat
import pytest
import torch

from tinylab import cli
from tinylab.course.gpu_check import notebook_devices


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_gpu_check_without_cuda_is_one_line_and_exit_2(capsys, tmp_path):
    code = cli.main(["gpu-check", "--output", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1 and "device=cuda" in err
    assert not (tmp_path / "out").exists()  # stopped before any work


def test_notebook_devices_reads_the_setup_cell_output(tmp_path):
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("print(...)")
    cell.outputs = [nbformat.v4.new_output(
        "stream", name="stdout",
        text="profile: ci   seed: 42   device: cuda (NVIDIA T4), fp32\n")]
    nb.cells = [cell, nbformat.v4.new_code_cell("x = 1")]
    path = tmp_path / "executed.ipynb"
    path.write_text(json.dumps(nb))
    assert notebook_devices(path) == ["cuda"]
    cell.outputs[0]["text"] = "profile: ci   device: cpu (2 threads), fp32\n"
    path.write_text(json.dumps(nb))
    assert notebook_devices(path) == ["cpu"]
