"""The layer oracle: which geometry really decreases the loss most on each layer, measured.

For a model at a checkpoint, a (training) minibatch gradient G_hat per layer and a loss closure on a
*held-out* batch, the oracle steps one layer at a time along the steepest-descent direction of each
geometry g,

    D_g = dualize_g(G_hat)       (unit primal norm; :func:`steepest.geometry.dualize`),
    W  <- W - eta D_g            (only this layer; every other parameter fixed),

and measures Delta_g(eta) = L(W) - L(W - eta D_g) on the held-out batch. Two numbers per (layer, g):

* Delta*_g = max_eta Delta_g(eta), from a bounded line search (:class:`LineSearch`), the ground truth
  a criterion such as seed 001's nr(G) >= st(A) or seed 002's Spec-Sign index predicts (seed 002
  eq. (2): "Comparing optimizers reduces to comparing the optimal improvement Delta* = sup_eta Delta(eta)");
* Delta_g(eta_opt) at the optimizer's own (tuned) step size, when one is passed.

Weights (and buffers) are restored exactly (a copy of the saved tensor, bit for bit) after every
layer, also when the closure raises. Layers are viewed as matrices by
:func:`steepest.geometry.matrix_view` (conv kernels flattened to (out, in*kh*kw), GPT-2 ``Conv1D``
weights transposed, 3-D expert stacks as batches), so D_g is the dualizer of the matrix the
geometry acts on, mapped back to the parameter's shape.

An "oracle Adaptive" calls :func:`layer_oracle` every k steps with its current gradients and steps
each layer in :func:`oracle_winners`' geometry.

Example:
    >>> model = torch.nn.Sequential(torch.nn.Linear(6, 4, bias=False))
    >>> x, y = torch.randn(32, 6), torch.randn(32, 4)
    >>> loss = lambda: 0.5 * (model(x) - y).square().mean()
    >>> loss().backward()
    >>> grads = {"0.weight": model[0].weight.grad.clone()}
    >>> res = layer_oracle(model, loss, grads)
    >>> sorted(res["0.weight"])                      # doctest: +NORMALIZE_WHITESPACE
    ['frobenius', 'linf', 'schatten-4', 'spectral']
    >>> res["0.weight"]["spectral"].decrease > 0
    True
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence

import torch
from torch import nn

from steepest.diagnostics.ranks import rank_sum_greater, spearman  # re-exported: the oracle reports' statistics
from steepest.geometry import dual_norm, dualize, from_matrix, matrix_view, resolve

#: (norm, p) pairs probed by default: spectral (Muon/SpecGD), sign (linf), Frobenius (normalised GD)
#: and one Schatten exponent between Frobenius (p = 2) and spectral (p = inf).
DEFAULT_GEOMETRIES: tuple[tuple[str, float | None], ...] = (
    ("spectral", None),
    ("linf", None),
    ("frobenius", None),
    ("schatten", 4.0),
)
INV_PHI = (math.sqrt(5.0) - 1.0) / 2.0  # 0.618..., the golden-section shrink factor


def geometry_key(norm: str, p: float | None = None) -> str:
    """The name a geometry has in oracle results: ``spectral``, ``linf``, ``frobenius``, ``schatten-4``.

    Schatten p = inf is ``spectral`` (:func:`steepest.geometry.resolve`). Example:
    ``geometry_key("schatten", 4.0)`` is ``"schatten-4"``.
    """
    name, p = resolve(norm, p)
    return f"schatten-{p:g}" if name == "schatten" else name


def parse_geometry(key: str) -> tuple[str, float | None]:
    """Inverse of :func:`geometry_key`: ``"schatten-4"`` -> ``("schatten", 4.0)``; ValueError otherwise."""
    if isinstance(key, str) and key.startswith("schatten-"):
        try:
            p = float(key[len("schatten-") :])
        except ValueError:
            raise ValueError(f"bad Schatten geometry {key!r}: write it as 'schatten-<p>', e.g. 'schatten-4'") from None
        return resolve("schatten", p)
    if key in ("spectral", "linf", "frobenius"):
        return key, None
    raise ValueError(f"unknown geometry {key!r}: use spectral, linf, frobenius or schatten-<p>")


@dataclasses.dataclass(frozen=True)
class LineSearch:
    """A bounded line search over eta > 0 with a fixed number of loss evaluations.

    The bracket is [eta_max * 10^-decades, eta_max] with eta_max = ``upper`` * 2 L0 / <G_hat, D>: for a
    quadratic with a nonnegative loss the exact minimiser along -D is eta* = 2 Delta* / <G, D> <= 2 L0 /
    <G, D>, so ``upper`` = 4 leaves a factor-4 margin (and absorbs the held-out vs training gradient gap).
    Stage 1 evaluates ``grid`` log-spaced points; stage 2 runs ``golden`` golden-section iterations in
    log(eta) on the two grid cells around the best point (its first two evaluations set up the
    bracket, each further one shrinks it by 0.618). Evaluations per search: grid + golden (plus one
    for L0, shared by all layers, and one at the optimizer's step size when given).

    Tolerance (documented, tested on seed 000's quadratic): the bracket has log-width 2h, h = ln(10)
    decades / (grid - 1), and after the search 2h 0.618^(golden - 2) =: delta; for a loss unimodal in
    eta the best evaluated point lies in it, so the returned eta is within a factor exp(delta) of
    eta*. For a quadratic Delta(eta) = Delta* (1 - (1 - eta/eta*)^2), so the relative error of Delta*
    is at most (e^delta - 1)^2 (:meth:`decrease_rtol`: 7.6e-6 for the defaults, 13 + 16 evaluations).
    """

    grid: int = 13
    decades: float = 6.0
    golden: int = 16
    upper: float = 4.0

    def __post_init__(self) -> None:
        if isinstance(self.grid, bool) or not isinstance(self.grid, int) or self.grid < 3:
            raise ValueError(f"grid must be an int >= 3, got {self.grid!r}")
        if isinstance(self.golden, bool) or not isinstance(self.golden, int) or self.golden < 0 or self.golden == 1:
            raise ValueError(f"golden must be 0 (grid only) or an int >= 2, got {self.golden!r}")
        if not (self.decades > 0 and self.upper > 0 and math.isfinite(self.decades) and math.isfinite(self.upper)):
            raise ValueError(f"decades and upper must be finite and > 0, got {self.decades!r}, {self.upper!r}")

    @property
    def evaluations(self) -> int:
        """Loss evaluations of one search: grid + golden."""
        return self.grid + self.golden

    def eta_factor(self) -> float:
        """exp(delta): the returned eta is within this factor of the minimiser (unimodal losses)."""
        h = math.log(10.0) * self.decades / (self.grid - 1)
        return math.exp(2.0 * h * INV_PHI ** max(self.golden - 2, 0))

    def decrease_rtol(self) -> float:
        """(e^delta - 1)^2: the relative error bound of Delta* on a quadratic."""
        return (self.eta_factor() - 1.0) ** 2

    def search(self, phi: Callable[[float], float], eta_max: float) -> tuple[float, float, bool]:
        """Minimise ``phi`` (the loss after a step eta) over the bracket: ``(eta, phi(eta), at_edge)``.

        ``at_edge`` is True when the best grid point is an end of the bracket (the minimiser may lie
        outside it). Non-finite losses count as +inf (a step that blows up never wins).
        """

        def f(log_eta: float) -> float:
            v = float(phi(math.exp(log_eta)))
            return v if math.isfinite(v) else math.inf

        hi = math.log(eta_max)
        lo = hi - math.log(10.0) * self.decades
        xs = [lo + (hi - lo) * i / (self.grid - 1) for i in range(self.grid)]
        vals = [f(x) for x in xs]
        j = min(range(self.grid), key=lambda i: vals[i])
        best_x, best_v = xs[j], vals[j]
        a, b = xs[max(j - 1, 0)], xs[min(j + 1, self.grid - 1)]
        c, d = b - INV_PHI * (b - a), a + INV_PHI * (b - a)
        fc, fd = (f(c), f(d)) if self.golden else (math.inf, math.inf)
        for _ in range(max(self.golden - 2, 0)):
            if fc <= fd:
                b, d, fd = d, c, fc
                c = b - INV_PHI * (b - a)
                fc = f(c)
            else:
                a, c, fc = c, d, fd
                d = a + INV_PHI * (b - a)
                fd = f(d)
        for x, v in ((c, fc), (d, fd)):
            if v < best_v:
                best_x, best_v = x, v
        return math.exp(best_x), best_v, j in (0, self.grid - 1)


@dataclasses.dataclass
class Probe:
    """One (layer, geometry) measurement. ``decrease`` = Delta*_g >= 0 (0 when no step along -D_g
    lowers the held-out loss; then ``eta`` = 0); ``alignment`` = <G_hat, D_g> = ||G_hat||_g^dagger;
    ``decrease_at_lr`` = Delta_g(``eta_lr``) (None when no step size was given)."""

    decrease: float
    eta: float
    at_edge: bool
    alignment: float
    loss0: float
    evaluations: int
    eta_lr: float | None = None
    decrease_at_lr: float | None = None

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


StepSizes = Mapping[str, float] | Callable[[str, str, tuple], float | None] | None


def _step_size(step_sizes: StepSizes, name: str, key: str, shape: tuple) -> float | None:
    if step_sizes is None:
        return None
    eta = step_sizes(name, key, shape) if callable(step_sizes) else step_sizes.get(key)
    if eta is None:
        return None
    eta = float(eta)
    if not (eta > 0 and math.isfinite(eta)):
        raise ValueError(f"step size for layer {name!r}, geometry {key!r} must be finite and > 0, got {eta!r}")
    return eta


def layer_oracle(
    model: nn.Module,
    loss_fn: Callable[[], torch.Tensor],
    grads: Mapping[str, torch.Tensor],
    *,
    geometries: Sequence[tuple[str, float | None]] = DEFAULT_GEOMETRIES,
    views: Mapping[str, dict] | None = None,
    step_sizes: StepSizes = None,
    search: LineSearch | None = None,
    dtype: torch.dtype | None = torch.float64,
) -> dict[str, dict[str, Probe]]:
    """Measured Delta*_g per layer and geometry: ``{layer name: {geometry key: Probe}}``.

    ``model``: its parameters are looked up by name (``model.named_parameters()``); ``loss_fn()``
    returns the held-out loss at the model's current weights (it is called under ``torch.no_grad()``;
    put the model in eval mode if it has dropout). ``grads``: layer name -> G_hat (the parameter's
    shape), e.g. the training-batch gradients; only these layers are probed. ``views``: layer name ->
    ``{"transposed": bool, "tensor_mode": "flatten" | "batch"}`` for :func:`matrix_view` (default
    flatten, not transposed; pass ``transposed=True`` for GPT-2 ``Conv1D``). ``step_sizes``: geometry
    key -> eta, or ``(layer, key, matrix shape) -> eta | None``: the optimizer's own step W - eta D_g.
    ``dtype``: precision of the dualizer (float64 by default: the oracle is a reference, not a fast path).

    Formula: D_g = dualize_g(matrix_view(G_hat)), Delta*_g = L0 - min_eta L(W - eta D_g) over
    :class:`LineSearch`'s bracket (Delta*_g := 0 if no point improves). Sources: seed 002 section 2.1
    (Delta* = sup_eta Delta(eta)); seed 001 (spectral vs Euclidean one-step decrease).

    Example: see the module docstring.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not callable(loss_fn):
        raise TypeError("loss_fn must be a callable returning the held-out loss")
    search = search or LineSearch()
    params = _named_params(model, grads, "grads")
    keys = [geometry_key(n, p) for n, p in geometries]
    if not keys:
        raise ValueError("give at least one geometry")
    views = dict(views or {})
    out: dict[str, dict[str, Probe]] = {}
    with torch.no_grad():
        buffers, L0 = _baseline(model, loss_fn)
        for name, G in grads.items():
            W = params[name]
            if G.shape != W.shape:
                raise ValueError(f"gradient for {name!r} has shape {tuple(G.shape)}, parameter {tuple(W.shape)}")
            view = {"transposed": False, "tensor_mode": "flatten", **views.get(name, {})}
            X = matrix_view(G.detach(), view["tensor_mode"], view["transposed"])
            out[name] = {}
            with _restoring(W, model, buffers) as saved:
                for (norm, p), key in zip(geometries, keys):
                    Dm = dualize(X.to(dtype) if dtype is not None else X, norm, p, dtype=dtype)
                    align = float(dual_norm(X.double(), norm, p).sum())
                    D = from_matrix(Dm, W.shape, view["transposed"]).to(W.dtype)
                    out[name][key] = _probe(
                        W,
                        saved,
                        D,
                        loss_fn,
                        L0,
                        align,
                        search,
                        _step_size(step_sizes, name, key, tuple(X.shape)),
                        model,
                        buffers,
                    )
    return out


def step_decreases(
    model: nn.Module, loss_fn: Callable[[], torch.Tensor], steps: Mapping[str, Mapping[str, torch.Tensor]]
) -> dict[str, dict[str, float]]:
    """The held-out decrease of given steps, one layer at a time: ``{layer: {key: L(W) - L(W - S)}}``.

    ``steps``: layer (parameter) name -> {key: S}, S the parameter's full change with its sign flipped
    (for an optimizer: lr * scale * update + lr * wd * W), in the parameter's shape. Every other parameter
    stays fixed; weights and buffers are restored bit for bit after each probe. One loss evaluation per
    (layer, key) plus one for L(W). This is the oracle at the optimizer's own step (an "oracle Adaptive"
    that asks which of its candidate steps really lowers the held-out loss most), where
    :func:`layer_oracle` line-searches the best step along each direction.

    Example:
        >>> model = torch.nn.Linear(3, 1, bias=False)
        >>> loss = lambda: model(torch.ones(1, 3)).square().sum()
        >>> d = step_decreases(model, loss, {"weight": {"half": 0.5 * model.weight.detach()}})
        >>> round(d["weight"]["half"] / float(loss()), 6)     # (1 - 0.5^2) of the loss
        0.75
    """
    params = _named_params(model, steps, "steps")
    out: dict[str, dict[str, float]] = {}
    with torch.no_grad():
        buffers, L0 = _baseline(model, loss_fn)
        for name, cands in steps.items():
            W = params[name]
            out[name] = {}
            with _restoring(W, model, buffers) as saved:
                for key, S in cands.items():
                    if S.shape != W.shape:
                        raise ValueError(
                            f"step {key!r} for {name!r} has shape {tuple(S.shape)}, parameter {tuple(W.shape)}"
                        )
                    torch.sub(saved, S.to(W.dtype), out=W)
                    out[name][key] = L0 - float(loss_fn())
                    _restore_buffers(model, buffers)
    return out


def _named_params(model: nn.Module, names, what: str) -> dict[str, torch.Tensor]:
    """``model.named_parameters()`` as a dict; ValueError if ``names`` holds one the model lacks."""
    params: dict[str, torch.Tensor] = dict(model.named_parameters())
    unknown = [n for n in names if n not in params]
    if unknown:
        raise ValueError(f"{what} names no parameter of the model: {unknown[:5]}; use model.named_parameters() names")
    return params


def _baseline(model: nn.Module, loss_fn) -> tuple[dict, float]:
    """(a copy of the buffers, L(W)): the state every probe is measured from and restored to."""
    buffers = {n: b.detach().clone() for n, b in model.named_buffers()}
    L0 = float(loss_fn())
    _restore_buffers(model, buffers)
    return buffers, L0


@contextlib.contextmanager
def _restoring(W: torch.Tensor, model: nn.Module, buffers: dict):
    """Yield a copy of W; afterwards (also when a probe raises) W and the buffers are restored bit for bit."""
    saved = W.detach().clone()
    try:
        yield saved
    finally:
        W.copy_(saved)
        _restore_buffers(model, buffers)


def _restore_buffers(model: nn.Module, buffers: dict) -> None:
    for n, b in model.named_buffers():
        if n in buffers:
            b.copy_(buffers[n])


def _probe(W, saved, D, loss_fn, L0, align, search: LineSearch, eta_lr, model, buffers) -> Probe:
    def phi(eta: float) -> float:
        torch.sub(saved, D, alpha=eta, out=W)  # W = saved - eta D, written in place (W's storage)
        try:
            return float(loss_fn())
        finally:
            _restore_buffers(model, buffers)

    if not (align > 0):  # G_hat = 0 (or D = 0): nothing to step
        return Probe(0.0, 0.0, False, 0.0, L0, 0, eta_lr, 0.0 if eta_lr is not None else None)
    eta, val, edge = search.search(phi, search.upper * 2.0 * max(L0, 1e-30) / align)
    dec = L0 - val
    at_lr = None if eta_lr is None else L0 - phi(eta_lr)
    W.copy_(saved)
    if not (dec > 0):
        eta, dec = 0.0, 0.0
    return Probe(
        float(dec),
        float(eta),
        bool(edge),
        align,
        L0,
        search.evaluations + (eta_lr is not None),
        eta_lr,
        None if at_lr is None else float(at_lr),
    )


def oracle_winners(
    result: Mapping[str, Mapping[str, Probe]], among: Sequence[str] | None = None, rtol: float = 0.0
) -> dict[str, str]:
    """Per layer, the geometry with the largest measured Delta*: ``{layer: key}`` (``"tie"`` when the
    best two are within ``rtol`` relative, ``"none"`` when no geometry decreases the loss).

    ``among``: geometry keys to compare (default all probed). Ties in value go to the earlier key.
    Example: ``oracle_winners(res, among=("spectral", "frobenius"))`` is seed 001's measured winner.
    """
    out = {}
    for layer, probes in result.items():
        keys = [k for k in (among or list(probes)) if k in probes]
        if not keys:
            raise ValueError(f"none of {among} was probed for layer {layer!r} (probed: {list(probes)})")
        out[layer] = measured_winner({k: _dec(probes[k]) for k in keys}, rtol)
    return out


def _dec(p) -> float:
    return float(p.decrease if isinstance(p, Probe) else p["decrease"])


def measured_winner(decreases: Mapping[str, float], rtol: float = 0.0) -> str:
    """The key of the largest decrease; ``"tie"`` if the runner-up is within ``rtol`` of it relative,
    ``"none"`` if every decrease is 0. Example: ``measured_winner({"a": 2.0, "b": 1.0})`` is ``"a"``."""
    if not decreases:
        raise ValueError("measured_winner needs at least one decrease")
    ranked = sorted(decreases.items(), key=lambda kv: -kv[1])
    best, v = ranked[0]
    if not (v > 0):
        return "none"
    if len(ranked) > 1 and ranked[1][1] >= v * (1.0 - rtol) and rtol > 0:
        return "tie"
    return best


__all__ = [
    "layer_oracle",
    "oracle_winners",
    "measured_winner",
    "LineSearch",
    "Probe",
    "geometry_key",
    "parse_geometry",
    "spearman",
    "rank_sum_greater",
    "DEFAULT_GEOMETRIES",
]
