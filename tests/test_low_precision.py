"""issue 23 item 4: float16 and bfloat16 parameters step with every recipe and step size.

A finite gradient always gives a finite step: norms, dual norms and scales are computed in float32 at
least (a float16 dual norm overflowed above 65504, so e.g. a 512 x 512 sign step's ||G||_1 at |G| ~ 0.5
silently skipped the step), and a wider update is multiplied by lr before its one rounding into the
parameter's dtype. Each case starts from W = 0 so any step is visible, and compares with the same step
taken in float32.
"""

from __future__ import annotations

import pytest
import torch

import steepest
from steepest.geometry import dual_norm

#: (recipe, its geometry, step size): every recipe, fixed and dual steps.
RECIPES = {
    "Muon": (lambda p, lr: steepest.Muon(p, lr=lr, weight_decay=0.0, dtype=torch.float32), "spectral", "fixed"),
    "SpecGD": (lambda p, lr: steepest.SpecGD(p, lr=lr), "spectral", "fixed"),
    "SpecGD-dual": (lambda p, lr: steepest.SpecGD(p, lr=lr, step_size="dual"), "spectral", "dual"),
    "SignSGD": (lambda p, lr: steepest.SignSGD(p, lr=lr), "linf", "fixed"),
    "SignSGD-dual": (lambda p, lr: steepest.SignSGD(p, lr=lr, step_size="dual"), "linf", "dual"),
    "Schatten4": (lambda p, lr: steepest.SchattenDescent(p, lr=lr, p=4.0), "schatten", "fixed"),
    "Schatten4-dual": (lambda p, lr: steepest.SchattenDescent(p, lr=lr, p=4.0, step_size="dual"), "schatten", "dual"),
    "GD": (lambda p, lr: steepest.GD(p, lr=lr), "frobenius", "dual"),
    "Frobenius-fixed": (lambda p, lr: steepest.SteepestDescent(p, lr=lr, norm="frobenius"), "frobenius", "fixed"),
}


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("scale", [1e-8, 1e-4, 1.0, 1e4])
@pytest.mark.parametrize("name", list(RECIPES))
def test_low_precision_parameters_step_finite_and_as_float32(name, dtype, scale):
    make, norm, step_size = RECIPES[name]
    g = torch.Generator().manual_seed(0)
    grad = (torch.randn(256, 256, generator=g) * scale).to(dtype)
    if not grad.any():
        pytest.skip(f"a gradient of scale {scale} underflows to 0 in {dtype}: there is nothing to step")
    if name == "Muon" and not ((1 - 0.95) * grad).any():  # EMA momentum, buffer in the parameter's dtype
        pytest.skip(f"(1 - momentum) * G underflows in a {dtype} momentum buffer (torch.optim.Muon's buffer alike)")
    # lr chosen so the step's largest entry is ~1e-2 (resolvable from W = 0 in either dtype); for a dual step
    # that puts lr * ||G||^dagger, which overflowed float16 before, at ~1e-2 x the direction's max entry.
    dn = dual_norm(grad.float(), norm, 4.0 if norm == "schatten" else None).item() if step_size == "dual" else 1.0
    lr = 1e-2 / dn
    W = torch.nn.Parameter(torch.zeros(256, 256, dtype=dtype))
    ref = torch.nn.Parameter(torch.zeros(256, 256))
    opt, opt_ref = make([W], lr), make([ref], lr)
    W.grad, ref.grad = grad.clone(), grad.float()
    opt.step()
    opt_ref.step()
    assert opt.nonfinite_skipped == 0 and torch.isfinite(W).all() and W.detach().any()
    # One rounding of the float32 step into dtype plus the dtype's own direction (float16: 11 bits, bf16: 8):
    # 2^-6 of the largest entry covers bf16's rounding of the gradient itself, which the reference does not see.
    err = (W.detach().float() - ref.detach()).abs().max().item()
    assert err <= 2**-6 * ref.detach().abs().max().item(), (err, ref.abs().max().item())
