"""Slow, obviously correct float64 references, used only by the tests.

Everything here is written from the definitions with numpy (no shared code with the fast paths), so
an agreement test between the two is a real check.
"""

from __future__ import annotations

import math

import numpy as np
import torch


def _np(x: torch.Tensor) -> np.ndarray:
    return x.detach().to(torch.float64).cpu().numpy()


def ref_polar(G: torch.Tensor) -> torch.Tensor:
    """U V^T from a float64 numpy SVD, compact (singular values <= 1e-12 s_max dropped)."""
    A = _np(G)
    out = np.zeros_like(A)
    for idx in np.ndindex(A.shape[:-2]):
        U, s, Vh = np.linalg.svd(A[idx], full_matrices=False)
        if s.size == 0 or s[0] == 0:
            continue
        k = int((s > 1e-12 * s[0]).sum())
        out[idx] = U[:, :k] @ Vh[:k]
    return torch.from_numpy(out)


def ref_singular_values(G: torch.Tensor) -> np.ndarray:
    return np.linalg.svd(_np(G), compute_uv=False)


def ref_matrix_norm(X: torch.Tensor, norm: str, p: float | None = None) -> np.ndarray:
    A = _np(X)
    if A.ndim == 1:
        A = A[None]
    if norm == "frobenius":
        return np.sqrt((A**2).sum(axis=(-2, -1)))
    if norm == "linf":
        return np.abs(A).max(axis=(-2, -1))
    s = np.linalg.svd(A, compute_uv=False)
    if norm == "spectral":
        p = math.inf
    if p is None:
        raise ValueError("a Schatten norm needs p")
    if math.isinf(p):
        return s.max(axis=-1)
    return (s**p).sum(axis=-1) ** (1.0 / p)


def ref_dual_norm(G: torch.Tensor, norm: str, p: float | None = None) -> np.ndarray:
    A = _np(G)
    if A.ndim == 1:
        A = A[None]
    if norm == "frobenius":
        return np.sqrt((A**2).sum(axis=(-2, -1)))
    if norm == "linf":
        return np.abs(A).sum(axis=(-2, -1))
    s = np.linalg.svd(A, compute_uv=False)
    if norm == "spectral":
        p = math.inf
    if p is None:
        raise ValueError("a Schatten norm needs p")
    if math.isinf(p):
        return s.sum(axis=-1)
    if p == 1:
        return s.max(axis=-1)
    q = p / (p - 1)
    return (s**q).sum(axis=-1) ** (1.0 / q)


def ref_dualize(G: torch.Tensor, norm: str, p: float | None = None) -> torch.Tensor:
    """Dualizers from their definitions (seed 003, Proposition 2), one matrix at a time; ``"power"`` (p holds
    the knob a) is the spectral-power direction at the polar factor's Frobenius norm."""
    A = _np(G)
    squeeze = A.ndim == 1
    if squeeze:
        A = A[None]
    out = np.zeros_like(A)
    for idx in np.ndindex(A.shape[:-2]):
        M = A[idx]
        if not np.any(M):
            continue
        if norm == "frobenius":
            out[idx] = M / np.sqrt((M**2).sum())
        elif norm == "linf":
            out[idx] = np.sign(M)
        else:
            U, s, Vh = np.linalg.svd(M, full_matrices=False)
            keep = s > 1e-12 * s[0]
            if norm == "power":  # the knob a = p: U diag(s^a) V^T at ||.||_F = sqrt(rank) (spectral_power)
                t = np.where(keep, np.where(keep, s / s[0], 1.0) ** p, 0.0)
                out[idx] = (U * (t * math.sqrt(keep.sum()) / np.linalg.norm(t))) @ Vh
                continue
            if norm == "spectral":
                p = math.inf
            if p is None:
                raise ValueError("a Schatten norm needs p")
            if math.isinf(p):
                t = keep.astype(float)
            elif p == 1:
                top = s >= s[0] * (1 - 1e-4)
                t = top / top.sum()
            else:
                q = p / (p - 1)
                t = np.where(keep, s, 0.0) ** (q - 1) / ((s**q).sum() ** (1 / q)) ** (q - 1)
            out[idx] = (U * t) @ Vh
    return torch.from_numpy(out[0] if squeeze else out)


def ref_shape_scale(shape, rule: str) -> float:
    """Shape rules on an (m, n) matrix view (the lecture notes' fan_out x fan_in)."""
    m, n = shape[-2], shape[-1]
    return {
        "none": 1.0,
        "muon": math.sqrt(max(1, m / n)),
        "rms": 0.2 * math.sqrt(max(m, n)),
        "spectral": math.sqrt(m / n),
    }[rule]


def ref_polar_iteration(M: np.ndarray, table: list, normalization: str, safety: float, eps: float = 1e-7) -> np.ndarray:
    """The odd-quintic polar iteration in float64, from its definition, one matrix at a time.

    X_0 = M / max(safety ||M||_F, eps) (Frobenius) or M / (safety ||s(M)||_8) (Schatten-8), on the wide
    orientation; X <- a X + b (X X^T) X + c (X X^T)^2 X for each (a, b, c) of ``table``.
    """
    out = np.zeros_like(M)
    for idx in np.ndindex(M.shape[:-2]):
        X = M[idx]
        tall = X.shape[0] > X.shape[1]
        X = X.T if tall else X
        if normalization == "frobenius":
            X = X / max(safety * np.sqrt((X**2).sum()), eps)
        else:
            s8 = (np.linalg.svd(X, compute_uv=False) ** 8).sum() ** (1 / 8)
            X = X / (safety * s8) if s8 > 0 else X
        for a, b, c in table:
            A = X @ X.T
            X = a * X + (b * A + c * A @ A) @ X
        out[idx] = X.T if tall else X
    return out


class RefSteepest:
    """Float64 loop of SteepestDescent for one parameter (momentum EMA / Nesterov, wd, both step sizes).

    ``table``/``normalization``/``safety`` select the polynomial polar iteration instead of the exact
    polar factor (spectral only); ``lr_scale`` multiplies the update but not the weight decay.
    """

    def __init__(
        self,
        W: torch.Tensor,
        *,
        lr,
        norm,
        p=None,
        momentum=0.0,
        nesterov=False,
        weight_decay=0.0,
        step_size="fixed",
        scale_rule="none",
        tensor_mode="flatten",
        table=None,
        normalization="frobenius",
        safety=1.0,
        lr_scale=1.0,
    ):
        self.W = _np(W).copy()
        self.buf = np.zeros_like(self.W)
        self.kw = dict(
            lr=lr,
            norm=norm,
            p=p,
            momentum=momentum,
            nesterov=nesterov,
            wd=weight_decay,
            step_size=step_size,
            scale_rule=scale_rule,
            tensor_mode=tensor_mode,
            table=table,
            normalization=normalization,
            safety=safety,
            lr_scale=lr_scale,
        )

    def step(self, grad: torch.Tensor) -> np.ndarray:
        k = self.kw
        g = _np(grad).reshape(self.W.shape)
        if k["momentum"] > 0:
            mu = k["momentum"]
            self.buf = mu * self.buf + (1 - mu) * g
            M = (1 - mu) * g + mu * self.buf if k["nesterov"] else self.buf
        else:
            M = g
        M2 = M.reshape(M.shape[0], -1) if M.ndim > 2 and k["tensor_mode"] == "flatten" else M
        if k["table"] is not None:
            D2 = ref_polar_iteration(M2, k["table"], k["normalization"], k["safety"])
        else:
            D2 = _np(ref_dualize(torch.from_numpy(M2), k["norm"], k["p"]))
        scale = ref_shape_scale(M2.shape, k["scale_rule"]) if M2.ndim >= 2 else 1.0
        if k["step_size"] == "dual":
            dn = ref_dual_norm(torch.from_numpy(M2), k["norm"], k["p"])
            D2 = D2 * (dn[..., None, None] if np.ndim(dn) else dn)
        D = D2.reshape(M.shape)
        self.W = self.W * (1 - k["lr"] * k["wd"]) - k["lr"] * k["lr_scale"] * scale * D
        return self.W
