"""Layer probes: capture each layer's incoming activations A and output gradients, and monitor training.

:class:`ActivationCapture` hooks ``nn.Linear`` and ``nn.Conv2d`` modules (conv inputs are unfolded
with ``F.unfold`` so that A has one row per output position and ``in*kh*kw`` columns, matching the
flattened kernel). It stores references only (no copies) and only on steps a predicate selects.

:class:`LayerMonitor` attaches to any optimizer through ``register_step_pre_hook`` /
``register_step_post_hook`` and, every ``every`` steps, writes one record per layer with
nr(G), st(A), their ratio, the Davis-Drusvyatskiy winner (spectral when nr(G) >= st(A), seed 001),
the Spec-Sign Advantage Index (seed 002) from K microbatch gradients, and the norms of the weight and
of the update (the weight change across the optimizer step).

How the Spec-Sign index is computed here, without extra backward passes: the gradient of a linear
layer is a sum over samples, G = sum_i dY_i^T A_i, so the hooks' A and dY (output gradient) give
exact per-chunk gradients. The batch's samples (dim 0) are split into K equal, disjoint chunks
(a remainder is dropped), G_k = K sum_{i in chunk k} dY_i^T A_i (so mean_k G_k is the batch
gradient), and c_1, c_* come from :func:`steepest.diagnostics.criteria.noise_scales`. The curvature
is the K-FAC input-factor proxy H_g = ||A D_g^T||_F^2 / N (:func:`criteria.kfac_curvature`, exact
for a squared loss on the layer); for exact layer-restricted HVPs use
:func:`criteria.layer_curvatures` with a loss closure.

It never changes training: hooks return ``None``, nothing is written into tensors autograd or the
optimizer use, no random numbers are drawn, and metrics run under ``torch.no_grad()``.

Example:
    >>> model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2))
    >>> opt = torch.optim.SGD(model.parameters(), lr=0.1)
    >>> mon = LayerMonitor(model, every=10, sinks=[MemorySink()]).attach(opt)
    >>> # ... train as usual; records land in the sinks every 10 steps; mon.detach() when done
"""

from __future__ import annotations

import math
import warnings
from typing import Callable, Iterable

import torch
import torch.nn.functional as F
from torch import nn

from steepest.diagnostics import criteria as C
from steepest.diagnostics.metrics import nuclear_rank, stable_rank
from steepest.norms import dual_norm, dualize, matrix_norm
from steepest.optim.functional import matrix_view

SUPPORTED = (nn.Linear, nn.Conv2d)


def _unsupported_reason(module: nn.Module) -> str | None:
    if isinstance(module, nn.Conv2d) and module.groups != 1:
        return f"grouped Conv2d (groups={module.groups}) is not supported"
    return None


def _conv_rows(module: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """(N, L, C*kh*kw) unfolded input of a Conv2d, honouring its padding mode."""
    if x.ndim == 3:
        x = x.unsqueeze(0)
    pad = module.padding
    if isinstance(pad, str):
        if pad == "valid":
            pad = (0, 0)
        else:  # 'same' (stride 1): total padding d*(k-1), the extra one on the right/bottom like torch
            tot = [d * (k - 1) for d, k in zip(module.dilation, module.kernel_size)]
            x = F.pad(x, (tot[1] // 2, tot[1] - tot[1] // 2, tot[0] // 2, tot[0] - tot[0] // 2))
            pad = (0, 0)
    if module.padding_mode != "zeros" and any(pad):
        x = F.pad(x, (pad[1], pad[1], pad[0], pad[0]), mode=module.padding_mode)
        pad = (0, 0)
    cols = F.unfold(x, module.kernel_size, dilation=module.dilation, padding=pad, stride=module.stride)
    return cols.transpose(1, 2)


def _per_sample(t: torch.Tensor, features: int) -> torch.Tensor:
    """(N, L, features) view of a Linear input/output-gradient of shape (..., features)."""
    if t.ndim == 1:
        return t.reshape(1, 1, features)
    return t.reshape(t.shape[0], -1, features)


class ActivationCapture:
    """Forward hooks that keep (input, output-gradient) references of Linear/Conv2d layers.

    ``when()`` is asked at every forward; only then (and only in training mode with autograd on)
    are references kept. ``layers`` maps names to modules; ``unsupported`` names skipped modules.
    Raises ValueError when the model has no supported layer.
    """

    def __init__(self, model: nn.Module, when: Callable[[], bool], grads: bool = True,
                 names: Iterable[str] | None = None) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        wanted = None if names is None else set(names)
        self.layers: dict[str, nn.Module] = {}
        self.unsupported: dict[str, str] = {}
        for name, m in model.named_modules():
            if not isinstance(m, SUPPORTED) or (wanted is not None and name not in wanted):
                continue
            reason = _unsupported_reason(m)
            if reason:
                self.unsupported[name] = reason
            else:
                self.layers[name] = m
        if not self.layers:
            kinds = ", ".join(t.__name__ for t in SUPPORTED)
            raise ValueError(f"no supported layer ({kinds}) found in {type(model).__name__}; diagnostics "
                             "need at least one nn.Linear or nn.Conv2d (groups=1) module")
        self.when = when
        self.grads = grads
        self.data: dict[str, list[list]] = {}
        self._handles = [m.register_forward_hook(self._hook(n)) for n, m in self.layers.items()]

    def _hook(self, name: str):
        def hook(module, inputs, output):
            if not (module.training and torch.is_grad_enabled() and inputs and self.when()):
                return None
            entry = [inputs[0].detach(), None]
            self.data.setdefault(name, []).append(entry)
            if self.grads and isinstance(output, torch.Tensor) and output.requires_grad:
                def keep(grad, entry=entry):
                    entry[1] = grad.detach()
                output.register_hook(keep)
            return None
        return hook

    def rows(self, name: str) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
        """Per forward call: (A (N, L, in_features), dY (N, L, out_features) or None)."""
        m = self.layers[name]
        out = []
        for x, dy in self.data.get(name, []):
            if isinstance(m, nn.Conv2d):
                A = _conv_rows(m, x)
                D = None if dy is None else (dy if dy.ndim == 4 else dy.unsqueeze(0)).flatten(2).transpose(1, 2)
            else:
                A = _per_sample(x, m.in_features)
                D = None if dy is None else _per_sample(dy, m.out_features)
            out.append((A, D))
        return out

    def clear(self) -> None:
        self.data = {}

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []
        self.clear()


def activation_matrix(calls, max_rows: int | None = None) -> torch.Tensor:
    """All calls' rows stacked into A (rows, in); ``max_rows`` keeps an evenly strided subset."""
    A = torch.cat([a.reshape(-1, a.shape[-1]) for a, _ in calls]) if calls else torch.zeros(0, 0)
    if max_rows is not None and A.shape[0] > max_rows:
        A = A[:: math.ceil(A.shape[0] / max_rows)]
    return A


def microbatch_grads(calls, K: int) -> tuple[torch.Tensor, int] | None:
    """K equal, disjoint microbatch gradients (K, out, in) and the samples b per microbatch.

    Each call's samples (dim 0) are split into K chunks of floor(N/K) (a remainder is dropped);
    G_k = K * sum over the chunk of dY^T A. ``None`` when an output gradient is missing or a call
    has fewer than K samples.
    """
    if not calls or any(d is None for _, d in calls):
        return None
    total, b = None, 0
    for A, D in calls:
        s = A.shape[0] // K
        if s == 0:
            return None
        A_k = A[: s * K].double().reshape(K, -1, A.shape[-1])
        D_k = D[: s * K].double().reshape(K, -1, D.shape[-1])
        g = K * (D_k.mT @ A_k)
        total = g if total is None else total + g
        b += s
    return total, b


class LayerMonitor:
    """Per-layer geometry diagnostics on a real model; attach to any optimizer, never changes training.

    Args:
        model: the model; every ``nn.Linear`` and ``nn.Conv2d`` (groups=1) is monitored.
        every: record every ``every`` optimizer steps (steps 0, every, 2*every, ...). Activations are
            captured only during the forward/backward of those steps.
        sinks: objects with ``write(record)`` / ``close()`` (see :mod:`steepest.diagnostics.sinks`).
        optimizer: attach at once (else call :meth:`attach`).
        microbatches: K >= 2 chunks of the batch for the Spec-Sign noise scales (0 disables the index).
        method: ``"exact"`` (SVD) or ``"estimate"`` (sketches) for nr(G) and st(A).
        max_rows: cap on the activation rows used for st(A) and the curvature (strided subset).
        layers: optional iterable of module names to restrict monitoring.

    Each record: step, layer, kind, shape, rows, nonfinite_activation, nonfinite_grad, nr_G, st_A,
    nr_st_ratio, dd_winner, grad_fro, grad_nuclear, grad_l1, weight_fro, weight_op, update_fro,
    update_op, update_max, c_1, c_star, H_sign, H_spec, spec_sign_index, spec_sign_winner,
    spec_sign_regime, microbatch_size (``None`` where not computable). Layers without a gradient at a
    recording step are skipped, listed in ``monitor.skipped`` and warned about once.
    """

    FIELDS = ("step", "layer", "kind", "shape", "rows", "nonfinite_activation", "nonfinite_grad", "nr_G", "st_A",
              "nr_st_ratio", "dd_winner", "grad_fro", "grad_nuclear", "grad_l1", "weight_fro", "weight_op",
              "update_fro", "update_op", "update_max", "c_1", "c_star", "H_sign", "H_spec", "spec_sign_index",
              "spec_sign_winner", "spec_sign_regime", "microbatch_size")

    def __init__(self, model: nn.Module, every: int = 10, sinks: Iterable = (), optimizer=None,
                 microbatches: int = 4, method: str = "exact", max_rows: int | None = None,
                 layers: Iterable[str] | None = None) -> None:
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ValueError(f"every must be a positive int, got {every!r}")
        if isinstance(microbatches, bool) or not isinstance(microbatches, int) or microbatches == 1 or microbatches < 0:
            raise ValueError(f"microbatches must be 0 (no Spec-Sign index) or an int >= 2, got {microbatches!r}")
        if method not in ("exact", "estimate"):
            raise ValueError(f"method must be 'exact' or 'estimate', got {method!r}")
        if max_rows is not None and (not isinstance(max_rows, int) or max_rows < 1):
            raise ValueError(f"max_rows must be a positive int or None, got {max_rows!r}")
        self.every, self.microbatches, self.method, self.max_rows = every, microbatches, method, max_rows
        self.sinks = list(sinks)
        self.step = 0
        self.skipped: dict[str, str] = {}
        self.capture = ActivationCapture(model, self.recording, grads=microbatches > 0, names=layers)
        for name, why in self.capture.unsupported.items():
            self._skip(name, why)
        self._opt_handles: list = []
        self._pending: dict[str, dict] = {}
        self._before: dict[str, torch.Tensor] = {}
        if optimizer is not None:
            self.attach(optimizer)

    # -------------------------------------------------------------------------------- wiring
    def recording(self) -> bool:
        """True during the step whose forward/backward will be recorded."""
        return self.step % self.every == 0

    def attach(self, optimizer: torch.optim.Optimizer) -> "LayerMonitor":
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise TypeError(f"attach needs a torch.optim.Optimizer, got {type(optimizer).__name__}")
        self._opt_handles.append(optimizer.register_step_pre_hook(self._pre))
        self._opt_handles.append(optimizer.register_step_post_hook(self._post))
        return self

    def detach(self) -> None:
        """Remove every hook (model and optimizer) and close the sinks."""
        for h in self._opt_handles:
            h.remove()
        self._opt_handles = []
        self.capture.remove()
        for s in self.sinks:
            s.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.detach()

    def _skip(self, name: str, why: str) -> None:
        if name not in self.skipped:
            self.skipped[name] = why
            warnings.warn(f"LayerMonitor skips layer {name!r}: {why}", stacklevel=3)

    # -------------------------------------------------------------------------------- metrics
    @torch.no_grad()
    def _pre(self, optimizer, args, kwargs) -> None:
        if not self.recording():
            return
        self._pending, self._before = {}, {}
        for name, m in self.capture.layers.items():
            if name in self.skipped:
                continue
            W = m.weight
            if W.grad is None:
                self._skip(name, "no gradient (frozen or unused)")
                continue
            self._pending[name] = self._grad_metrics(name, m)
            self._before[name] = W.detach().clone()

    def _grad_metrics(self, name: str, m: nn.Module) -> dict:
        G = matrix_view(m.weight.grad.detach()).float()
        calls = self.capture.rows(name)
        A = activation_matrix(calls, self.max_rows).float()
        rec = dict.fromkeys(self.FIELDS)
        rec.update(step=self.step, layer=name, kind=type(m).__name__, shape=list(m.weight.shape), rows=int(A.shape[0]))
        bad_a = bool(A.numel()) and not bool(torch.isfinite(A).all())
        bad_g = not bool(torch.isfinite(G).all())
        rec.update(nonfinite_activation=bad_a, nonfinite_grad=bad_g)
        if not bad_g:
            rec.update(nr_G=float(nuclear_rank(G, self.method)), grad_fro=float(matrix_norm(G, "frobenius")),
                       grad_nuclear=float(dual_norm(G, "spectral")), grad_l1=float(dual_norm(G, "linf")))
        if A.numel() and not bad_a:
            rec["st_A"] = float(stable_rank(A, self.method))
            if rec["nr_G"] is not None:
                nr, st = rec["nr_G"], rec["st_A"]
                rec["nr_st_ratio"] = nr / st if st > 0 else None
                rec["dd_winner"] = "none" if nr == 0 else ("spectral" if nr >= st else "frobenius")
        if self.microbatches and not (bad_a or bad_g) and A.numel():
            mb = microbatch_grads(calls, self.microbatches)
            if mb is not None and bool(torch.isfinite(mb[0]).all()):
                grads, b = mb
                c = C.noise_scales(grads, b, ("linf", "spectral"))
                H = {g: C.kfac_curvature(dualize(G, g), A) for g in ("linf", "spectral")}
                r = C.spec_sign_index(G, c["spectral"], c["linf"], b * self.microbatches, H["linf"], H["spectral"])
                rec.update(c_1=c["linf"], c_star=c["spectral"], H_sign=H["linf"], H_spec=H["spectral"],
                           spec_sign_index=r.index, spec_sign_winner=r.winner, spec_sign_regime=r.regime,
                           microbatch_size=b)
        return rec

    @torch.no_grad()
    def _post(self, optimizer, args, kwargs) -> None:
        try:
            if self.recording():
                for name, rec in self._pending.items():
                    W = self.capture.layers[name].weight.detach()
                    Wm, dW = matrix_view(W).float(), matrix_view(W - self._before[name]).float()
                    if bool(torch.isfinite(Wm).all()):
                        rec.update(weight_fro=float(matrix_norm(Wm, "frobenius")), weight_op=float(matrix_norm(Wm, "spectral")))
                    if bool(torch.isfinite(dW).all()):
                        rec.update(update_fro=float(matrix_norm(dW, "frobenius")),
                                   update_op=float(matrix_norm(dW, "spectral")), update_max=float(dW.abs().max()))
                    for s in self.sinks:
                        s.write(rec)
        finally:
            self._pending, self._before = {}, {}
            self.capture.clear()
            self.step += 1


__all__ = ["LayerMonitor", "ActivationCapture", "activation_matrix", "microbatch_grads", "SUPPORTED"]
