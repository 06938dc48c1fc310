"""The schedule oracle (steepest.app.compare.schedule_oracle): branches restore bit for bit, one candidate is
the plain run, a bad candidate is never kept, H = the whole run picks the best fixed geometry."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from steepest.app.compare.loop import evaluate, lr_factor, train_loop
from steepest.app.compare.optimizers import build_optimizer
from steepest.app.compare.schedule_oracle import Candidate, schedule_oracle
from steepest.app.tasks.base import Task

AUX_LR = 1e-3
STEPS, EVAL_EVERY = 12, 4


def toy_task() -> Task:
    """A small regression task with dropout (so every branch must restore the RNG) and hidden matrices for the
    steepest geometries; batches are a pure function of (seed, step), like the built-in tasks'."""
    gen = torch.Generator().manual_seed(123)
    X = torch.randn(256, 10, generator=gen)
    Y = torch.tanh(X @ torch.randn(10, 3, generator=gen))
    Xv, Yv = X[192:], Y[192:]

    def batch(seed, step):
        idx = torch.randint(0, 192, (16,), generator=torch.Generator().manual_seed(seed * 100003 + step))
        return X[idx], Y[idx]

    def make_model():
        return nn.Sequential(
            nn.Linear(10, 24), nn.ReLU(), nn.Dropout(0.2), nn.Linear(24, 24), nn.ReLU(), nn.Linear(24, 3)
        )

    return Task(
        name="toy",
        make_model=make_model,
        batch=batch,
        loss=lambda m, b: nn.functional.mse_loss(m(b[0]), b[1]),
        evaluate=lambda m: float(nn.functional.mse_loss(m(Xv), Yv)),
        steps=STEPS,
        eval_every=EVAL_EVERY,
    )


def plain_run(task: Task, name: str, lr: float, seed: int = 0):
    """What ``steepest compare`` does for one entry: the model after seeding, the entry's optimizer, train_loop."""
    torch.manual_seed(seed)
    model = task.make_model()
    opt = build_optimizer(name, model, lr, AUX_LR, task.routing)
    evals: list[tuple[int, float]] = []
    train_loop(
        model,
        opt,
        lambda t: task.batch(seed, t),
        task.loss,
        task.evaluate,
        steps=STEPS,
        eval_every=EVAL_EVERY,
        on_eval=lambda s, v, st: evals.append((s, v)),
    )
    return model, evals


def same_weights(a: nn.Module, b: nn.Module) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


@pytest.mark.parametrize("name,lr,horizon", [("specgd", 0.02, 5), ("frobenius", 0.01, 1), ("schatten", 0.02, 12)])
def test_one_candidate_is_the_plain_run_bit_for_bit(name, lr, horizon):
    task = toy_task()
    model, evals = plain_run(task, name, lr)
    r = schedule_oracle(task, [Candidate(name, lr)], horizon=horizon, aux_lr=AUX_LR)
    assert r.evals == evals  # exact: the same operations in the same order
    assert same_weights(r.model, model)
    assert r.steps_done == STEPS and r.diverged_at is None
    assert [c["winner"] for c in r.choices] == [name] * math.ceil(STEPS / horizon)
    assert [(c["start"], c["end"]) for c in r.choices][-1] == (STEPS - (STEPS - 1) % horizon - 1, STEPS)


@pytest.mark.parametrize("bad_first", [True, False])
def test_a_bad_candidate_is_never_kept_and_its_branches_leave_no_trace(bad_first):
    """A branch that loses is undone bit for bit (weights, momentum, AdamW moments, RNG): with a candidate that
    always loses (lr 100x) beside SpecGD, the oracle is the one-candidate SpecGD oracle exactly, whether the
    bad branch runs before the good one (which must start from the restored snapshot) or after it (the good
    branch's saved end state must be put back)."""
    task = toy_task()
    good, bad = Candidate("specgd", 0.02), Candidate("specgd", 2.0, label="bad")
    alone = schedule_oracle(task, [good], horizon=3, aux_lr=AUX_LR)
    both = schedule_oracle(task, [bad, good] if bad_first else [good, bad], horizon=3, aux_lr=AUX_LR)
    assert [c["winner"] for c in both.choices] == ["specgd"] * 4
    assert all(c["scores"]["bad"] > c["scores"]["specgd"] for c in both.choices)
    assert both.evals == alone.evals
    assert same_weights(both.model, alone.model)
    # the losing branches cost time: the total is above the kept path's
    assert both.cpu_total_s > both.cpu_path_s


def test_horizon_of_the_whole_run_picks_the_best_fixed_geometry():
    task = toy_task()
    cands = [Candidate("specgd", 0.02), Candidate("frobenius", 0.01), Candidate("schatten", 0.02)]
    finals = {c.name: plain_run(task, c.name, c.lr)[1][-1][1] for c in cands}
    r = schedule_oracle(task, cands, horizon=STEPS, aux_lr=AUX_LR)
    assert r.choices[0]["scores"] == finals  # each branch is that geometry's plain run, bit for bit
    assert r.choices[0]["winner"] == min(finals, key=finals.__getitem__)
    assert r.final_val == min(finals.values())


def test_shorter_horizons_switch_geometry_and_keep_the_momentum():
    """At H = 1 the oracle can switch every step; its kept path is no worse at each segment end than any of its
    branches from the same state (by construction), and its record names a winner per step."""
    task = toy_task()
    cands = [Candidate("specgd", 0.02), Candidate("frobenius", 0.01)]
    r = schedule_oracle(task, cands, horizon=1, aux_lr=AUX_LR)
    assert len(r.choices) == STEPS
    for c in r.choices:
        assert c["scores"][c["winner"]] == min(c["scores"].values())
    kept = dict(r.evals)
    for c in r.choices:
        if c["end"] in kept:
            assert kept[c["end"]] == c["scores"][c["winner"]]


def test_bad_arguments_say_what_to_do():
    task = toy_task()
    with pytest.raises(ValueError, match="at least one Candidate"):
        schedule_oracle(task, [], horizon=1, aux_lr=AUX_LR)
    with pytest.raises(ValueError, match="distinct label"):
        schedule_oracle(task, [Candidate("specgd", 0.02), Candidate("specgd", 0.01)], horizon=1, aux_lr=AUX_LR)
    with pytest.raises(ValueError, match="horizon"):
        schedule_oracle(task, [Candidate("specgd", 0.02)], horizon=0, aux_lr=AUX_LR)
    with pytest.raises(ValueError, match="positive finite"):
        schedule_oracle(task, [Candidate("specgd", -1.0)], horizon=1, aux_lr=AUX_LR)
    with pytest.raises(ValueError, match="steepest entries"):
        schedule_oracle(task, [Candidate("specgd", 0.02), Candidate("adamw", 1e-3)], horizon=1, aux_lr=AUX_LR)


def test_the_kept_path_carries_the_momentum_across_a_switch():
    """Two candidates that differ only in lr (SpecGD at 0.3 and at 0.02) share everything but the step size,
    so the kept path must be one SpecGD run whose lr follows the winners segment by segment, bit for bit: a
    branch that started from its own stale momentum (not the kept path's) would differ after a switch."""
    task = toy_task()
    lrs = {"big": 0.3, "small": 0.02}
    cands = [Candidate("specgd", lr, label=k) for k, lr in lrs.items()]
    r = schedule_oracle(task, cands, horizon=2, aux_lr=AUX_LR)
    winners = [c["winner"] for c in r.choices]
    assert len(set(winners)) == 2, winners  # the test needs a switch
    torch.manual_seed(0)
    model = task.make_model()
    opt = build_optimizer("specgd", model, lrs["big"], AUX_LR, task.routing)
    evals = [(0, evaluate(model, task.evaluate))]
    for t in range(STEPS):
        factor = lr_factor(t, STEPS)
        for g in opt.param_groups:
            g["lr"] = (lrs[winners[t // 2]] if g["algorithm"] == "steepest" else AUX_LR) * factor
        loss = task.loss(model, task.batch(0, t))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if (t + 1) % EVAL_EVERY == 0:
            evals.append((t + 1, evaluate(model, task.evaluate)))
    assert r.evals == evals
    assert same_weights(r.model, model)


@pytest.mark.parametrize("horizon", [1, 5])
def test_annealed_scoring_leaves_the_kept_path_alone(horizon):
    """anneal=A changes only the scores: the annealing steps are undone bit for bit (weights, momentum, AdamW
    moments, chooser, RNG), so a one-candidate oracle with annealing is the plain run exactly."""
    task = toy_task()
    model, evals = plain_run(task, "specgd", 0.02)
    r = schedule_oracle(task, [Candidate("specgd", 0.02)], horizon=horizon, aux_lr=AUX_LR, anneal=3)
    assert r.evals == evals
    assert same_weights(r.model, model)


def test_annealed_score_is_the_loss_after_a_linear_cooldown():
    """The score of a branch that does not end the run is the validation loss after A more steps (the next
    batches) at lr_factor(end) * (1 - i / A), computed here by hand from the plain run; the last segment is
    scored at its end."""
    task = toy_task()
    H, A = 4, 3
    r = schedule_oracle(task, [Candidate("frobenius", 0.01)], horizon=H, aux_lr=AUX_LR, anneal=A)
    for seg in r.choices:
        torch.manual_seed(0)
        model = task.make_model()
        opt = build_optimizer("frobenius", model, 0.01, AUX_LR, task.routing)
        bases = [float(g["lr"]) for g in opt.param_groups]
        end, extra = seg["end"], (A if seg["end"] < STEPS else 0)
        for t in range(end + extra):
            f = lr_factor(t, STEPS) if t < end else lr_factor(end, STEPS) * (1 - (t - end) / A)
            for g, b in zip(opt.param_groups, bases):
                g["lr"] = b * f
            loss = task.loss(model, task.batch(0, t))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if t + 1 < end and (t + 1) % EVAL_EVERY == 0:
                evaluate(model, task.evaluate)  # the plain run's evaluations (RNG-free: dropout off in eval)
        assert seg["scores"]["frobenius"] == evaluate(model, task.evaluate), seg


def test_annealed_scores_differ_from_branch_end_scores_and_bad_anneal_is_refused():
    """Two SpecGD lrs on the toy task: with A > 0 the scores are the cooled-down losses, not the branch-end
    ones, and every one is finite; a negative A is refused with the argument's name."""
    task = toy_task()
    cands = [Candidate("specgd", 0.3, label="big"), Candidate("specgd", 0.02, label="small")]
    plain = schedule_oracle(task, cands, horizon=4, aux_lr=AUX_LR)
    cooled = schedule_oracle(task, cands, horizon=4, aux_lr=AUX_LR, anneal=4)
    first_plain, first_cooled = plain.choices[0]["scores"], cooled.choices[0]["scores"]
    assert first_plain != first_cooled
    assert all(math.isfinite(v) for c in cooled.choices for v in c["scores"].values())
    with pytest.raises(ValueError, match="anneal"):
        schedule_oracle(task, cands, horizon=4, aux_lr=AUX_LR, anneal=-1)
