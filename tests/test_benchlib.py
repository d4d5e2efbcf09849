"""bench/benchlib.py's helpers that decide how a benchmark uses the machine."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import benchlib  # noqa: E402


@pytest.mark.parametrize("value, expected", [("1", 1), ("3", 3), (" 2 ", 2)])
def test_thread_budget_follows_omp_num_threads(monkeypatch, value, expected):
    """`make test` sets OMP_NUM_THREADS=1 for its parallel workers; a benchmark started by a
    test must not take every core on top of them."""
    monkeypatch.setenv("OMP_NUM_THREADS", value)
    assert benchlib.thread_budget() == expected


@pytest.mark.parametrize("value", [None, "", "0", "four", "-2"])
def test_thread_budget_is_one_per_core_without_a_usable_setting(monkeypatch, value):
    if value is None:
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    else:
        monkeypatch.setenv("OMP_NUM_THREADS", value)
    assert benchlib.thread_budget() == (os.cpu_count() or 1)
