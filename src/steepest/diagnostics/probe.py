"""Layer probes: capture each layer's incoming activations A and output gradients, and monitor training.

:class:`ActivationCapture` (:mod:`steepest.diagnostics.capture`) hooks ``nn.Linear``, GPT-2's ``Conv1D``
(its matrix is W^T), ``nn.Conv1d`` and ``nn.Conv2d`` (groups=1; inputs unfolded so that A has one row per
output position); depthwise, grouped and other convs are reported with the reason. It stores references
only (no copies), only on steps a predicate selects, and counts a gradient-checkpointed layer's rows once.

Works with ``optimizer.step(closure)`` (the gradients are read after the closure ran), ``torch.compile``-d
models (names of the plain model), and resume (:meth:`LayerMonitor.state_dict` / ``load_state_dict``).
Every recording step that skips layers warns once, in one line, when the set of skipped layers changes
(``monitor.skip_report()``); a layer without a gradient at one step is recorded again at the next.

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
optimizer use, random sketches (wide layers' ||A||_op) use a private generator seeded by the step (the
global RNG is untouched), and metrics run under ``torch.no_grad()``.

Example:
    >>> model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2))
    >>> opt = torch.optim.SGD(model.parameters(), lr=0.1)
    >>> mon = LayerMonitor(model, every=10, sinks=[MemorySink()]).attach(opt)
    >>> # ... train as usual; records land in the sinks every 10 steps; mon.detach() when done
"""

from __future__ import annotations

import math
import warnings
import weakref
from typing import Iterable

import torch
from torch import nn

from steepest.diagnostics import criteria as C
from steepest.diagnostics.capture import SUPPORTED, ActivationCapture  # noqa: F401 (public here)
from steepest.diagnostics._batched_metrics import activation_matrix, microbatch_grads  # noqa: F401 (public here)
from steepest.diagnostics._batched_metrics import ACT_BLOCK, ACT_COLD_ITERS, ACT_ITERS, WARM_ITERS, gram as _gram, grouped_eigvalsh
from steepest.diagnostics._batched_metrics import grouped_top_eigen, singular_values, unit as _unit
from steepest.diagnostics.metrics import nuclear_norm, stable_rank
from steepest.linalg.estimate import spectral_norm_estimate, top_singular_pair
from steepest.geometry import dualize, matrix_norm
from steepest.geometry import matrix_view

#: st(A) is exact (Gram eigenvalues) up to this many columns; wider A use the block-Krylov ||A||_op.
GRAM_MAX_COLS = 256
#: Rows (evenly strided) of A used for the K-FAC curvatures of the Spec-Sign index.
CURVATURE_ROWS = 512
#: LayerMonitor's ``method`` values (see its docstring).
MONITOR_METHODS = ("fast", "exact", "estimate")


def _finite(X: torch.Tensor) -> bool:
    """All entries finite, in one reduction pass (max and min propagate NaN; +-inf shows in them)."""
    if X.numel() == 0:
        return True
    lo, hi = torch.aminmax(X)
    return bool(torch.isfinite(lo) & torch.isfinite(hi))


class LayerMonitor:
    """Per-layer geometry diagnostics on a real model; attach to any optimizer, never changes training.

    Args:
        model: the model; every ``nn.Linear``, GPT-2 ``Conv1D``, ``nn.Conv1d`` and ``nn.Conv2d`` (groups=1)
            is monitored (a ``torch.compile``-d model is unwrapped).
        every: record every ``every`` optimizer steps (steps 0, every, 2*every, ...). Activations are
            captured only during the forward/backward of those steps.
        sinks: objects with ``write(record)`` / ``close()`` (see :mod:`steepest.diagnostics.sinks`).
        optimizer: attach at once (else call :meth:`attach`).
        microbatches: K >= 2 chunks of the batch for the Spec-Sign noise scales (0 disables the index).
        method: ``"fast"`` (default): nr(G) and ||G||_* from every eigenvalue of G's float64 Gram matrix
            (as :func:`~steepest.diagnostics.metrics.gram_singular_values`, exact up to ~1e-8 relative; all
            layers solved in one batched call per size, ``_batched_metrics``); ||W||_op and ||dW||_op from
            the top eigenvalue of their float32 Grams (exact, ~1e-6, or warm-started: ``warm_start``);
            st(A) = ||A||_F^2 / ||A||_op^2 with ||A||_F exact and ||A||_op by a block Krylov started from A's
            column mean (activations' dominant direction) and Gaussian columns
            (:func:`~steepest.linalg.estimate.top_eigenpair` on A's float32 Gram when A has <=
            ``GRAM_MAX_COLS`` (256) columns, else :func:`~steepest.linalg.estimate.top_singular_pair` on A):
            a lower bound, so st(A) is never below the exact value; within 1e-4 of it on the charlm default
            model over 300 steps (benchmarks/HISTORY.md, "LayerMonitor overhead, warm starts"). ``"exact"``: every norm by
            an SVD (the slow reference). ``"estimate"``: sketches for ||G||_* and ||A||_op (large layers).
        warm_start: ``True``: ||W||_op, ||dW||_op (and ||A||_op) by a block Krylov from the previous record's
            top singular vectors instead of an eigensolve after the first record (lower bounds; within
            1.4e-4 relative for ||W||_op, 6e-7 for ||dW||_op on charlm, worst at the first warm record after
            a random init, whose spectrum has no gap at the top). The vectors are kept in :meth:`state_dict`,
            so a resume through ``load_state_dict(state_dict())`` writes the same records; a resume that
            passes only the step (the ``steepest compare`` and Hugging Face integrations today) starts exact
            again, so its records differ from an uninterrupted run's by that accuracy. Default ``False``.
        max_rows: cap on the activation rows used for st(A) (an evenly strided subset; ``None``: all rows).
            A row subset biases st(A) low (the subset's top eigenvalue is inflated, Marchenko-Pastur):
            -21% with 512 of 2048 token rows on the charlm model, so the default uses every row.
        layers: optional iterable of module names to restrict monitoring.
        spec_sign_every: compute the Spec-Sign index on every ``spec_sign_every``-th recorded step (default
            10: each 100 optimizer steps with ``every=10``). It needs K microbatch gradients per layer (as
            many flops as the layer's weight gradient) and K nuclear norms, about 2/3 of a training step
            on the charlm model: on every record it alone would add ~7% (benchmarks/RESULTS.md, "Estimates").
            Its curvatures use <= ``CURVATURE_ROWS`` (512) strided rows of A (H_g is linear in A^T A / N).

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
                 microbatches: int = 4, method: str = "fast", max_rows: int | None = None,
                 layers: Iterable[str] | None = None, spec_sign_every: int = 10, warm_start: bool = False) -> None:
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ValueError(f"every must be a positive int, got {every!r}")
        if isinstance(microbatches, bool) or not isinstance(microbatches, int) or microbatches == 1 or microbatches < 0:
            raise ValueError(f"microbatches must be 0 (no Spec-Sign index) or an int >= 2, got {microbatches!r}")
        if method not in MONITOR_METHODS:
            raise ValueError(f"method must be one of {MONITOR_METHODS}, got {method!r}")
        if isinstance(spec_sign_every, bool) or not isinstance(spec_sign_every, int) or spec_sign_every < 1:
            raise ValueError(f"spec_sign_every must be a positive int (records between Spec-Sign indices), "
                             f"got {spec_sign_every!r}")
        if max_rows is not None and (not isinstance(max_rows, int) or max_rows < 1):
            raise ValueError(f"max_rows must be a positive int or None, got {max_rows!r}")
        self.every, self.microbatches, self.method, self.max_rows = every, microbatches, method, max_rows
        self.spec_sign_every = spec_sign_every
        self.warm_start = bool(warm_start)
        self.sinks = list(sinks)
        self.step = 0
        self.capture = ActivationCapture(model, self.recording, grads=microbatches > 0, names=layers)
        self.skipped: dict[str, str] = dict(self.capture.unsupported)
        self._warned: dict[str, str] = {}
        self._last_record: int | None = None
        self._opt_handles: list = []
        self._optimizer = None
        self._deferred = False
        self._pending: dict[str, dict] = {}
        self._before: dict[str, torch.Tensor] = {}
        self._warm: dict[tuple, torch.Tensor] = {}  # (quantity, layer) -> last record's top singular vector
        if optimizer is not None:
            self.attach(optimizer)

    # -------------------------------------------------------------------------------- wiring
    def recording(self) -> bool:
        """True during the step whose forward/backward will be recorded."""
        return self.step % self.every == 0

    def attach(self, optimizer: torch.optim.Optimizer) -> "LayerMonitor":
        """Hook ``optimizer``'s steps (once: attaching it again is a no-op; a second optimizer is an error,
        since each of its steps would count as a step of the same training)."""
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise TypeError(f"attach needs a torch.optim.Optimizer, got {type(optimizer).__name__}")
        if self._optimizer is not None:
            if self._optimizer() is optimizer:
                return self
            if self._optimizer() is not None:
                raise ValueError("this LayerMonitor is already attached to another optimizer: detach() it first, "
                                 "or use one LayerMonitor per optimizer (each counts its optimizer's steps)")
        self._optimizer = weakref.ref(optimizer)
        self._opt_handles = [optimizer.register_step_pre_hook(self._pre), optimizer.register_step_post_hook(self._post)]
        return self

    def detach(self) -> None:
        """Remove every hook (model and optimizer) and close the sinks."""
        for h in self._opt_handles:
            h.remove()
        self._opt_handles, self._optimizer = [], None
        self.capture.remove()
        for s in self.sinks:
            s.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.detach()

    def state_dict(self) -> dict:
        """The monitor's own state for a checkpoint: ``{"step": next step to record or skip, "every": ...,
        "warm": {"W|layer": last record's top singular vector, ...}}`` (the warm starts, so that a resumed run
        writes the same records as an uninterrupted one)."""
        return {"step": self.step, "every": self.every,
                "warm": {f"{q}|{name}": v.clone() for (q, name), v in self._warm.items()}}

    def load_state_dict(self, state: dict) -> None:
        """Resume: continue at ``state["step"]``, and drop from every sink with ``rewind(step)`` the records of
        steps >= it (written after the checkpoint by an interrupted run), so no step appears twice."""
        if not isinstance(state, dict) or not isinstance(state.get("step"), int) or state["step"] < 0:
            raise ValueError(f"load_state_dict needs a LayerMonitor.state_dict() ({{'step': int >= 0, ...}}), "
                             f"got {state!r}")
        if state.get("every", self.every) != self.every:
            warnings.warn(f"LayerMonitor resumed with every={self.every}, the checkpoint used every={state['every']}",
                          stacklevel=2)
        self.step = state["step"]
        warm = state.get("warm") or {}  # none (older checkpoint): the next record solves exactly (eigh)
        self._warm = {tuple(k.split("|", 1)): v.clone() for k, v in warm.items() if isinstance(v, torch.Tensor)}
        for s in self.sinks:
            if callable(getattr(s, "rewind", None)):
                s.rewind(self.step)

    def skip_report(self) -> str:
        """One line: every layer not recorded at the last recording step, and why ('' when none)."""
        if not self.skipped:
            return ""
        parts = "; ".join(f"{n!r} ({why})" for n, why in self.skipped.items())
        return f"LayerMonitor step {self._last_record}: {len(self.skipped)} layer(s) not recorded: {parts}"

    def _report_skips(self, skipped: dict[str, str]) -> None:
        """Record this step's skipped layers; warn (one line, all of them) when the set or a reason changed."""
        self.skipped = {**self.capture.unsupported, **skipped}
        if self.skipped and self.skipped != self._warned:
            warnings.warn(self.skip_report(), stacklevel=4)
        self._warned = dict(self.skipped)

    # -------------------------------------------------------------------------------- metrics
    @torch.no_grad()
    def _pre(self, optimizer, args, kwargs) -> None:
        if not self.recording():
            return
        self._pending, self._before = {}, {}
        closure = kwargs.get("closure", args[0] if args else None)
        # step(closure): the gradients are computed inside step(), so they are read in the post hook
        self._deferred = closure is not None
        names = [n for n, m in self.capture.layers.items() if self._deferred or m.weight.grad is not None]
        self._before = {n: self.capture.layers[n].weight.detach().clone() for n in names}
        if not self._deferred:
            self._grad_pass()

    def _grad_pass(self) -> None:
        """Gradient and activation metrics of every layer with a gradient now (into ``self._pending``)."""
        work, skipped = {}, {}
        self._last_record = self.step
        for name, m in self.capture.layers.items():
            W = m.weight
            if W.grad is None:
                skipped[name] = ("frozen (requires_grad=False)" if not W.requires_grad else
                                 "no gradient at this step (not used in the forward/backward)")
                self._before.pop(name, None)
                continue
            work[name] = self._grad_inputs(name, m)
        self._report_skips(skipped)
        fast, spec = self.method == "fast", self._spec_sign_due()
        eig = {}
        if fast:  # every layer's Gram matrix first, then one batched eigensolve per (size, dtype)
            mats, vecs, mats_A, means = {}, [], {}, {}
            for name, (rec, G, A, calls, MA) in work.items():
                if not rec["nonfinite_grad"]:
                    mats[("G", name)] = _gram(G, torch.float64)
                    if spec and A.numel() and not rec["nonfinite_activation"]:
                        vecs.append(("G", name))  # eigenvectors reused by the polar curvature
                if isinstance(MA, torch.Tensor) and not rec["nonfinite_activation"]:
                    mats_A[("A", name)] = MA
                    means[("A", name)] = _unit(A.sum(dim=0))
            eig = grouped_eigvalsh(mats, vecs)  # ||G||_* needs every eigenvalue: exact
            eig.update(self._top_eigen(mats_A, ACT_ITERS, ACT_BLOCK, means))  # st(A) = tr(M) / lambda_1(M): the top one only
        for name, (rec, G, A, calls, MA) in work.items():
            top_A = None
            if ("A", name) in eig:  # (lambda_1, tr) of A's float32 Gram; the trace exact in float64
                top_A = (float(eig[("A", name)][0]), float(MA.diagonal().double().sum()))
            self._pending[name] = self._grad_metrics(rec, G, A, calls, eig.get(("G", name)), top_A,
                                                     MA if isinstance(MA, float) else None)

    def _top_eigen(self, mats: dict, iters: int = WARM_ITERS, block: int = 2, extra: dict | None = None) -> dict:
        """lambda_1 of each Gram matrix in ``mats``: warm-started block Krylov from the last record's vector
        (:func:`grouped_top_eigen`), exact (eigh) where no vector is kept (first record, resume); vectors kept."""
        if not self.warm_start:  # history-free: W, dW exact (values only); A from its column mean
            if extra is None:
                return {k: (lam[-1], None) for k, (lam, _) in grouped_eigvalsh(mats).items()}
            warm = {k: m for k, m in extra.items() if k in mats and m.shape[0] == mats[k].shape[-1]}
            device = next(iter(mats.values())).device if mats else None
            return grouped_top_eigen(mats, warm, self._generator(device), iters=ACT_COLD_ITERS, block=block)
        warm = {k: v for k, v in self._warm.items() if k in mats and v.shape[0] == mats[k].shape[-1]}
        if extra:  # more starting directions (A's column mean) next to the kept vector
            warm = {k: torch.stack([v, extra[k]], dim=-1) if extra.get(k) is not None and extra[k].shape == v.shape else v
                    for k, v in warm.items()}
        device = next(iter(mats.values())).device if mats else None
        out = grouped_top_eigen(mats, warm, self._generator(device), iters=iters, block=block)
        for k, (_, v) in out.items():
            if v is None:
                self._warm.pop(k, None)
            else:
                self._warm[k] = v
        return out

    def _spec_sign_due(self) -> bool:
        return bool(self.microbatches) and (self.step // self.every) % self.spec_sign_every == 0

    def _grad_inputs(self, name: str, m: nn.Module) -> tuple:
        G = matrix_view(m.weight.grad.detach(), transposed=self.capture.transposed[name]).float()
        calls = self.capture.rows(name)
        A = activation_matrix(calls, self.max_rows).float()
        rec = dict.fromkeys(self.FIELDS)
        MA = None
        if self.method == "fast" and A.numel() and A.shape[-1] <= GRAM_MAX_COLS:
            MA = _gram(A, torch.float32)  # a non-finite entry of A makes its diagonal entry inf/NaN: checked on MA
            bad_a = not bool(torch.isfinite(MA.diagonal()).all()) and not _finite(A)  # (or the Gram overflowed)
        elif self.method == "fast" and A.numel() >= 2**16:  # block-Krylov st(A): ||A||_F is needed anyway
            MA = float(torch.linalg.vector_norm(A)) ** 2  # finite iff A is (or it overflowed: then scan A)
            bad_a = not math.isfinite(MA) and not _finite(A)
        else:
            bad_a = bool(A.numel()) and not _finite(A)
        rec.update(step=self.step, layer=name, kind=type(m).__name__, shape=list(m.weight.shape), rows=int(A.shape[0]),
                   nonfinite_activation=bad_a, nonfinite_grad=not _finite(G))
        return rec, G, A, calls, MA

    def _grad_metrics(self, rec: dict, G: torch.Tensor, A: torch.Tensor, calls, eig_G=None, top_A=None,
                      fro2_A=None) -> dict:
        """Fill the gradient/activation fields; ``eig_G``: (eigenvalues, vectors) of the float64 Gram of G from
        the batched solve; ``top_A``: (lambda_1, trace) of A's float32 Gram (fast method); ``fro2_A``: ||A||_F^2."""
        bad_a, bad_g = rec["nonfinite_activation"], rec["nonfinite_grad"]
        nuc = None
        if not bad_g:
            if self.method != "fast":  # "exact": SVD; "estimate": deflated Lanczos sketch (metrics.nuclear_norm)
                nuc_t, fro_t = nuclear_norm(G, self.method, self._generator(G.device)), matrix_norm(G, "frobenius")
            else:  # float64 Gram eigenvalues: exact up to ~1e-8 (metrics.gram_singular_values)
                sv = singular_values(eig_G[0])
                nuc_t, fro_t = sv.sum(), sv.square().sum().sqrt()
            nuc, fro = float(nuc_t), float(fro_t)
            rec.update(nr_G=nuc * nuc / (fro * fro) if fro > 0 else 0.0, grad_fro=fro, grad_nuclear=nuc,
                       grad_l1=float(G.abs().sum()))
        if A.numel() and not bad_a:
            rec["st_A"] = self._stable_rank(A, top_A, fro2_A, rec["layer"])
            if rec["nr_G"] is not None:
                nr, st = rec["nr_G"], rec["st_A"]
                rec["nr_st_ratio"] = nr / st if st > 0 else None
                rec["dd_winner"] = C.dd_winner(nr, st)
        if self._spec_sign_due() and not (bad_a or bad_g) and A.numel():
            exact = self.method == "exact"  # the slow reference: float64 microbatches, SVD norms, polar by SVD
            mb = microbatch_grads(calls, self.microbatches, dtype=torch.float64 if exact else torch.float32)
            if mb is not None and _finite(mb[0]):
                grads, b = mb
                c = C.noise_scales(grads, b, ("linf", "spectral"), method="exact" if exact else "gram")
                S = A if A.shape[0] <= CURVATURE_ROWS else A[:: math.ceil(A.shape[0] / CURVATURE_ROWS)]
                if exact:
                    H = {"linf": C.kfac_curvature(torch.sign(G), S), "spectral": C.kfac_curvature(dualize(G, "spectral"), S)}
                else:  # float32 products (sums of squares: ~1e-6 relative), polar curvature without the polar factor
                    vec = eig_G if eig_G is not None and eig_G[1] is not None else None  # G's Gram, solved above
                    H = {"linf": C.kfac_curvature(torch.sign(G), S, torch.float32),
                         "spectral": C.kfac_polar_curvature(G, S, torch.float32, eig=vec)}
                r = C.spec_sign_index(G, c["spectral"], c["linf"], b * self.microbatches, H["linf"], H["spectral"],
                                      nuclear=nuc)
                rec.update(c_1=c["linf"], c_star=c["spectral"], H_sign=H["linf"], H_spec=H["spectral"],
                           spec_sign_index=r.index, spec_sign_winner=r.winner, spec_sign_regime=r.regime,
                           microbatch_size=b)
        return rec

    def _generator(self, device=None) -> torch.Generator:
        """A private generator seeded by the step: reproducible sketches, global RNG untouched."""
        return torch.Generator(device=device if device is not None else "cpu").manual_seed(self.step)

    def _stable_rank(self, A: torch.Tensor, top_A=None, fro2=None, name=None) -> float:
        """st(A) = ||A||_F^2 / ||A||_op^2: tr / lambda_1 of A's float32 Gram when in <= GRAM_MAX_COLS (``top_A``),
        else ||A||_F^2 over a block-Krylov ||A||_op^2 (warm-started from the last record's vector if kept)."""
        if self.method == "exact":
            return float(stable_rank(A))
        if self.method == "estimate" or A.shape[-1] > GRAM_MAX_COLS:
            if fro2 is None:
                fro2 = float(A.double().square().sum()) if A.numel() < 2**16 else float(torch.linalg.vector_norm(A)) ** 2
            if self.method == "estimate":
                op = float(spectral_norm_estimate(A, generator=self._generator(A.device)))
            else:  # cold: 4 steps x 4 columns (spectral_norm_estimate's defaults); warm: the monitor's warm steps
                v0 = self._warm.get(("A", name)) if self.warm_start else None
                cold = v0 is None or v0.shape[-1] != A.shape[-1]
                mean = _unit(A.sum(dim=0))  # activations' dominant direction: a starting column
                it, bl = (ACT_COLD_ITERS, ACT_BLOCK) if cold else (ACT_ITERS, ACT_BLOCK)
                start = mean if cold else torch.stack([v0, mean], dim=-1)
                s, v = top_singular_pair(A, start, it, bl, self._generator(A.device))
                op = float(s)
                if math.isfinite(op) and self.warm_start:
                    self._warm[("A", name)] = v
            return fro2 / (op * op) if op > 0 else 0.0
        if top_A is None:
            lam = grouped_eigvalsh({0: _gram(A, torch.float32)})[0][0]
            sv2 = singular_values(lam).double().square()
            return float(sv2.sum() / sv2[0]) if float(sv2[0]) > 0 else 0.0
        lam1, tr = top_A
        return tr / lam1 if lam1 > 0 else 0.0

    @torch.no_grad()
    def _post(self, optimizer, args, kwargs) -> None:
        try:
            if self.recording():
                if self._deferred:  # step(closure): the closure's backward has filled the gradients now
                    self._grad_pass()
                mats, mW = {}, {}
                for name in self._pending:
                    W, tr = self.capture.layers[name].weight.detach(), self.capture.transposed[name]
                    Wm, dW = matrix_view(W, transposed=tr).float(), matrix_view(W - self._before[name], transposed=tr).float()
                    mW[name] = (Wm, dW, _finite(Wm), _finite(dW))
                    if self.method != "exact":  # every layer's float32 Gram first, then batched eigensolves
                        mats.update({(q, name): _gram(X, torch.float32) for q, X, f in (("W", Wm, mW[name][2]), ("dW", dW, mW[name][3])) if f})
                # top eigenvalue of the float32 Gram: exact (~eps_32, Weyl) on refresh records, else warm Krylov
                eig = self._top_eigen(mats)
                for name, rec in self._pending.items():
                    Wm, dW, ok_w, ok_d = mW[name]
                    if self.method == "exact":
                        op = [float(matrix_norm(X, "spectral")) if f else None for X, f in ((Wm, ok_w), (dW, ok_d))]
                    else:
                        op = [math.sqrt(max(float(eig[(q, name)][0]), 0.0)) if (q, name) in eig else None for q in ("W", "dW")]
                    if ok_w:
                        rec.update(weight_fro=float(matrix_norm(Wm, "frobenius")), weight_op=op[0])
                    if ok_d:
                        rec.update(update_fro=float(matrix_norm(dW, "frobenius")), update_op=op[1],
                                   update_max=float(dW.abs().max()))
                    for s in self.sinks:
                        s.write(rec)
        finally:
            self._pending, self._before, self._deferred = {}, {}, False
            self.capture.clear()
            self.step += 1


__all__ = ["LayerMonitor", "ActivationCapture", "activation_matrix", "microbatch_grads", "SUPPORTED"]
