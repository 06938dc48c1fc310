"""LayerMonitor: per-layer geometry diagnostics during training, attached to any optimizer.

Three concerns, three places: :mod:`~steepest.diagnostics.capture` hooks the layers and keeps their inputs A
and output gradients dY (on recording steps only, dY only on those with the Spec-Sign index; references
only); :mod:`~steepest.diagnostics._methods` and :mod:`~steepest.diagnostics._fast` compute a record's numbers, one object per ``method``
(:data:`METHODS`); :mod:`~steepest.diagnostics.sinks` writes them. This module wires them to the
optimizer's step hooks and keeps the step count and the resume state.

Works with ``optimizer.step(closure)`` (gradients read after the closure ran), ``torch.compile``-d models
(names of the plain model) and resume (:meth:`LayerMonitor.state_dict`). A recording step that skips layers
warns once, in one line, when the set of skipped layers changes (``monitor.skip_report()``). It never
changes training: hooks return ``None``, nothing autograd or the optimizer use is written, sketches use a
private generator seeded by the step, and nothing it does makes ``optimizer.step()`` raise after the step
was applied (a failing metric or sink is a warning; the step stands, applied once).

Example:
    >>> model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2))
    >>> opt = torch.optim.SGD(model.parameters(), lr=0.1)
    >>> from steepest.diagnostics import MemorySink
    >>> mon = LayerMonitor(model, every=10, sinks=[MemorySink()]).attach(opt)
    >>> # ... train as usual; records land in the sinks every 10 steps; mon.detach() when done
"""

from __future__ import annotations

import warnings
import weakref
from collections.abc import Iterable

import torch
from torch import nn

from steepest.diagnostics._batched_metrics import WarmStarts, activation_matrix, microbatch_grads  # noqa: F401 (public here)
from steepest.diagnostics._fast import Fast
from steepest.diagnostics._methods import CURVATURE_ROWS, GRAM_MAX_COLS, Estimate, Exact, Layer, finite  # noqa: F401
from steepest.diagnostics.capture import SUPPORTED, ActivationCapture  # noqa: F401 (public here)
from steepest.diagnostics.sinks import Guarded
from steepest.geometry import matrix_view

#: LayerMonitor's ``method`` -> the object that computes its records' numbers.
METHODS = {"fast": Fast, "exact": Exact, "estimate": Estimate}
#: LayerMonitor's ``method`` values (see its docstring).
MONITOR_METHODS = tuple(METHODS)


class LayerMonitor:
    """Per-layer geometry diagnostics on a real model; attach to any optimizer, never changes training.

    Args:
        model: the model; every ``nn.Linear``, GPT-2 ``Conv1D``, ``nn.Conv1d`` and ``nn.Conv2d`` (groups=1)
            is monitored (a ``torch.compile``-d model is unwrapped).
        every: record every ``every`` optimizer steps (steps 0, every, 2*every, ...). Activations are
            captured only during the forward/backward of those steps.
        sinks: objects with ``write(record)`` / ``close()`` (see :mod:`steepest.diagnostics.sinks`); one that
            raises is warned about once and disabled, training goes on (``monitor.out.failed``).
        optimizer: attach at once (else call :meth:`attach`).
        microbatches: K >= 2 chunks of the batch for the Spec-Sign noise scales (0 disables the index).
        method: ``"fast"`` (default): Gram eigenvalues, all layers solved in one batched call per size; nr(G)
            exact to ~1e-8, ||W||_op, ||dW||_op to ~1e-6, st(A) a lower-bound Krylov never below the exact
            value (within 1e-4 on charlm over 300 steps). ``"exact"``: every norm by an SVD (the slow
            reference). ``"estimate"``: sketches for ||G||_* and ||A||_op (large layers). The table of what
            each computes is in :mod:`steepest.diagnostics._methods`.
        warm_start: ``True``: ||W||_op, ||dW||_op (and ||A||_op) by a block Krylov from the previous record's
            top singular vectors after the first record (lower bounds; within 1.4e-4 relative for ||W||_op,
            6e-7 for ||dW||_op on charlm). The vectors are kept in :meth:`state_dict`, so a resume through
            ``load_state_dict(state_dict())`` writes the same records; a resume that passes only the step
            starts exact again (records differ by that accuracy). Default ``False``.
        max_rows: cap on the activation rows used for st(A) (an evenly strided subset; ``None``: all rows).
            A row subset biases st(A) low (the subset's top eigenvalue is inflated, Marchenko-Pastur):
            -21% with 512 of 2048 token rows on the charlm model, so the default uses every row.
        layers: optional iterable of module names to restrict monitoring.
        spec_sign_every: compute the Spec-Sign index on every ``spec_sign_every``-th recorded step (default
            10: each 100 optimizer steps with ``every=10``). It needs K microbatch gradients per layer and K
            nuclear norms, ~2/3 of a charlm training step: ~7% on every record (benchmarks/RESULTS.md).

    Each record has the :attr:`FIELDS` (``None`` where not computable). Layers without a gradient at a
    recording step are skipped, listed in ``monitor.skipped`` and warned about once.
    """

    FIELDS = (
        "step",
        "layer",
        "kind",
        "shape",
        "rows",
        "nonfinite_activation",
        "nonfinite_grad",
        "nr_G",
        "st_A",
        "nr_st_ratio",
        "dd_winner",
        "grad_fro",
        "grad_nuclear",
        "grad_l1",
        "weight_fro",
        "weight_op",
        "update_fro",
        "update_op",
        "update_max",
        "c_1",
        "c_star",
        "H_sign",
        "H_spec",
        "spec_sign_index",
        "spec_sign_winner",
        "spec_sign_regime",
        "microbatch_size",
    )

    def __init__(
        self,
        model: nn.Module,
        every: int = 10,
        sinks: Iterable = (),
        optimizer: torch.optim.Optimizer | None = None,
        microbatches: int = 4,
        method: str = "fast",
        max_rows: int | None = None,
        layers: Iterable[str] | None = None,
        spec_sign_every: int = 10,
        warm_start: bool = False,
    ) -> None:
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ValueError(f"every must be a positive int, got {every!r}")
        if isinstance(microbatches, bool) or not isinstance(microbatches, int) or microbatches == 1 or microbatches < 0:
            raise ValueError(f"microbatches must be 0 (no Spec-Sign index) or an int >= 2, got {microbatches!r}")
        if method not in MONITOR_METHODS:
            raise ValueError(f"method must be one of {MONITOR_METHODS}, got {method!r}")
        if isinstance(spec_sign_every, bool) or not isinstance(spec_sign_every, int) or spec_sign_every < 1:
            raise ValueError(
                f"spec_sign_every must be a positive int (records between Spec-Sign indices), got {spec_sign_every!r}"
            )
        if max_rows is not None and (not isinstance(max_rows, int) or max_rows < 1):
            raise ValueError(f"max_rows must be a positive int or None, got {max_rows!r}")
        self.every, self.microbatches, self.method, self.max_rows = every, microbatches, method, max_rows
        self.spec_sign_every, self.warm_start = spec_sign_every, bool(warm_start)
        self.metrics = METHODS[method](WarmStarts(self.warm_start))
        self.out = Guarded(list(sinks))  # a failing sink warns once and is disabled, never fails a step
        self.step = 0
        self.capture = ActivationCapture(model, self.recording, grads=self.spec_sign_due, names=layers)
        self._opt_handles: list = []
        self._optimizer: weakref.ref[torch.optim.Optimizer] | None = None
        self._deferred = False
        self._pending: dict[str, dict] = {}
        self._before: dict[str, torch.Tensor] = {}
        if optimizer is not None:
            self.attach(optimizer)

    @property
    def sinks(self) -> list:
        """The record writers (a list; one that failed stays in it, disabled: ``self.out.failed``)."""
        return self.out.sinks

    @sinks.setter
    def sinks(self, sinks: Iterable) -> None:
        self.out = Guarded(list(sinks))

    # -------------------------------------------------------------------------------- wiring
    def recording(self) -> bool:
        """True during the step whose forward/backward will be recorded."""
        return self.step % self.every == 0

    def spec_sign_due(self) -> bool:
        """True during a recording step whose record has the Spec-Sign index (the output gradients dY are
        kept only then: they are read by nothing else)."""
        return bool(self.microbatches) and self.recording() and (self.step // self.every) % self.spec_sign_every == 0

    def attach(self, optimizer: torch.optim.Optimizer) -> LayerMonitor:
        """Hook ``optimizer``'s steps (once: attaching it again is a no-op; a second optimizer is an error,
        since each of its steps would count as a step of the same training)."""
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise TypeError(f"attach needs a torch.optim.Optimizer, got {type(optimizer).__name__}")
        if self._optimizer is not None:
            if self._optimizer() is optimizer:
                return self
            if self._optimizer() is not None:
                raise ValueError(
                    "this LayerMonitor is already attached to another optimizer: detach() it first, "
                    "or use one LayerMonitor per optimizer (each counts its optimizer's steps)"
                )
        self._optimizer = weakref.ref(optimizer)
        self._opt_handles = [optimizer.register_step_pre_hook(self._pre), optimizer.register_step_post_hook(self._post)]
        return self

    def detach(self) -> None:
        """Remove every hook (model and optimizer) and close the sinks."""
        for h in self._opt_handles:
            h.remove()
        self._opt_handles, self._optimizer = [], None
        self.capture.remove()
        self.out.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.detach()

    def state_dict(self) -> dict:
        """The monitor's own state for a checkpoint: ``{"step": next step to record or skip, "every": ...,
        "warm": {"W|layer": last record's top singular vector, ...}}`` (the warm starts, so that a resumed run
        writes the same records as an uninterrupted one)."""
        return {"step": self.step, "every": self.every, "warm": self.metrics.warm.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        """Resume: continue at ``state["step"]``, and drop from every sink with ``rewind(step)`` the records of
        steps >= it (written after the checkpoint by an interrupted run), so no step appears twice."""
        if not isinstance(state, dict) or not isinstance(state.get("step"), int) or state["step"] < 0:
            raise ValueError(
                f"load_state_dict needs a LayerMonitor.state_dict() ({{'step': int >= 0, ...}}), got {state!r}"
            )
        if state.get("every", self.every) != self.every:
            warnings.warn(
                f"LayerMonitor resumed with every={self.every}, the checkpoint used every={state['every']}",
                stacklevel=2,
            )
        self.step = state["step"]
        self.metrics.warm.load_state_dict(state.get("warm") or {})
        self.out.rewind(self.step)

    @property
    def skipped(self) -> dict[str, str]:
        """Layer name -> why it was not recorded at the last recording step (unsupported ones always)."""
        return self.capture.skipped

    def skip_report(self) -> str:
        """One line: every layer not recorded at the last recording step, and why ('' when none)."""
        return self.capture.skip_report()

    def _failed(self, error: Exception) -> None:
        """A metric that raised: the step's records are dropped with a warning; the step itself stands."""
        self._pending, self._deferred = {}, False
        warnings.warn(
            f"LayerMonitor step {self.step}: not recorded ({type(error).__name__}: {error}); training goes on",
            RuntimeWarning,
            stacklevel=4,
        )

    # -------------------------------------------------------------------------------- hooks
    @torch.no_grad()
    def _pre(self, optimizer, args, kwargs) -> None:
        if not self.recording():
            return
        try:
            rest = args[1:] if args and args[0] is optimizer else args  # torch passes step's args with self
            # step(closure): the gradients are computed inside step(), so they are read in the post hook; else
            # now, before the step (an optimizer may free or change them: gradients read after it would not do)
            self._deferred = kwargs.get("closure", rest[0] if rest else None) is not None
            names = [n for n in self.capture.layers if self._deferred or self.capture.weight(n).grad is not None]
            self._pending, self._before = {}, {n: self.capture.weight(n).detach().clone() for n in names}
            if not self._deferred:
                self._grad_pass()
        except Exception as e:  # noqa: BLE001 (diagnostics never fail a step)
            self._failed(e)

    def _grad_pass(self) -> None:
        """Gradient and activation fields of every layer with a gradient now (into ``self._pending``)."""
        work, skipped = {}, {}
        for name, m in self.capture.layers.items():
            weight = self.capture.weight(name)
            if weight.grad is None:
                skipped[name] = (
                    "frozen (requires_grad=False)"
                    if not weight.requires_grad
                    else "no gradient at this step (not used in the forward/backward)"
                )
                self._before.pop(name, None)
                continue
            G = matrix_view(weight.grad.detach(), transposed=self.capture.transposed[name]).float()
            calls = self.capture.rows(name)
            A = activation_matrix(calls, self.max_rows).float()
            rec = dict.fromkeys(self.FIELDS)
            work[name] = Layer(rec, G, A, calls)
            rec.update(
                step=self.step,
                layer=name,
                kind=type(m).__name__,
                shape=list(weight.shape),
                rows=int(A.shape[0]),
                nonfinite_grad=not finite(G),
            )
        self.capture.report_skips(skipped, self.step)
        self.metrics.inspect(work)
        due = self.spec_sign_due()
        self.metrics.solve(work, self.step, due)
        for name, layer in work.items():
            self.metrics.gradient_fields(layer, self.step, self.microbatches if due else 0)
            self._pending[name] = layer.rec

    @torch.no_grad()
    def _post(self, optimizer, args, kwargs) -> None:
        try:
            if self.recording():
                if self._deferred:  # step(closure): the closure's backward has filled the gradients now
                    self._grad_pass()
                mats = {}
                for name in self._pending:
                    W, tr = self.capture.weight(name).detach(), self.capture.transposed[name]
                    Wm, dW = (
                        matrix_view(W, transposed=tr).float(),
                        matrix_view(W - self._before[name], transposed=tr).float(),
                    )
                    mats[name] = (Wm, dW, finite(Wm), finite(dW))
                self.metrics.weight_fields(self._pending, mats, self.step)
                for rec in self._pending.values():
                    self.out.write(rec)
        except Exception as e:  # noqa: BLE001 (diagnostics never fail a step: it was applied already)
            self._failed(e)
        finally:
            self._pending, self._before, self._deferred = {}, {}, False
            self.capture.clear()
            self.step += 1


__all__ = ["LayerMonitor", "ActivationCapture", "activation_matrix", "microbatch_grads", "SUPPORTED", "MONITOR_METHODS"]
