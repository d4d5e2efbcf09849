"""What one ``model.train()`` + ``model.eval()`` costs, with and without hub kernels.

Since transformers 5.25, ``from_pretrained`` turns ``use_kernels`` on when the ``kernels``
package is installed, and every mode switch may re-``kernelize`` the model. tinylab loads
with ``use_kernels=False`` (:func:`tinylab.models.load_pretrained`). This prints the cost of a
switch both ways on the offline teacher, measured with ``torch.utils.benchmark``, and checks
that neither tried to open a network connection.

    .venv/bin/python bench/mode_switch.py
"""
from __future__ import annotations

import socket

import torch.utils.benchmark as benchmark
from transformers import AutoModelForSequenceClassification

from tinylab.assets import resolve_model_path
from tinylab.models import load_pretrained

tried = []


def refuse(self, address):
    tried.append(address)
    raise OSError("no network in this benchmark")


def main() -> None:
    socket.socket.connect = refuse
    path = resolve_model_path("offline:all-MiniLM-L6-v2")
    models = {
        "tinylab (use_kernels=False)": load_pretrained(AutoModelForSequenceClassification, path,
                                                       num_labels=2),
        "transformers default": AutoModelForSequenceClassification.from_pretrained(
            path, num_labels=2),
    }
    print("| loaded as | use_kernels | train()+eval(), median (us) |")
    print("|---|---|---:|")
    for name, model in models.items():
        timer = benchmark.Timer("model.train(); model.eval()", globals={"model": model})
        measured = timer.blocked_autorange(min_run_time=2.0)
        print(f"| {name} | {model.use_kernels} | {measured.median * 1e6:.0f} |")
    print(f"\nnetwork connections tried: {len(tried)}")


if __name__ == "__main__":
    main()
