"""torch.compile(opt.step, fullgraph=True) on steepest.Muon: no graph break, the eager result (itself
checked against float64 references in tests/test_contract.py), no NaN in.

The compiled step replaces the per-block gradient check by a mask (functional.steepest_step): a step
whose gradients are not all finite leaves parameters and momentum unchanged.
"""

from __future__ import annotations

import pytest
import torch

import steepest


def _setup(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    ps = [torch.nn.Parameter(torch.randn(48, 24, generator=g)), torch.nn.Parameter(torch.randn(16, 32, generator=g))]
    grads = [[torch.randn(p.shape, generator=g) for p in ps] for _ in range(3)]
    return ps, grads


@pytest.mark.slow
def test_compiled_step_fullgraph_matches_eager_and_masks_nonfinite():
    torch._dynamo.reset()
    eager_ps, grads = _setup()
    comp_ps, _ = _setup()
    eager = steepest.Muon(eager_ps, lr=0.02, weight_decay=0.1, dtype=torch.float32)
    comp = steepest.Muon(comp_ps, lr=0.02, weight_decay=0.1, dtype=torch.float32)
    step = torch.compile(comp.step, fullgraph=True)  # fullgraph: any graph break is an error
    for gs in grads:
        for a, b, gr in zip(eager_ps, comp_ps, gs):
            a.grad, b.grad = gr.clone(), gr.clone()
        eager.step()
        step()
    for a, b in zip(eager_ps, comp_ps):
        # Same float32 arithmetic, possibly fused differently by Inductor: 1e-5 relative is ~100 ulps
        # over 3 steps of 5 Newton-Schulz iterations.
        torch.testing.assert_close(b.detach(), a.detach(), rtol=1e-5, atol=1e-6)
    before = [p.detach().clone() for p in comp_ps]
    bufs = [comp.state[p]["momentum_buffer"].clone() for p in comp_ps]
    comp_ps[0].grad = torch.full_like(comp_ps[0], float("nan"))
    comp_ps[1].grad = torch.randn_like(comp_ps[1])
    step()
    for p, b0, m0 in zip(comp_ps, before, bufs):
        assert torch.equal(p.detach(), b0)  # whole step masked: nothing moved, no NaN in
        assert torch.equal(comp.state[p]["momentum_buffer"], m0)
