"""The training loop's AdamW: PyTorch's fused kernel on the CPU, the same update as the
reference (for-loop) implementation."""
from __future__ import annotations

import torch

from tinylab.distill.loop import adamw, param_groups


def test_fused_adamw_matches_the_reference_update():
    torch.manual_seed(0)
    a = torch.nn.Sequential(torch.nn.Embedding(500, 16), torch.nn.Linear(16, 4))
    b = torch.nn.Sequential(torch.nn.Embedding(500, 16), torch.nn.Linear(16, 4))
    b.load_state_dict(a.state_dict())
    ours = adamw(param_groups({"m": a}, 0.01), 1e-2, torch.device("cpu"))
    reference = torch.optim.AdamW(param_groups({"m": b}, 0.01), lr=1e-2, foreach=False)
    assert ours.defaults["fused"] is True
    before = a[1].weight.detach().clone()
    for step in range(5):
        grads = [torch.randn_like(p) for p in a.parameters()]
        for model, opt in ((a, ours), (b, reference)):
            for p, g in zip(model.parameters(), grads):
                p.grad = g.clone()
            opt.step()
    for p, q in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)
    assert not torch.equal(a[1].weight, before)  # the steps did change the weights
