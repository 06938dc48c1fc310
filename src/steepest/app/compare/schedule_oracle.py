"""The schedule oracle: the best sequence of geometries over training time, found by branching (issue 21).

An upper bound for choosers that follow the training phase (a schedule, a measured switch). Along one run,
at every segment start s = 0, H, 2H, ... it

1. snapshots everything the run's future depends on: the model's weights, the optimizer state (momentum
   buffers, AdamW moments), the torch / numpy / Python RNG states; the data stream position is the step
   itself (a task's batches are a pure function of (seed, step), :class:`steepest.app.tasks.Task`);
2. branches: from that snapshot, trains each candidate geometry k for the H steps s .. s+H-1 on the
   training stream, at its own tuned learning rate and with the run's trapezoid schedule at the global
   step (:func:`steepest.app.compare.loop.lr_factor`), the momentum shared (a branch continues the momentum
   of the kept path; only the dualization of M and the lr differ, as in ``steepest.Adaptive``);
3. scores branch k by the **validation loss at its end**, L_val(w_k(s+H)) (``task.evaluate``, the loss
   the benchmark's target is measured on; a branch that diverges scores +inf; ties go to the earlier
   candidate), keeps the best branch's state and continues from it.

So the kept path is a run whose geometry is piecewise constant over segments of H steps, each piece chosen
with knowledge of the future H steps: for H = 1 the greedy one-step choice (short-horizon bias), for H =
the whole run the best fixed geometry. Reporting H in {1, 25, 100} shows the bias. The scoring uses the
validation set, so the oracle is a bound for analysis, not an optimizer.

**Annealed scoring** (``anneal=A``): at a constant lr a branch's validation loss at its end includes the
noise floor of its step size, so a small, quiet step (Frobenius at its small tuned lr) can score better than
a large one (spectral) that ends far lower once the lr decays: the short-horizon bias that kept the H = 100
oracle on Frobenius for 1100 of the longer task's 1500 steps. With ``anneal=A`` each branch is scored after
A more steps (the training stream's next batches) with its lr decayed linearly from the schedule's value at
the branch end to 0, i.e. by what the branch would reach if training cooled down there; the kept path then
continues from the branch end itself (the annealing steps are thrown away). The last segment, which ends
the run (its own cooldown), is scored as it is.

Candidates are ``steepest compare`` entries (:data:`steepest.app.compare.optimizers.OPTIMIZERS`) with a
steepest optimizer whose per-parameter state has the same layout (e.g. ``specgd``, ``schatten``,
``frobenius``: a momentum buffer per matrix, AdamW moments for the rest), each built once at its own lr;
chooser bookkeeping in a candidate's state (its geometry code) stays that candidate's own.

Cost: every segment trains all K candidates, so K x steps training steps (plus K x A per segment with
``anneal``) plus K evaluations per segment
(``OracleResult.cpu_total_s``); the kept path alone costs ``cpu_path_s`` (its training steps and the
evaluations a plain run makes every ``eval_every`` steps), which is what steps and CPU time to a target
are measured on.

Example:
    >>> import torch
    >>> from steepest.app.tasks.base import Task
    >>> X, Y = torch.randn(64, 8, generator=torch.Generator().manual_seed(0)), torch.randn(64, 2)
    >>> task = Task(
    ...     name="toy",
    ...     make_model=lambda: torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 2)),
    ...     batch=lambda seed, step: (X[(step * 8) % 64 :][:8], Y[(step * 8) % 64 :][:8]),
    ...     loss=lambda m, b: torch.nn.functional.mse_loss(m(b[0]), b[1]),
    ...     evaluate=lambda m: float(torch.nn.functional.mse_loss(m(X), Y)),
    ... )
    >>> cands = [Candidate("specgd", 0.02), Candidate("frobenius", 0.01)]
    >>> r = schedule_oracle(task, cands, horizon=5, steps=20, eval_every=5, aux_lr=1e-3)
    >>> len(r.choices), r.steps_done
    (4, 20)
"""

from __future__ import annotations

import copy
import dataclasses
import math
import time
from collections.abc import Callable, Sequence

import torch

from steepest.app.checkpoint import rng_state, set_rng_state
from steepest.app.compare.loop import evaluate, lr_factor
from steepest.app.compare.optimizers import build_optimizer
from steepest.optim.steepest import NonFiniteGradientError

#: Per-parameter state keys that belong to a candidate's chooser (its geometry decision), not to the shared
#: trajectory: they are never carried from one candidate to another.
CHOOSER_KEYS = ("geometry", "challenger", "streak", "prev_grad")


@dataclasses.dataclass(frozen=True)
class Candidate:
    """One geometry the oracle may choose: a ``steepest compare`` entry name, its (tuned) matrix lr, and a
    label naming it in the choices (default: the name; give one to try an entry at two lrs)."""

    name: str
    lr: float
    label: str | None = None

    @property
    def key(self) -> str:
        return self.label or self.name


@dataclasses.dataclass
class OracleResult:
    """What :func:`schedule_oracle` returns.

    ``evals``: (step, validation loss) of the kept path at 0, every ``eval_every`` steps and the end;
    ``choices``: per segment ``{"start", "end", "winner", "scores": {candidate: val loss at end}}``;
    ``cpu_path_s``: CPU seconds of the kept path's training steps and its ``eval_every`` evaluations;
    ``cpu_total_s``: CPU seconds of everything (all branches, scoring evaluations, snapshots);
    ``diverged_at``: the segment start where every branch diverged (None if none did);
    ``model``: the trained model (the kept path's weights).
    """

    horizon: int
    candidates: list[Candidate]
    evals: list[tuple[int, float]]
    choices: list[dict]
    steps_done: int
    cpu_path_s: float
    cpu_total_s: float
    wall_s: float
    diverged_at: int | None = None
    model: torch.nn.Module | None = None

    @property
    def final_val(self) -> float:
        """The kept path's last validation loss (NaN when it diverged)."""
        return self.evals[-1][1] if self.evals and self.diverged_at is None else math.nan

    @property
    def overhead(self) -> float:
        """The oracle's decision cost relative to the kept path: cpu_total_s / cpu_path_s - 1."""
        return self.cpu_total_s / self.cpu_path_s - 1.0 if self.cpu_path_s > 0 else math.nan


def _clone(x):
    """A deep copy that owns its tensors (``tensor.clone()``; lists, dicts, numbers copied)."""
    if isinstance(x, torch.Tensor):
        return x.detach().clone()
    if isinstance(x, dict):
        return {k: _clone(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return type(x)(_clone(v) for v in x)
    return copy.deepcopy(x)


def _params(optimizer) -> list[torch.nn.Parameter]:
    return [p for g in optimizer.param_groups for p in g["params"]]


def _trajectory_state(optimizer) -> dict:
    """The optimizer's per-parameter state without chooser bookkeeping, cloned, keyed by parameter."""
    return {p: {k: _clone(v) for k, v in st.items() if k not in CHOOSER_KEYS} for p, st in optimizer.state.items()}


def _load_trajectory_state(optimizer, carried: dict) -> None:
    """Replace ``optimizer``'s per-parameter state by ``carried`` (cloned), keeping its own chooser keys."""
    own = {p: {k: v for k, v in st.items() if k in CHOOSER_KEYS} for p, st in optimizer.state.items()}
    optimizer.state.clear()
    for p in _params(optimizer):
        st = {**own.get(p, {}), **_clone(carried.get(p, {}))}
        if st:
            optimizer.state[p] = st


def _chooser_snapshot(optimizer):
    """The candidate's own decision state (chooser and its per-parameter keys), restored after a lost branch."""
    chooser = getattr(optimizer, "chooser", None)
    keys = {p: {k: _clone(v) for k, v in st.items() if k in CHOOSER_KEYS} for p, st in optimizer.state.items()}
    return (_clone(chooser.state_dict()) if chooser is not None else None), keys


def _chooser_restore(optimizer, snap) -> None:
    chooser_sd, keys = snap
    if chooser_sd is not None:
        optimizer.chooser.load_state_dict(_clone(chooser_sd))
    for p, st in optimizer.state.items():
        for k in CHOOSER_KEYS:
            st.pop(k, None)
        st.update(_clone(keys.get(p, {})))


def check_candidates(candidates: Sequence[Candidate]) -> list[Candidate]:
    """ValueError unless ``candidates`` is a non-empty list of distinct :class:`Candidate` with positive lrs."""
    cands = list(candidates)
    if not cands or not all(isinstance(c, Candidate) for c in cands):
        raise ValueError("give at least one Candidate(name, lr), e.g. [Candidate('specgd', 0.02)]")
    names = [c.key for c in cands]
    if len(set(names)) != len(names):
        raise ValueError(f"candidate labels repeat: {names}; give each a distinct label")
    bad = [c for c in cands if not (isinstance(c.lr, (int, float)) and math.isfinite(c.lr) and c.lr > 0)]
    if bad:
        raise ValueError(f"candidate learning rates must be positive finite numbers, got {bad}")
    return cands


def schedule_oracle(
    task,
    candidates: Sequence[Candidate],
    *,
    horizon: int,
    aux_lr: float,
    seed: int = 0,
    steps: int | None = None,
    eval_every: int | None = None,
    warmup: float = 0.05,
    cooldown: float = 0.3,
    anneal: int = 0,
    on_segment: Callable[[dict], None] | None = None,
) -> OracleResult:
    """Run the schedule oracle (module docstring) on ``task`` and return the kept path.

    Args:
        task: a :class:`steepest.app.tasks.Task` (batches a pure function of (seed, step)).
        candidates: the geometries, as ``steepest compare`` entries with their lrs (:class:`Candidate`).
        horizon: H, the segment length in steps (>= 1; the last segment may be shorter).
        aux_lr: the AdamW lr of the hybrids' non-matrix parameters (the tuned AdamW lr).
        seed: model initialization (``torch.manual_seed(seed)`` before ``task.make_model()``) and data.
        steps, eval_every: as in ``steepest compare`` (default: the task's).
        warmup, cooldown: the trapezoid schedule's fractions, applied at the global step.
        anneal: A >= 0; with A > 0 every branch but the last segment's is scored after A further steps with
            its lr decayed linearly to 0 (module docstring, "Annealed scoring"); 0 scores at the branch end.
        on_segment: called with each segment's choice record as it is made (progress, logging).
    """
    cands = check_candidates(candidates)
    steps = int(task.steps if steps is None else steps)
    eval_every = int(task.eval_every if eval_every is None else eval_every)
    if isinstance(horizon, bool) or not isinstance(horizon, int) or horizon < 1:
        raise ValueError(f"horizon must be a whole number of steps >= 1, got {horizon!r}")
    if steps < 1 or eval_every < 1:
        raise ValueError(f"steps and eval_every must be >= 1, got {steps} and {eval_every}")
    if isinstance(anneal, bool) or not isinstance(anneal, int) or anneal < 0:
        raise ValueError(f"anneal must be a whole number of steps >= 0 (0: score at the branch end), got {anneal!r}")
    wall0, cpu0 = time.perf_counter(), time.process_time()
    torch.manual_seed(seed)
    model = task.make_model()
    opts = [build_optimizer(c.name, model, c.lr, aux_lr, task.routing) for c in cands]
    order = [id(p) for p in _params(opts[0])]
    for c, o in zip(cands, opts):
        if [id(p) for p in _params(o)] != order:
            raise ValueError(
                f"candidate {c.name!r} orders or splits the parameters differently from {cands[0].name!r}; "
                "the oracle carries one optimizer state between candidates, so use steepest entries "
                "(specgd, schatten, frobenius, muon, ...), not torch-muon or adamw"
            )
    base_lrs = [[float(g["lr"]) for g in o.param_groups] for o in opts]
    model.train()
    evals: list[tuple[int, float]] = []
    t0 = time.process_time()
    evals.append((0, evaluate(model, task.evaluate)))
    cpu_path = time.process_time() - t0
    carried: dict = {}
    choices: list[dict] = []
    start, diverged_at = 0, None
    while start < steps:
        end = min(start + horizon, steps)
        weights = _clone(model.state_dict())
        rng = rng_state()
        best = None
        scores = {}
        for c, opt, bases in zip(cands, opts, base_lrs):
            model.load_state_dict(weights)
            set_rng_state(rng)
            _load_trajectory_state(opt, carried)
            snap = _chooser_snapshot(opt)
            branch = _branch(model, opt, bases, task, seed, start, end, steps, eval_every, warmup, cooldown)
            if anneal and end < steps and math.isfinite(branch["score"]):
                branch["score"] = _annealed_score(model, opt, bases, task, seed, end, steps, anneal, warmup, cooldown)
            scores[c.key] = branch["score"]
            if best is None or branch["score"] < best["score"]:
                if best is not None:
                    _chooser_restore(best["opt"], best["snap"])
                branch.update(
                    opt=opt,
                    name=c.key,
                    snap=snap,
                    weights=_clone(model.state_dict()),
                    state=_trajectory_state(opt),
                    rng=rng_state(),
                )
                best = branch
            else:
                _chooser_restore(opt, snap)
        if best is None:  # check_candidates refuses an empty list, so this is a broken invariant
            raise RuntimeError(f"schedule oracle: no candidate branch was kept for steps {start}-{end}")
        record = dict(start=start, end=end, winner=best["name"], scores=scores)
        choices.append(record)
        if on_segment is not None:
            on_segment(record)
        if not math.isfinite(best["score"]):
            diverged_at = start
            break
        model.load_state_dict(best["weights"])
        carried = best["state"]
        set_rng_state(best["rng"])
        evals.extend(best["evals"])
        cpu_path += best["cpu"]
        start = end
    return OracleResult(
        horizon=horizon,
        candidates=cands,
        evals=evals,
        choices=choices,
        steps_done=start,
        cpu_path_s=cpu_path,
        cpu_total_s=time.process_time() - cpu0,
        wall_s=time.perf_counter() - wall0,
        diverged_at=diverged_at,
        model=model,
    )


def _step(model, opt, base_lrs, factor, task, seed, t) -> bool:
    """One training step at ``factor`` x each group's base lr on batch ``t`` (train_loop's operations, in its
    order); False when the loss or a gradient is not finite (nothing stepped then)."""
    for g, base in zip(opt.param_groups, base_lrs):
        g["lr"] = base * factor
    loss = task.loss(model, task.batch(seed, t))
    if not math.isfinite(float(loss.detach())):
        return False
    opt.zero_grad(set_to_none=True)
    loss.backward()
    try:
        opt.step()
    except NonFiniteGradientError:
        return False
    return True


def _annealed_score(model, opt, base_lrs, task, seed, end, steps, anneal, warmup, cooldown) -> float:
    """The validation loss after ``anneal`` steps from the branch end with the lr decayed linearly to 0 (step
    ``end + i`` at ``lr_factor(end) * (1 - i / anneal)`` of each group's lr), on the training stream's batches
    ``end ..``; everything the kept path continues from (weights, optimizer state, chooser, RNG) is put
    back afterwards. +inf when the annealing diverges."""
    weights, state, snap, rng = _clone(model.state_dict()), _trajectory_state(opt), _chooser_snapshot(opt), rng_state()
    f0 = lr_factor(end, steps, warmup, cooldown)
    score = math.inf
    if all(_step(model, opt, base_lrs, f0 * (1.0 - i / anneal), task, seed, end + i) for i in range(anneal)):
        score = evaluate(model, task.evaluate)
    model.load_state_dict(weights)
    _load_trajectory_state(opt, state)
    _chooser_restore(opt, snap)
    set_rng_state(rng)
    opt.zero_grad(set_to_none=True)
    return score if math.isfinite(score) else math.inf


def _branch(model, opt, base_lrs, task, seed, start, end, steps, eval_every, warmup, cooldown) -> dict:
    """Train steps start .. end-1 with ``opt`` as :func:`steepest.app.compare.loop.train_loop` does (the same
    operations in the same order, so a one-candidate oracle is that loop bit for bit); evaluate at the
    ``eval_every`` points and score by the validation loss at ``end`` (+inf when the branch diverges).
    ``cpu``: CPU seconds of the training steps and of the ``eval_every`` evaluations (not the scoring one)."""
    evals: list[tuple[int, float]] = []
    cpu = 0.0
    for t in range(start, end):
        c0 = time.process_time()
        if not _step(model, opt, base_lrs, lr_factor(t, steps, warmup, cooldown), task, seed, t):
            return dict(score=math.inf, evals=evals, cpu=cpu)
        cpu += time.process_time() - c0
        done = t + 1
        if done % eval_every == 0 or done == steps:
            c0 = time.process_time()
            val = evaluate(model, task.evaluate)
            cpu += time.process_time() - c0
            evals.append((done, val))
            if not math.isfinite(val):
                return dict(score=math.inf, evals=evals, cpu=cpu)
    score = evals[-1][1] if evals and evals[-1][0] == end else evaluate(model, task.evaluate)
    return dict(score=score if math.isfinite(score) else math.inf, evals=evals, cpu=cpu)


__all__ = ["Candidate", "OracleResult", "schedule_oracle", "check_candidates", "CHOOSER_KEYS"]
