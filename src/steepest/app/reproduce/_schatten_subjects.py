"""The gradients seed 003's claims are measured on, and what is measured on each (:func:`measure`).

Synthetic: :func:`make_gradient` (Gaussian, or a power-law spectrum). Real: :func:`charlm_gradients`, the
hidden-layer minibatch gradients of a charlm transformer (:mod:`steepest.app.tasks.charlm`) at
initialization and after training, with each layer's weight (seed 003's Definition 6 divides the
update's size by the weight's). The model trains with exact spectral descent (:class:`steepest.SpecGD`,
method="svd", Nesterov 0.95, Muon's shape scale; embeddings, norms and head on AdamW): the regime the
seed speaks of (Muon-like training). The gradient recorded at step ``t`` is the raw minibatch gradient
of the training batch of step ``t`` (before momentum), i.e. the ``nabla L(W_l)`` the seed dualizes.

Example:
    >>> from steepest.app.reproduce._schatten_subjects import charlm_gradients
    >>> g = charlm_gradients(seed=0, steps=2, n_layer=1, d_model=16, n_head=2, context=8, batch=2, lr=0.02)
    >>> sorted(g), len(g["init"]) == len(g["trained"]) == 4
    (['init', 'trained'], True)
"""

from __future__ import annotations

import math

import numpy as np
import torch

import steepest
from steepest.app.reproduce.base import stable_rank

#: The two phases a gradient is taken at: step 0 and the last step.
PHASES = ("init", "trained")


def _grad(m: torch.nn.Module) -> torch.Tensor:
    g = m.weight.grad
    if not isinstance(g, torch.Tensor):  # every hidden Linear takes part in the loss
        raise RuntimeError(f"layer {m} got no gradient")
    return g.detach()


def charlm_gradients(
    *,
    seed: int,
    steps: int,
    n_layer: int,
    d_model: int,
    n_head: int,
    context: int,
    batch: int,
    lr: float,
    aux_lr: float = 3e-3,
) -> dict[str, list[dict]]:
    """``{"init": [...], "trained": [...]}``: per hidden Linear layer ``{"layer", "G", "W"}`` (float64 tensors)
    at step 0 and at step ``steps`` (after ``steps`` optimizer steps). ValueError for ``steps < 1``."""
    from steepest.app.reproduce.trained import build  # the same optimizer as experiment 'trained'
    from steepest.app.tasks.charlm import charlm_task

    if steps < 1:
        raise ValueError(f"steps must be >= 1 (the trained phase is taken after that many steps), got {steps}")
    task = charlm_task(
        "quick", n_layer=n_layer, d_model=d_model, n_head=n_head, context=context, batch_size=batch, steps=steps
    )
    torch.manual_seed(seed)
    model = task.make_model()
    opt = build("svd", model, lr, aux_lr, task.routing)
    hidden = [(n, m) for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and n.startswith("blocks.")]
    out: dict[str, list[dict]] = {}
    for step in range(steps + 1):
        opt.zero_grad(set_to_none=True)
        loss = task.loss(model, task.batch(seed, step))
        loss.backward()
        if step in (0, steps):
            out[PHASES[0] if step == 0 else PHASES[1]] = [
                {"layer": n, "G": _grad(m).double().clone(), "W": m.weight.detach().double().clone()} for n, m in hidden
            ]
        if step < steps:
            opt.step()
    return out


def make_gradient(kind: str, m: int, n: int, decay: float, gen: torch.Generator) -> torch.Tensor:
    """Gaussian m x n, or U diag(i^-decay) V^T with random orthonormal U, V (stable rank ~ zeta(2 decay))."""
    if kind == "gaussian":
        return torch.randn(m, n, generator=gen, dtype=torch.float64)
    k = min(m, n)
    U, _ = torch.linalg.qr(torch.randn(m, k, generator=gen, dtype=torch.float64))
    V, _ = torch.linalg.qr(torch.randn(n, k, generator=gen, dtype=torch.float64))
    s = torch.arange(1, k + 1, dtype=torch.float64) ** (-decay)
    return (U * s) @ V.T


def spread(T: torch.Tensor, W: torch.Tensor, eta: float) -> dict:
    """Raw variance of T's singular values (seed 003, Proposition 5), their scale-free variance
    Var(t)/mean(t)^2 (``cv2``), the stable rank of T, and the relative size of the update dW = eta T in
    the seed's Definition 6, ||dW|| / ||W||, for the Frobenius (``rel_fro``) and the spectral (``rel_op``)
    norm."""
    t = torch.linalg.svdvals(T.double())
    tn = t / t.mean()
    return {
        "var": float(t.var(unbiased=False)),
        "cv2": float(tn.var(unbiased=False)),
        "stable_rank": float(stable_rank(T.double())),
        "rel_fro": float(eta * t.norm() / torch.linalg.matrix_norm(W.double())),
        "rel_op": float(eta * t.max() / torch.linalg.matrix_norm(W.double(), ord=2)),
    }


def dualizer(G: torch.Tensor, p: float) -> torch.Tensor:
    return steepest.dualize(G, "schatten", p, dtype=torch.float64)  # p = inf is the exact polar factor


def resolved_spectrum(sv: torch.Tensor, ps, floor: float) -> dict:
    """The raw variance of the dualizer's t_i = (s_i/||s||_q)^(q-1) and mu = mean ln(s_i/||s||_q), per finite
    p > 1, over the singular values above ``floor`` x the largest (``rank`` of them; ``sv`` descending).

    A LayerNorm-fed layer's gradient has a structural null direction: float64 puts its singular value at ~1e-16
    of the largest, float32 at ~1e-8, a rounding that differs from one CPU to another. ln s of that value moves
    mu, and its t_i = (1e-8)^(1/(p-1)) is 0.55 at p = 32 where the exact dualizer has 0: neither is the gradient's.
    """
    keep = sv[sv > floor * sv[0]].double()
    var, mu = {}, {}
    for p in ps:
        if math.isfinite(p) and p > 1:
            q = 1 + 1 / (float(p) - 1)
            nq = torch.linalg.vector_norm(keep, ord=q)
            var[str(float(p))] = float(((keep / nq) ** (q - 1)).var(unbiased=False))
            mu[str(float(p))] = float(torch.log(keep).mean() - torch.log(nq))
    return {"rank": int(keep.numel()), "var": var, "mu": mu}


def measure(
    G: torch.Tensor, W: torch.Tensor, *, ps, eta: float, ns_steps: int, match_grid: int, resolve_floor: float
) -> dict:
    """Every quantity of one gradient ``G`` (weight ``W``): per p, Muon's Newton-Schulz output, the
    scale-free spread over the match grid, and the spectrum's statistics (also over its resolved part,
    :func:`resolved_spectrum`)."""
    per_p = {str(p): spread(dualizer(G, float(p)), W, eta) for p in ps}
    ns = steepest.polar(G.float(), method="newton_schulz", steps=ns_steps)
    grid = np.geomspace(1.1, 1024.0, match_grid)
    grid_var = [spread(dualizer(G, float(p)), W, eta)["cv2"] for p in grid]
    sv = torch.linalg.svdvals(G)
    return {
        "per_p": per_p,
        "ns": spread(ns, W, eta),
        "grid_p": grid.tolist(),
        "grid_var": grid_var,
        "stable_rank_G": float(stable_rank(G)),
        "k": min(G.shape),
        "var_log_s": float(torch.log(sv).var(unbiased=False)),
        "resolved": resolved_spectrum(sv, ps, resolve_floor),  # mu and the raw variance the re-derivation reads
    }
