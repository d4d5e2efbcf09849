"""transformers 5.25 turns hub kernels on by default: tinylab's models must not use them.

With the ``kernels`` package installed (transformers 5.25 requires it), ``from_pretrained``
defaults to ``use_kernels=True`` and every ``.train()`` / ``.eval()`` may re-``kernelize``:
swap layers for kernels fetched from the model hub. tinylab loads every model through
:func:`tinylab.models.load_pretrained`, which turns that off. These tests load models the way
tinylab does, switch modes many times with every socket connection refused, and check that no
connection was tried and that the model stays plain PyTorch.
"""
from __future__ import annotations

import socket

import pytest
from transformers import AutoModelForSequenceClassification

from tinylab.models import load_pretrained, load_teacher


@pytest.fixture()
def no_network(monkeypatch):
    """Refuse (and record) every outgoing connection, as a machine without a network would."""
    tried = []

    def refuse(self, address):
        tried.append(address)
        raise OSError(f"network disabled in this test (tried {address})")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    return tried


def test_load_pretrained_turns_hub_kernels_off(tiny_bert_dir, no_network):
    model = load_pretrained(AutoModelForSequenceClassification, tiny_bert_dir)
    for _ in range(20):
        model.train()
        model.eval()
    assert model.use_kernels is False
    assert no_network == []


def test_the_teacher_switches_modes_without_the_network(tiny_teacher_dir, no_network):
    teacher, _ = load_teacher(str(tiny_teacher_dir), num_labels=2)
    teacher.train()
    teacher.eval()
    assert teacher.use_kernels is False and not teacher.training
    assert no_network == []
