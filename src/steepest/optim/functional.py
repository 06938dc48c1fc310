"""THE step kernel: every steepest optimizer's step goes through :func:`steepest_step`.

One step for a list of parameter blocks W (gradient G), in this order:

1. checks (dense, real, finite gradients and optimizer state; one sum per tensor, one
   synchronisation) and the skip/raise policy: ``"raise"`` raises :class:`NonFiniteGradientError`
   naming every bad parameter before any weight changes, ``"skip"`` skips and counts them;
2. (optional) the chooser (:mod:`steepest.optim.choosers`) sets each block's geometry and lr
   multiplier (nothing else changes);
3. direction source M: ``G`` (no momentum), the EMA ``B <- mu B + (1 - mu) G`` or Nesterov
   ``(1 - mu) G + mu B`` (torch.optim.Muon's convention);
4. D = dualize(M) under the block's geometry (:mod:`steepest.geometry`), on its matrix view;
5. the step scale: a shape rule (``step_size="fixed"``) or the dual norm of M (``step_size="dual"``:
   with lr = 1/L this is the lecture notes' X - (||G||_*/L) polar(G));
6. decoupled weight decay W <- (1 - lr wd) W (the unadjusted lr, as torch.optim.AdamW and Muon);
7. the update W <- W - lr * mult * scale * D.

Stage 4 is the only expensive one, and the only one that batching and distribution change: the
kernel hands every block's M to its executor (:mod:`steepest.optim.executors`), which computes them
one by one (:func:`dualize_each`), stacked by shape (:mod:`steepest.optim.batched`) or on owner
ranks. ``ok=False`` means the update overflowed (a dual norm can overflow for a finite M): such a
block is skipped and counted, never written. Every setting a block reads was validated once, when
its group was added (:class:`~steepest.optim.settings.StepSettings`).

Parameter groups with ``algorithm="adamw"`` take AdamW (Loshchilov & Hutter 2019) after the same
checks, so one optimizer trains a whole model.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import torch

from steepest import geometry as geo
from steepest.optim.block import Block, param_label, source_from_buffer, steepest_params, update_momentum
from steepest.optim.settings import STEP_SIZES


class NonFiniteGradientError(FloatingPointError):
    """Raised by ``step()`` when a gradient holds NaN or Inf (nothing has been changed)."""


# --------------------------------------------------------------------------- stage 1: checks
def finite_mask(grads: list[torch.Tensor]) -> torch.Tensor:
    """Per gradient, as a bool tensor (no sync): is every entry finite? One read-only min/max reduction
    each: min and max of g are finite iff every entry is (both propagate NaN); on CPU this is ~15x
    faster than ``isfinite(g).all()``."""
    mm = [torch.stack(tuple(torch.aminmax(g))) if g.numel() else g.new_zeros(2) for g in grads]
    return torch.isfinite(torch.stack(mm)).all(dim=-1)  # stack promotes to the widest dtype


def finite_flags(grads: list[torch.Tensor]) -> list[bool]:
    """:func:`finite_mask` as Python bools: one synchronisation for all gradients.

    First one sum per gradient (float32 accumulation at least): a NaN or Inf entry makes the sum
    non-finite, so a finite sum proves the gradient finite, and a sum reads memory once with one add per
    entry (~2.7x faster than aminmax's two compares on CPU). Only gradients whose sum is not finite (a
    bad entry, or finite entries whose sum overflowed) take the exact :func:`finite_mask` check.
    """
    if not grads:
        return []
    sums = [g.sum(dtype=torch.float32 if g.dtype.itemsize < 4 else None) for g in grads]
    flags = torch.isfinite(torch.stack(sums)).tolist()  # stack promotes to the widest dtype
    doubt = [i for i, ok in enumerate(flags) if not ok]
    if doubt:
        for i, ok in zip(doubt, finite_mask([grads[i] for i in doubt]).tolist()):
            flags[i] = ok
    return flags


def check_dense(blocks: list[Block]) -> None:
    """ValueError for sparse or complex gradients, naming the parameter."""
    for b in blocks:
        if b.grad is not None and (b.grad.is_sparse or b.grad.is_complex()):
            kind = "sparse" if b.grad.is_sparse else "complex"
            raise ValueError(f"{kind} gradient for {b.name}: steepest needs dense real gradients")


#: Per-parameter state tensors that the step reads (and the checks test for NaN/Inf with the gradient).
STATE_TENSORS = ("momentum_buffer", "exp_avg", "exp_avg_sq")


def state_tensors(block: Block) -> list[tuple[str, torch.Tensor]]:
    """The state tensors this block's step will read, as ``(key, tensor)`` (none before the first step)."""
    st = block.store.get(block.param)
    if not st:
        return []
    return [(k, st[k]) for k in STATE_TENSORS if torch.is_tensor(st.get(k))]


def finite_blocks(blocks: list[Block], grads: list[torch.Tensor] | None = None) -> list[bool]:
    """Per block with a gradient: are its gradient (``grads[i]``, default ``block.grad``) and its state
    tensors all finite? One synchronisation for all; a block with a bad state gets ``bad_state`` set."""
    grads = [b.G for b in blocks] if grads is None else grads
    tensors, owner, names = list(grads), [], []
    for i, b in enumerate(blocks):
        for key, t in state_tensors(b):
            tensors.append(t.to_local() if hasattr(t, "to_local") else t)
            owner.append(i)
            names.append(key)
    flags = finite_flags(tensors)
    out = flags[: len(blocks)]
    for i, key, ok in zip(owner, names, flags[len(blocks) :]):
        if not ok:
            out[i] = False
            blocks[i].bad_state = blocks[i].bad_state or key
    return out


def local_check(blocks: list[Block]) -> list[bool]:
    """The single-process check: per block, False when its gradient or its state holds NaN or Inf."""
    check_dense(blocks)
    present = [i for i, b in enumerate(blocks) if b.grad is not None]
    out = [True] * len(blocks)
    for i, ok in zip(present, finite_blocks([blocks[i] for i in present])):
        out[i] = ok
    return out


def nonfinite_policy(blocks: list[Block], finite: list[bool], policy: str, counter) -> list[Block]:
    """Raise naming every non-finite block (``"raise"``), or count and drop them (``"skip"``)."""
    bad = [b for b, ok in zip(blocks, finite) if not ok]
    if not bad:
        return blocks
    if policy == "raise":
        grads = [b.name for b in bad if not b.bad_state]
        states = [f"{b.name}: {b.bad_state}" for b in bad if b.bad_state]
        what = ([f"non-finite gradient (NaN or Inf) in {', '.join(grads)}"] if grads else []) + (
            [f"non-finite optimizer state (NaN or Inf) in {', '.join(states)}"] if states else []
        )
        raise NonFiniteGradientError(
            f"{'; '.join(what)}; no parameter was changed. Lower the learning rate, clip gradients, reset or "
            "reload the optimizer state, or pass nonfinite='skip' to skip such steps."
        )
    for b in bad:
        counter(b)
    return [b for b, ok in zip(blocks, finite) if ok]


# --------------------------------------------------------------------------- stages 3-7
def direction_source(
    grad: torch.Tensor,
    state: dict,
    momentum: float,
    nesterov: bool,
    ok: torch.Tensor | None = None,
    dtype: torch.dtype | None = None,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """Stage 3: update the momentum buffer in ``state`` and return the direction source M.

    With momentum mu > 0: B <- B + (1 - mu)(G - B) (EMA); M = B, or (1 - mu) G + mu B with Nesterov.
    ``grad`` is never modified. ``dtype`` (:meth:`Block.source_dtype`): return M cast to that dtype (the
    Nesterov combination computed in the buffer's precision, then rounded once; the buffer itself stays
    in the parameter's dtype). ``out``: write M there (:func:`source_from_buffer`). It is
    :func:`update_momentum` followed by :func:`source_from_buffer`.

    The kernel defers it to the read of M (:meth:`Block.defer_M`) under an executor that reads every block's
    M in this process (``Executor.defers_momentum``): the buffer update then runs right before M reads the
    buffer back, both still in cache. Updating every buffer first read them back cold: on 16 GPT-like
    matrices (7.1 M parameters) the Nesterov ``lerp`` took 11.2 ms per step against torch.optim.Muon's 7.9,
    which interleaves them the same way.
    """
    return source_from_buffer(grad, update_momentum(grad, state, momentum, ok), momentum, nesterov, dtype, out=out)


direction_source.writes_out = True  # type: ignore[attr-defined]  # (Block.write_M: it takes out=)


def compute_update(
    M: torch.Tensor,
    *,
    norm: str,
    p: float | None = None,
    step_size: str = "fixed",
    scale_rule: str = "none",
    tensor_mode: str = "flatten",
    transposed: bool = False,
    row_blocks: int = 1,
    **dualizer,
) -> torch.Tensor:
    """Stages 4-5: ``scale * dualize(M)`` in M's shape (the expensive, owner-computed part).

    ``scale`` is ``shape_scale(matrix view shape, scale_rule)`` times, for ``step_size="dual"``, the
    dual norm of M (one per matrix in batch mode). ``dualizer`` holds the polar settings
    (method, steps, dtype, coefficients, normalization, ns_eps) where they apply, and ``check=False`` when
    the caller validated them already (the optimizers: :meth:`StepSettings.update_kwargs`); ``row_blocks``
    splits the matrix view into blocks of rows dualized separately (:func:`steepest.geometry.matrix_view`).
    """
    X = geo.matrix_view(M, tensor_mode, transposed, row_blocks)
    if X.ndim == 1 and not geo.is_entrywise(norm):
        raise ValueError(f"norm {norm!r} needs a matrix, got shape {tuple(M.shape)}")
    D, dn = geo.dualize_with_dual_norm(X, norm, p, need_dual_norm=step_size == "dual", **dualizer)
    if step_size == "dual":
        if dn is None:  # need_dual_norm=True always returns it
            raise RuntimeError(f"dualize_with_dual_norm returned no dual norm for norm={norm!r}")
        # in float32 at least: dn * D of a float16 parameter overflows long before lr * dn * D does
        work = D.dtype if D.dtype.itemsize >= 4 else torch.float32
        dn = dn.to(work)
        D = D.to(work) * (dn.unsqueeze(-1).unsqueeze(-1) if X.ndim >= 2 and dn.ndim > 0 else dn)
    D = scale_update(D, geo.shape_scale(tuple(X.shape), scale_rule))
    return geo.from_matrix(D, M.shape, transposed, row_blocks)


def scale_update(D: torch.Tensor, scale: float) -> torch.Tensor:
    """``scale * D`` (stage 5's shape scale). A bf16/fp16 D (M handed over in the iteration dtype) is
    scaled in float32: the value is the one a float32 D would get, and apply_update rounds it once into
    the parameter's dtype. In place on the cast: every fresh multi-MiB CPU buffer costs page faults
    (2.5 ms for a 1536x384 float32 buffer on the benchmark VM)."""
    if scale == 1.0:
        return D
    return D * scale if D.dtype.itemsize >= 4 else D.float().mul_(scale)


def dualize_each(blocks: list[Block]) -> list[tuple[torch.Tensor, bool]]:
    """The plain dualizer: one :func:`compute_update` per block; ``ok`` checked for dual steps only
    (a fixed-scale dualizer of a finite M is finite), with one synchronisation for all of them."""
    out = [compute_update(b.M, **b.kwargs) for b in blocks]
    return with_ok(blocks, out)


def with_ok(blocks: list[Block], updates: list[torch.Tensor]) -> list[tuple[torch.Tensor, bool]]:
    """Pair each update with its finiteness (dual steps only; one sync)."""
    dual = [i for i, b in enumerate(blocks) if b.cfg.step_size == "dual"]
    ok = [True] * len(blocks)
    if dual:
        flags = torch.stack([torch.isfinite(updates[i]).all() for i in dual]).tolist()
        for i, f in zip(dual, flags):
            ok[i] = bool(f)
    return list(zip(updates, ok))


def apply_update(
    param: torch.Tensor,
    update: torch.Tensor,
    lr: float | torch.Tensor,
    weight_decay: float,
    lr_scale: float = 1.0,
    ok: torch.Tensor | None = None,
) -> None:
    """Stages 6-7: W <- (1 - lr wd) W - lr * lr_scale * update (decay with the unadjusted lr).

    ``lr`` may be a one-element tensor (torch.optim's tensor lr; eager steps only).

    ``ok`` (a 0-dim bool tensor, compiled steps only): W is left unchanged where it is False.
    """
    if ok is not None:
        new = param * (1.0 - lr * weight_decay) if weight_decay != 0.0 else param
        param.copy_(torch.where(ok, new - (lr * lr_scale) * update.to(param.dtype), param))
        return
    if isinstance(lr, torch.Tensor):  # a tensor lr: lr * wd and lr * scale in its dtype, as torch.optim.Muon does
        decay, step = float(1.0 - lr * weight_decay), float(lr * lr_scale)
    else:
        decay, step = 1.0 - lr * weight_decay, lr * lr_scale
    if weight_decay != 0.0:
        param.mul_(decay)
    if update.dtype.itemsize > param.dtype.itemsize:
        # a wider update (a dual step's float32 ||M|| D for a float16/bf16 parameter): lr * update first, then
        # one rounding into the parameter's dtype, so a large dual norm times a small lr stays finite
        param.add_((update * -step).to(param.dtype))
    else:
        # a narrower update (bf16 D for a float32 parameter) is read as it is: add_ computes in the parameter's
        # dtype, the value .to(param.dtype) would give, without the float32 copy of D (one pass and one
        # parameter-sized allocation less per matrix)
        param.add_(update, alpha=-step)


def adamw_step(
    param: torch.Tensor,
    grad: torch.Tensor,
    state: dict,
    *,
    lr: float | torch.Tensor,
    betas: tuple[float, float],
    eps: float,
    weight_decay: float,
) -> None:
    """AdamW (Loshchilov & Hutter 2019) for the parameters routed away from matrix geometry.

    m <- b1 m + (1 - b1) g; v <- b2 v + (1 - b2) g^2; W <- (1 - lr wd) W - lr m_hat / (sqrt(v_hat) + eps).
    """
    if "step" not in state:
        state["step"] = 0
        state["exp_avg"] = torch.zeros_like(param, memory_format=torch.preserve_format)
        state["exp_avg_sq"] = torch.zeros_like(param, memory_format=torch.preserve_format)
    state["step"] += 1
    b1, b2 = betas
    t = state["step"]
    exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
    exp_avg.lerp_(grad, 1.0 - b1)
    exp_avg_sq.mul_(b2).addcmul_(grad, grad, value=1.0 - b2)
    denom = (exp_avg_sq.sqrt() / math.sqrt(1.0 - b2**t)).add_(eps)
    if weight_decay != 0.0:
        param.mul_(1.0 - lr * weight_decay)
    param.addcdiv_(exp_avg, denom, value=-lr / (1.0 - b1**t))


# --------------------------------------------------------------------------- the kernel
def steepest_step(
    blocks: list[Block], *, nonfinite: str = "raise", on_skip: Callable[[Block], None], executor=None, chooser=None
) -> None:
    """One optimizer step over ``blocks`` (every block with a gradient), in the module's stage order.

    ``executor`` (:mod:`steepest.optim.executors`; None: one process, one matrix at a time) runs the
    checks (``executor.check(blocks)``: per block, is its gradient finite; the distributed one decides
    over all ranks and may set or clear ``block.grad``: blocks left without a gradient are not stepped)
    and stages 4-5 (``executor.dualize(blocks)``: ``(U, ok)`` per block in block order, as a list or
    lazily: each update is applied, and its M released, before the next is asked for). ``on_skip``
    counts a skipped block. ``chooser`` (:mod:`steepest.optim.choosers`) may set each steepest block's
    ``norm``/``p``/``lr_scale`` after the checks (``chooser.choose(blocks, executor)``).
    """
    all_finite = None
    if torch.compiler.is_compiling():
        # torch.compile(opt.step, fullgraph=True): a data-dependent Python branch would break the graph,
        # so the check becomes a mask: when any gradient holds NaN/Inf the whole step leaves every
        # parameter and momentum buffer unchanged (nonfinite="raise" cannot raise inside a graph, and
        # no skip is counted). Eager steps keep the per-block policy below.
        check_dense(blocks)
        blocks = [b for b in blocks if b.grad is not None]
        if any(b.adamw or b.cfg.step_size == "dual" for b in blocks):
            raise NotImplementedError(
                "a compiled step supports fixed-step steepest groups only (no AdamW-routed "
                "or step_size='dual' groups); step those eagerly"
            )
        all_finite = finite_mask([b.G for b in blocks]).all() if blocks else None
    else:
        finite = executor.check(blocks) if executor is not None else local_check(blocks)
        blocks = [b for b in nonfinite_policy(blocks, finite, nonfinite, on_skip) if b.grad is not None]
    steep = [b for b in blocks if not b.adamw]
    if chooser is not None and steep:
        chooser.choose(steep, executor)
    # A local executor reads every block's M in this process: the buffer update can wait for it (in cache)
    defer = all_finite is None and (executor is None or getattr(executor, "defers_momentum", False))
    for b in steep:
        # M (a fresh tensor with Nesterov or a cast) when the dualizer reads it, so a dualizer that goes
        # block by block (batched.dualize_batched, lazy) holds one M at a time; the buffer then too, or now.
        c = b.cfg
        dtype = b.source_dtype()
        if dtype is not None:
            b.fold_scale()
        if defer and c.momentum != 0.0 and (c.nesterov or dtype is not None):
            b.defer_M(
                functools.partial(direction_source, b.G, b.state, c.momentum, c.nesterov, None, dtype),
                dtype or b.G.dtype,
            )
            continue
        buf = update_momentum(b.G, b.state, c.momentum, all_finite)
        if buf is not None and not c.nesterov and dtype is None:
            b.M = buf  # M is the buffer itself: nothing to defer
        else:
            b.defer_M(
                functools.partial(source_from_buffer, b.G, buf, c.momentum, c.nesterov, dtype), dtype or b.G.dtype
            )
    if executor is not None and steep:
        steep = executor.order(steep)
    updates = (executor.dualize(steep) if executor is not None else dualize_each(steep)) if steep else []
    if isinstance(updates, list) and nonfinite == "raise":  # dual steps: every update is known before any is applied
        bad = [b.name for b, (_, ok) in zip(steep, updates) if not ok]
        if bad:
            raise NonFiniteGradientError(
                f"the update of {', '.join(bad)} is not finite (a finite gradient whose dual-norm step overflowed); "
                "no parameter was changed. Lower the learning rate, or pass nonfinite='skip' to skip such steps."
            )
    for b in blocks:  # after the check above, so a refused step changes nothing
        if b.adamw:
            c = b.cfg
            adamw_step(b.param, b.G, b.state, lr=b.lr, betas=c.betas, eps=c.eps, weight_decay=b.weight_decay)
    # next() and del, not zip: zip's reused result tuple would keep the previous update alive while a lazy
    # dualizer computes the next one (one update more at the step's peak)
    pending = iter(updates)
    for b in steep:
        U, ok = next(pending)
        b.M = None
        if not ok:
            on_skip(b)
            continue
        # a tensor lr (torch.optim's) is applied as a tensor on eager steps, as torch.optim.Muon does
        lr = b.lr if all_finite is None or not isinstance(b.lr, torch.Tensor) else float(b.lr)
        apply_update(b.param, U, lr, b.weight_decay, b.lr_scale, all_finite)
        del U


__all__ = [
    "Block",
    "param_label",
    "steepest_params",
    "NonFiniteGradientError",
    "steepest_step",
    "finite_mask",
    "finite_flags",
    "local_check",
    "check_dense",
    "nonfinite_policy",
    "finite_blocks",
    "state_tensors",
    "direction_source",
    "update_momentum",
    "source_from_buffer",
    "compute_update",
    "scale_update",
    "dualize_each",
    "with_ok",
    "apply_update",
    "adamw_step",
    "STEP_SIZES",
]
