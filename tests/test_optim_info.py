"""Generic tests over optim_db.CLASS_DB (torch's OptimizerInfo): every class's error inputs raise their
message, and every capability flag it claims holds."""

from __future__ import annotations

import re

import pytest
import torch

import steepest
from optim_db import CLASS_DB

ERROR_CASES = [(name, ei) for name, info in CLASS_DB.items() for ei in info.error_inputs]


@pytest.mark.parametrize(
    "name, error_input",
    ERROR_CASES,
    ids=[f"{n}-{'-'.join(f'{k}={v!r}' for k, v in e.kwargs.items())}" for n, e in ERROR_CASES],
)
def test_error_inputs_raise_their_message(name, error_input):
    W = torch.nn.Parameter(torch.zeros(4, 3))
    with pytest.raises(error_input.error, match=re.escape(error_input.match)):
        CLASS_DB[name].cls([W], **error_input.kwargs)


def test_every_optimizer_class_is_in_the_database():
    """A new optimizer class exported by steepest fails here until it has its CLASS_DB entry."""
    exported = {
        name
        for name in steepest.__all__
        if isinstance(getattr(steepest, name, None), type)
        and issubclass(getattr(steepest, name), torch.optim.Optimizer)
    }
    # DistributedSteepest is a wrapper built by steepest.distributed(opt), covered by supports_distributed.
    assert exported - {"DistributedSteepest"} == set(CLASS_DB)


def test_every_class_has_error_inputs_for_lr():
    """The first check a user meets: a bad learning rate, for every class."""
    for name, info in CLASS_DB.items():
        assert any("lr" in ei.kwargs for ei in info.error_inputs), name


def _problem(dtype):
    g = torch.Generator().manual_seed(0)
    W = torch.nn.Parameter(torch.randn(6, 4, generator=g, dtype=torch.float64).to(dtype))
    X = torch.randn(16, 4, generator=g, dtype=torch.float64).to(dtype)
    Y = torch.randn(16, 6, generator=g, dtype=torch.float64).to(dtype)
    return W, lambda: 0.5 * (X @ W.T - Y).square().mean()


@pytest.mark.parametrize("name", [n for n, info in CLASS_DB.items() if info.supports_closure])
def test_closure_is_evaluated_and_its_loss_returned(name):
    W, loss_fn = _problem(torch.float32)
    opt = CLASS_DB[name].cls([W], lr=0.01)
    losses = []

    def closure():
        opt.zero_grad()
        loss = loss_fn()
        loss.backward()
        losses.append(loss)
        return loss

    W0 = W.detach().clone()
    out = opt.step(closure)
    assert len(losses) == 1 and out is losses[0]  # evaluated once, its loss returned (torch.optim's contract)
    assert not torch.equal(W.detach(), W0)  # the closure's gradient was used


@pytest.mark.parametrize("name", [n for n, info in CLASS_DB.items() if info.supports_float64])
def test_float64_parameters_step_in_float64(name):
    W, loss_fn = _problem(torch.float64)
    opt = CLASS_DB[name].cls([W], lr=0.01)
    before = float(loss_fn().detach())
    for _ in range(3):
        opt.zero_grad()
        loss_fn().backward()
        opt.step()
    assert W.dtype == torch.float64 and bool(torch.isfinite(W).all())
    assert float(loss_fn().detach()) < before  # three small steps along a descent direction lower the loss


@pytest.mark.parametrize("name", [n for n, info in CLASS_DB.items() if info.supports_batched])
def test_batched_matrices_step_like_per_matrix(name):
    """Two same-shape matrices batched take the per-matrix steps (float64 SVD paths: round-off only)."""

    def run(batched):
        g = torch.Generator().manual_seed(1)
        ps = [torch.nn.Parameter(torch.randn(6, 4, generator=g, dtype=torch.float64)) for _ in range(2)]
        opt = CLASS_DB[name].cls(ps, lr=0.01)
        opt.batch_matrices = batched
        for _ in range(2):
            for p in ps:
                p.grad = torch.randn(6, 4, generator=g, dtype=torch.float64)
            opt.step()
        return [p.detach() for p in ps]

    for a, b in zip(run(True), run(False)):
        # float64: one batched vs per-matrix LAPACK/matmul rounding difference, amplified at most by the
        # iterative polar steps; 1e-6 relative leaves margin over the ~1e-12 measured.
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-9)
