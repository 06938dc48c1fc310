"""One parameter's step as the kernel sees it: :class:`Block` (its gradient, state, settings, geometry and
direction source), and the parameter-label rule every chooser and the monitor key their per-parameter
records by (:func:`param_label`, :func:`steepest_params`), and stage 3's second half,
:func:`source_from_buffer` (M from the updated momentum buffer, which a block computes lazily), with the buffer
update before it (:func:`update_momentum`). The kernel that steps blocks is
:mod:`steepest.optim.functional` (which re-exports these names)."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable

import torch

from steepest import geometry as geo
from steepest.linalg.precision import iteration_dtype
from steepest.optim.settings import StepSettings


def param_label(group: dict, gi: int, j: int) -> str:
    """The label of parameter ``j`` of param group ``gi`` (a :class:`Block`'s ``label``, and the key choosers
    keep their per-parameter state under): the group's ``names[j]`` when given, else ``"group{gi}.{j}"``.

    >>> param_label({"params": [0, 1], "names": ["w"]}, 2, 0), param_label({"params": [0, 1], "names": ["w"]}, 2, 1)
    ('w', 'group2.1')
    """
    names = group.get("names")
    return names[j] if names and j < len(names) else f"group{gi}.{j}"


def steepest_params(optimizer) -> list[tuple[str, torch.Tensor]]:
    """``[(label, parameter)]`` of ``optimizer``'s steepest (not AdamW-routed) groups, in group order."""
    return [
        (param_label(g, gi, j), p)
        for gi, g in enumerate(optimizer.param_groups)
        if g["algorithm"] == "steepest"
        for j, p in enumerate(g["params"])
    ]


@dataclasses.dataclass(eq=False)
class Block:
    """One parameter's step: what the kernel reads and writes (``store[param]`` is its state).

    ``cfg`` is the group's validated :class:`~steepest.optim.settings.StepSettings`; ``lr`` and
    ``weight_decay`` are this step's values. ``norm``/``p``/``lr_scale`` default to the group's geometry
    and 1; a chooser (:mod:`steepest.optim.choosers`) may change them. ``label`` is the parameter's
    name (``names`` of its group, else ``group<i>.<j>``); ``name`` adds its shape, for messages."""

    param: torch.Tensor
    grad: torch.Tensor | None
    store: dict  #: the optimizer's ``state`` mapping; read through :attr:`state` (created on first use)
    cfg: StepSettings
    name: str
    lr: float | torch.Tensor = 0.0  #: a one-element tensor when the group's lr is one (torch's tensor lr)
    weight_decay: float = 0.0
    label: str = ""
    norm: str | None = None
    p: float | None = None
    lr_scale: float = 1.0
    bad_state: str | None = None  #: set by the checks: the name of a non-finite state tensor
    #: True once :meth:`fold_scale` moved the shape scale into ``lr_scale`` (the dualizer then leaves D unscaled).
    scale_folded: bool = False
    _M: torch.Tensor | None = dataclasses.field(default=None, repr=False)
    _source: Callable[[], torch.Tensor] | None = dataclasses.field(default=None, repr=False)
    _view_shape: tuple[int, ...] | None = dataclasses.field(default=None, repr=False)
    _M_owned: bool = dataclasses.field(default=False, repr=False)

    def __post_init__(self) -> None:
        if self.norm is None:
            self.norm, self.p = self.cfg.norm, self.cfg.p

    @property
    def M(self) -> torch.Tensor:
        """The direction source (stage 3). The kernel may set it lazily (:meth:`defer_M`): it is then
        computed on first read, so a dualizer that takes the blocks one by one holds one M at a time."""
        if self._M is None and self._source is not None:
            src = self._source
            self._M, self._source = src(), None
            # a Nesterov combination or a cast is a fresh tensor; the gradient or the buffer itself is not
            # (the buffer is an argument, or a value of the state dict a deferred momentum update was given)
            args = getattr(src, "args", ())
            inputs = [a for a in args if isinstance(a, torch.Tensor)]
            inputs += [v for a in args if isinstance(a, dict) for v in a.values() if isinstance(v, torch.Tensor)]
            self._M_owned = not any(_same_storage(self._M, a) for a in inputs)
        if self._M is None:
            raise RuntimeError(f"{self.name}: M read before stage 3 set it (or after it was released)")
        return self._M

    @M.setter
    def M(self, value: torch.Tensor | None) -> None:
        self._M, self._source, self._M_owned = value, None, False

    @property
    def M_owned(self) -> bool:
        """True when M is a temporary of the step's own (computed from a deferred source into a fresh
        tensor, not the gradient or the momentum buffer): the dualizer may overwrite it
        (``overwrite_input``, one matrix-sized buffer less at the step's peak)."""
        return self._M is not None and self._M_owned

    @property
    def G(self) -> torch.Tensor:
        """The gradient, for the stages that run only on blocks that have one (``grad`` may be None)."""
        if self.grad is None:
            raise RuntimeError(f"{self.name}: the step read the gradient of a parameter that has none")
        return self.grad

    def defer_M(self, source: Callable[[], torch.Tensor], dtype: torch.dtype) -> None:
        """Set M to ``source()``, computed when first read; ``dtype`` is the dtype it will have."""
        self._M, self._source, self._M_dtype = None, source, dtype

    def write_M(self, out: torch.Tensor) -> None:
        """Write M into ``out`` (M's shape and dtype, e.g. a slice of a batched stack) and release it. A
        deferred M from :func:`source_from_buffer` is computed straight into ``out`` (no M tensor of its own:
        one allocation and one pass less per block, :func:`steepest.optim.batched.dualize_batched`; also
        :func:`steepest.optim.functional.direction_source`, any source function marked ``writes_out``)."""
        src = self._source
        if self._M is None and isinstance(src, functools.partial) and getattr(src.func, "writes_out", False):
            src(out=out)
        else:
            out.copy_(self.M)
        self.M = None

    @property
    def M_dtype(self) -> torch.dtype:
        """M's dtype, without computing a deferred M."""
        return self._M_dtype if self._M is None and self._source is not None else self.M.dtype

    @property
    def state(self) -> dict:
        """This parameter's optimizer state (created only when a stage needs it)."""
        return self.store[self.param]

    @property
    def adamw(self) -> bool:
        return self.cfg.algorithm == "adamw"

    @property
    def kwargs(self) -> dict:
        """The keyword arguments of :func:`compute_update` for this block's geometry (cached; read only);
        once :meth:`fold_scale` ran, the shape scale is in ``lr_scale`` and ``scale_rule`` is "none"."""
        return self.cfg.update_kwargs(self.norm, self.p, folded=self.scale_folded)

    def source_dtype(self) -> torch.dtype | None:
        """The dtype stage 3 may write M in: the Newton-Schulz / Polar Express iteration dtype where it is
        narrower than the gradient's (bf16 under ``dtype="auto"`` on native-bf16 hardware) and the dualizer
        reads M only through that cast (fixed step size; a dual step also needs ||M||_* in full precision).
        The cast then happens once, here: the full-precision Nesterov temporary is freed at once, the
        update comes back in that dtype (no cast back to float32 and no float32 copy of it), and the values
        are those the dualizer's own cast would give."""
        c = self.cfg
        if self.norm != "spectral" or c.step_size != "fixed" or c.method in (None, "svd"):
            return None
        shape = self.view_shape
        dt = iteration_dtype(self.G.dtype, c.dtype, self.G.device, iterative=True, shape=shape)
        return dt if dt.itemsize < self.G.dtype.itemsize else None

    @property
    def view_shape(self) -> tuple[int, ...]:
        """The shape of the parameter's matrix view (:func:`steepest.geometry.matrix_shape`), once per block."""
        if self._view_shape is None:
            c = self.cfg
            self._view_shape = geo.matrix_shape(tuple(self.param.shape), c.tensor_mode, c.transposed, c.row_blocks)
        return self._view_shape

    def fold_scale(self) -> None:
        """Move a fixed step's shape scale from D into ``lr_scale``: W <- W - (lr * scale) D, torch.optim.Muon's
        operation order (``param.add_(D, alpha=-lr * scale)``), bit for bit its result on tall matrices too,
        and one elementwise pass over D less. Used where D comes back in a narrower dtype than the
        parameter (:meth:`source_dtype`); the float32 path keeps ``lr * (scale * D)``."""
        c = self.cfg
        if self.scale_folded or c.step_size != "fixed" or c.scale_rule == "none":
            return
        shape = self.view_shape
        self.lr_scale = self.lr_scale * geo.shape_scale(shape, c.scale_rule)
        self.scale_folded = True

    def key(self) -> tuple:
        """Blocks with equal keys can share one batched dualization (same view shape and settings)."""
        shape = self.view_shape
        return (
            shape[-2:] if len(shape) >= 2 else shape,
            self.M_dtype,
            self.param.device,
            self.cfg.batch_key(self.norm, self.p, folded=self.scale_folded),
        )


def _same_storage(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Do two tensors share memory (a view, or the same tensor)? True (shared, so never overwritten) where
    it cannot be told cheaply: tensor subclasses such as DTensor (no storage of their own) and compiled
    graphs (no data pointers)."""
    if a is b or type(a) is not torch.Tensor or type(b) not in (torch.Tensor, torch.nn.Parameter):
        return True
    if torch.compiler.is_compiling():
        return True
    return a.untyped_storage().data_ptr() == b.untyped_storage().data_ptr()


def source_from_buffer(
    grad: torch.Tensor,
    buf: torch.Tensor | None,
    momentum: float,
    nesterov: bool,
    dtype: torch.dtype | None = None,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """M from the updated buffer (:func:`direction_source`'s second half; reads grad and buf, never writes
    them). ``out``: write M there instead (cast to ``out``'s dtype as ``.to`` rounds) and return it."""
    if out is not None:
        if buf is not None and nesterov:
            if out.dtype == grad.dtype:
                return torch.lerp(grad, buf, momentum, out=out)
            return out.copy_(grad.lerp(buf, momentum))  # (see the lerp note below)
        return out.copy_(grad if buf is None else buf)
    if buf is None:
        return grad if dtype is None else grad.to(dtype)
    if not nesterov:
        return buf if dtype is None else buf.to(dtype)
    M = grad.lerp(buf, momentum)
    # (torch.lerp(..., out=bf16) would skip the float32 temporary but runs a scalar mixed-dtype loop:
    # 1.8x slower than lerp + cast on CPU.)
    return M if dtype is None else M.to(dtype)


source_from_buffer.writes_out = True  # type: ignore[attr-defined]  # (Block.write_M: it takes out=)


def update_momentum(
    grad: torch.Tensor, state: dict, momentum: float, ok: torch.Tensor | None = None
) -> torch.Tensor | None:
    """The buffer update of :func:`~steepest.optim.functional.direction_source` (which the kernel may defer to
    the read of M), in place; returns the buffer (None at momentum 0)."""
    if momentum == 0.0:
        return None
    buf = state.get("momentum_buffer")
    if buf is None:
        buf = state["momentum_buffer"] = torch.zeros_like(grad, memory_format=torch.preserve_format)
    if ok is None:
        buf.lerp_(grad, 1.0 - momentum)
    else:  # compiled step: the buffer keeps its value when the step's gradients are not all finite
        buf.copy_(torch.where(ok, buf.lerp(grad, 1.0 - momentum), buf))
    return buf


__all__ = ["Block", "param_label", "source_from_buffer", "steepest_params", "update_momentum"]
