"""Per-layer diagnostics during ``steepest compare``: a :class:`steepest.diagnostics.LayerMonitor` per run.

Every ``every`` steps the monitor writes one record per Linear/Conv2d layer to
``diagnostics/<optimizer>.jsonl`` (nr(G), st(A), their ratio ``nr_st_ratio``, the Davis-Drusvyatskiy
winner, norms of the weight and the update; seed 001). For the adaptive optimizer each record also
gets ``choice``, the geometry that optimizer used for the layer at that step. The monitor never changes
training (hooks only read), so monitored and unmonitored runs give the same numbers.

The Spec-Sign index is switched off here (``microbatches=0``) to keep the overhead small;
``steepest.diagnostics`` computes it on request. st(A) uses every activation row: the monitor's
``method="fast"`` works on the small Gram matrix A^T A, and a row subset would bias st(A) low
(benchmarks/HISTORY.md, "LayerMonitor overhead").
Optimizers that are not one ``torch.optim.Optimizer`` (torch.optim.Muon + AdamW stepped as a pair)
are not monitored: the monitor's before/after-step hooks need a single step.

The measured winner (``oracle_every=K``, ``--oracle-every K``; opt-in, default 0 = off): on the records
of every K-th step of the monitored runs whose optimizer reports per-layer choices (``geometries()``:
``adaptive``, ``adaptive-oracle``, ``frobenius``; or a time chooser's knob a per layer, ``chooser.knobs()``:
``knob-schedule``, ``schatten-choice``, ``phase-switch``), the monitor also measures, before the optimizer step and
with that step's gradients, each recorded layer's Delta*_g for g in spectral, frobenius, linf
(:func:`steepest.diagnostics.layer_oracle` on the held-out batch of the step,
:class:`steepest.app.compare.runner.HeldOutLoss`, line search :data:`ORACLE_SEARCH`), and adds
``delta_spectral``, ``delta_frobenius``, ``delta_linf``, ``measured_winner`` (spectral vs frobenius:
seed 001's pairing, which the Davis-Drusvyatskiy test predicts), ``measured_winner_sign`` (spectral vs
linf: seed 002's pairing, which the Spec-Sign index predicts), ``measured_tie`` / ``measured_tie_sign``
(the pair within the search's tolerance) and ``oracle_at_edge``. On those records the Spec-Sign index is
computed too (``microbatches=4`` on every K-th step only). Weights, buffers and the RNG are restored bit
for bit, so training is unchanged (tests/test_compare_oracle.py).
Cost on charlm default (13 monitored Linear layers: 3 blocks x 4 plus the head; 1 thread, 2-core Intel Xeon
with avx512_bf16/amx_bf16, torch 2.13.0+cpu, load average ~4 from other work, main ab888ec plus this change; measured by timing
``_Oracle.__call__`` with time.thread_time in ``compare("charlm", ["adaptive"], oracle_every=50)``): one oracle
record is 13 layers x 3 geometries x 17 held-out forward passes = 663 forwards, 19.4-22.4 s CPU (mean 20.9 s,
~32 ms a forward), plus ~0.1 s for the Spec-Sign index (LayerMonitor hooks 0.157 vs 0.057 s CPU per record
with microbatches=4 vs 0). With K=50 (6 records in 300 steps) the adaptive run took 178.5 s CPU against 49.0 s
without the oracle (+130 s, 3.6x; wall 323 s vs 76 s on the loaded machine): an analysis option, not a
default. Only the runs with per-layer choices get it, to keep that cost to the runs the report scores.
"""

from __future__ import annotations

from pathlib import Path
from typing import cast

import torch

from steepest.app.runs import ConfigError, append_jsonl
from steepest.diagnostics import JSONLSink, LayerMonitor
from steepest.diagnostics.oracle import LineSearch, layer_oracle, measured_winner

#: The oracle's line search here: 7 log-spaced points over 6 decades, then 10 golden-section steps: 17 held-out
#: evaluations per (layer, geometry), against 13 + 16 = 29 of the library default. Tolerance
#: (LineSearch.decrease_rtol(), a quadratic's bound): Delta*_g within 1.06e-2 relative (the default: 7.5e-6);
#: two geometries closer than that are flagged ``measured_tie`` (their order is inside the search's error).
ORACLE_SEARCH = LineSearch(grid=7, golden=10)
#: Geometries probed: spectral (SpecGD/Muon), frobenius (normalised GD), linf (sign descent).
ORACLE_GEOMETRIES = (("spectral", None), ("frobenius", None), ("linf", None))
#: Microbatches of the Spec-Sign index on the oracle records (LayerMonitor's default K).
ORACLE_MICROBATCHES = 4


def check_oracle_every(oracle_every, monitor_every: int) -> int:
    """``oracle_every`` as an int: 0 (off) or a positive multiple of ``monitor_every``; ConfigError otherwise."""
    if isinstance(oracle_every, bool) or not isinstance(oracle_every, int) or oracle_every < 0:
        raise ConfigError(f"oracle_every (--oracle-every) must be 0 (off) or a positive integer, got {oracle_every!r}")
    if oracle_every and (monitor_every <= 0 or oracle_every % monitor_every):
        raise ConfigError(
            f"oracle_every (--oracle-every) {oracle_every} must be a multiple of monitor_every "
            f"(--monitor-every) {monitor_every}: the oracle measures on the monitor's records"
            + (" (the monitor is off)" if monitor_every <= 0 else "")
        )
    return oracle_every


def oracle_fields(probes: dict, rtol: float) -> dict:
    """The record fields of one layer's oracle result ``{geometry: Probe}`` (see the module docstring).

    ``measured_winner`` = the larger of Delta*_spectral, Delta*_frobenius (``"none"`` when neither lowers the
    held-out loss; on equal values the earlier, spectral); ``measured_tie``: |Delta*_s - Delta*_f| <= rtol max.
    """
    d = {g: float(probes[g].decrease) for g in ("spectral", "frobenius", "linf")}
    out: dict[str, object] = {f"delta_{g}": v for g, v in d.items()}
    for suffix, other in (("", "frobenius"), ("_sign", "linf")):
        pair = {"spectral": d["spectral"], other: d[other]}
        out[f"measured_winner{suffix}"] = measured_winner(pair)
        top = max(pair.values())
        out[f"measured_tie{suffix}"] = bool(top > 0 and abs(d["spectral"] - d[other]) <= rtol * top)
    out["oracle_at_edge"] = sorted(g for g, p in probes.items() if p.at_edge)
    return out


class _Oracle:
    """Optimizer pre-hook: on the oracle's steps, measure every recorded layer (``self.fields[layer]``)."""

    def __init__(self, monitor: LayerMonitor, model, loss_fn, every: int, search: LineSearch = ORACLE_SEARCH):
        self.monitor, self.model, self.loss_fn, self.every, self.search = monitor, model, loss_fn, every, search
        self.fields: dict[str, dict] = {}
        self._pname = {id(p): n for n, p in model.named_parameters()}

    def due(self) -> bool:
        return self.monitor.recording() and self.monitor.step % self.every == 0

    def __call__(self, optimizer, args, kwargs) -> None:
        self.fields = {}
        if not self.due():
            return
        cap, grads, views, layer_of = self.monitor.capture, {}, {}, {}
        for layer, m in cap.layers.items():
            G, name = cast(torch.Tensor, m.weight).grad, self._pname.get(id(m.weight))
            if G is None or name is None or not bool(torch.isfinite(G).all()):
                continue  # no gradient now (or a non-finite one): that record gets no oracle fields
            grads[name], views[name], layer_of[name] = G.detach(), {"transposed": cap.transposed[layer]}, layer
        rng = torch.get_rng_state()  # the held-out forwards must not move the global RNG (dropout)
        try:
            res = layer_oracle(
                self.model, self.loss_fn, grads, geometries=ORACLE_GEOMETRIES, views=views, search=self.search
            )
        finally:
            torch.set_rng_state(rng)
        rtol = self.search.decrease_rtol()
        self.fields = {layer_of[n]: oracle_fields(probes, rtol) for n, probes in res.items()}


class _ChoiceSink(JSONLSink):
    """JSONL sink that adds the optimizer's per-layer choice to each record (``choice``; for a time chooser
    also its knob a, ``knob``) and rewinds like JSONLSink on resume, so records an interrupted run wrote
    after its checkpoint are dropped."""

    def __init__(self, path: Path, choices, oracle: _Oracle | None = None, knobs=None) -> None:
        super().__init__(path)
        self.choices, self.oracle, self.knobs = choices, oracle, knobs

    def write(self, record: dict) -> None:
        rec = dict(record)
        if self.oracle is not None and rec["layer"] in self.oracle.fields:
            rec.update(self.oracle.fields[rec["layer"]])
        if self.choices is not None:
            rec["choice"] = self.choices().get(rec["layer"], "adamw")  # not a matrix group: AdamW-routed
        if self.knobs is not None:
            rec["knob"] = self.knobs().get(rec["layer"])  # None: AdamW-routed (no knob)
        append_jsonl(self.path, rec)


#: A time chooser's knob a as one of the measured pair's geometries: ``frobenius`` when a > KNOB_SPLIT (nearer
#: the Frobenius direction, a = 1, than the spectral one, a = 0), else ``spectral`` (a <= 0 included: at or past
#: spectral). The measured winner is binary (spectral vs frobenius), so the midpoint is the only neutral split.
KNOB_SPLIT = 0.5


def knob_geometry(a: float) -> str:
    """The geometry of the measured pair (spectral vs frobenius) that a knob value a is nearer.

    >>> [knob_geometry(a) for a in (1.0, 0.6, 0.5, 0.25, 0.0, -0.25)]
    ['frobenius', 'frobenius', 'spectral', 'spectral', 'spectral', 'spectral']
    """
    return "frobenius" if a > KNOB_SPLIT else "spectral"


def _by_layer(named: dict) -> dict:
    """``{"<layer>.weight": v}`` -> ``{"<layer>": v}`` (other parameter names unchanged)."""
    return {(n[: -len(".weight")] if n.endswith(".weight") else n): v for n, v in named.items()}


def layer_knobs(optimizer):
    """A function returning ``{layer name: knob a}`` for an optimizer with a time chooser (``chooser.knobs``:
    the knob-schedule, schatten-choice and phase-switch entries); None for other optimizers."""
    chooser = getattr(optimizer, "chooser", None)
    if chooser is None or not callable(getattr(chooser, "knobs", None)):
        return None
    return lambda: {layer: float(a) for layer, a in _by_layer(chooser.knobs(optimizer)).items()}


def layer_choices(optimizer, model: torch.nn.Module):
    """A function returning ``{layer name: geometry}`` for an optimizer that reports per-parameter choices.

    Uses ``optimizer.geometries()`` (``{parameter name: geometry}``, as :class:`steepest.Adaptive`
    provides), or for a time chooser its knob a per layer as the nearer geometry of the measured pair
    (:func:`knob_geometry`), and maps ``"<layer>.weight"`` to ``"<layer>"``; returns None for optimizers with
    neither.
    """
    if callable(getattr(optimizer, "geometries", None)):
        return lambda: _by_layer(optimizer.geometries())
    knobs = layer_knobs(optimizer)
    if knobs is None:
        return None
    return lambda: {layer: knob_geometry(a) for layer, a in knobs().items()}


class CompareMonitor:
    """A LayerMonitor attached to ``optimizer`` whose step counter follows the training step."""

    def __init__(
        self, model, optimizer, path: Path, every: int, start_step: int = 0, oracle_every: int = 0, held_out=None
    ) -> None:
        on = bool(oracle_every) and held_out is not None
        sink = _ChoiceSink(path, layer_choices(optimizer, model), knobs=layer_knobs(optimizer))
        # the Spec-Sign index on the oracle's records only: every (oracle_every // every)-th record
        self.monitor = LayerMonitor(
            model,
            every=every,
            sinks=[sink],
            microbatches=ORACLE_MICROBATCHES if on else 0,
            method="fast",
            spec_sign_every=oracle_every // every if on else 10,
        )
        self.monitor.load_state_dict({"step": start_step, "every": every})  # resume: no step recorded twice
        self.monitor.attach(optimizer)
        self.oracle = None
        self._handle = None
        if on:  # after the monitor's own pre-hook; the sink adds the fields when the monitor writes (post-hook)
            sink.oracle = self.oracle = _Oracle(self.monitor, model, held_out, oracle_every)
            self._handle = optimizer.register_step_pre_hook(self.oracle)

    def after_step(self, step: int) -> None:
        """Keep the monitor's counter equal to the number of steps taken (it counts optimizer steps)."""
        self.monitor.step = step + 1

    def close(self) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None
        self.monitor.detach()


def monitorable(model: torch.nn.Module) -> bool:
    """Whether ``model`` has a layer the LayerMonitor records (nn.Linear, or nn.Conv2d with groups=1)."""
    return any(
        isinstance(m, torch.nn.Linear) or (isinstance(m, torch.nn.Conv2d) and m.groups == 1) for m in model.modules()
    )


def attach_monitor(
    model, optimizer, path: Path, every: int, start_step: int = 0, note=None, oracle_every: int = 0, held_out=None
) -> CompareMonitor | None:
    """Monitor ``model`` while ``optimizer`` trains it (None when ``optimizer`` is not one Optimizer).

    ``oracle_every`` > 0 with ``held_out`` (a callable: the held-out loss at the current weights) adds the
    measured winner to every ``oracle_every``-th step's records when ``optimizer`` has per-layer choices
    (``geometries()``, or a time chooser's ``knobs()``; see the module docstring); other optimizers are
    monitored without it.

    A model without a monitorable layer (:func:`monitorable`) is not monitored: ``note(text)`` says so
    and the run goes on (the diagnostics are an extra, never a reason to fail a run).
    """
    if every <= 0 or not isinstance(optimizer, torch.optim.Optimizer):
        return None
    if not monitorable(model):
        if note is not None:
            note(f"no nn.Linear or nn.Conv2d layer in {type(model).__name__}: per-layer diagnostics skipped")
        return None
    if layer_choices(optimizer, model) is None:
        oracle_every = 0
    return CompareMonitor(model, optimizer, path, every, start_step, oracle_every, held_out)
