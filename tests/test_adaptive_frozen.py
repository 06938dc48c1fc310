"""Adaptive's trajectories, frozen before the chooser refactor (issue 18 item 3): bit for bit.

Each case trains the optim_db ``Net`` (float64, seed 0) for 7 steps with ``every=2`` (decisions at
steps 0, 2, 4, 6) and compares the SHA-256 of every weight's bytes and the decision history with
values recorded from the code before ``Adaptive`` became a chooser preset. A hash, not a tolerance:
the preset must take exactly the same steps. float64 on CPU: the hashes hold for one kind of machine
(:mod:`kernel_env`; MKL's float64 kernels reduce differently on an Intel Xeon with AMX and an AMD EPYC), so
they are kept per kind: the CI machine's (AMD EPYC) from the code before the refactor, the Intel Xeon's
(AMX) from 2026-12-07's code, which matched the EPYC hashes on the CI machine. The decisions are compared on
every machine (equal on both kinds); the hashes only where they were recorded.
"""

from __future__ import annotations

import hashlib

import pytest
import torch

import steepest
from kernel_env import kernel_key
from optim_db import HeldOut, Net, loss_fn

CASES = {
    "proxy": dict(),
    "spec_sign": dict(with_model=True, criterion="spec_sign"),
    "dd": dict(with_model=True, criterion="dd", candidates=("spectral", "frobenius")),
    "oracle": dict(with_model=True, criterion="oracle", oracle_step="own"),
    "proxy-entrywise": dict(candidates=("linf", "frobenius"), margin=0.0, patience=1),
    "dual-multipliers": dict(
        with_model=True,
        step_size="dual",
        momentum=0.9,
        nesterov=True,
        lr_multipliers={"spectral": 0.5, "linf": 2.0, "frobenius": 1.0},
    ),
}


def trajectory(case: str, steps: int = 7) -> tuple[dict, list]:
    kw = dict(CASES[case])
    model = Net(torch.float64)
    if kw.pop("with_model", False):
        kw["model"] = model
    if kw.get("criterion") == "oracle":
        kw["oracle_loss"] = HeldOut(model)
    opt = steepest.Adaptive(model.groups(), lr=0.05, every=2, **kw)
    for t in range(steps):
        opt.zero_grad()
        loss_fn(model, t).backward()
        opt.step()
    digests = {n: hashlib.sha256(p.detach().numpy().tobytes()).hexdigest()[:16] for n, p in model.named_parameters()}
    return digests, [(h["step"], h["param"], h["geometry"]) for h in opt.history]


FROZEN: dict = {
    "dd": (
        {
            "lin1.bias": "c7bd535ca071bbdd",
            "lin1.weight": "ec62b92fab30bbc9",
            "lin2.bias": "02055b55db404686",
            "lin2.weight": "95b830084eb65b82",
            "mix": "ff6559d918396bf3",
        },
        [
            (0, "lin1.weight", "spectral"),
            (0, "mix", "spectral"),
            (0, "lin2.weight", "spectral"),
            (2, "lin1.weight", "spectral"),
            (2, "mix", "spectral"),
            (2, "lin2.weight", "spectral"),
            (4, "lin1.weight", "spectral"),
            (4, "mix", "spectral"),
            (4, "lin2.weight", "spectral"),
            (6, "lin1.weight", "frobenius"),
            (6, "mix", "spectral"),
            (6, "lin2.weight", "spectral"),
        ],
    ),
    "dual-multipliers": (
        {
            "lin1.bias": "36c8f87493189583",
            "lin1.weight": "ad353d1cb6693ab9",
            "lin2.bias": "4b8e07704338cc7e",
            "lin2.weight": "01c46937fc35f9f6",
            "mix": "9d8b3dfcbc68e345",
        },
        [
            (0, "lin1.weight", "spectral"),
            (0, "mix", "spectral"),
            (0, "lin2.weight", "spectral"),
            (2, "lin1.weight", "spectral"),
            (2, "mix", "spectral"),
            (2, "lin2.weight", "spectral"),
            (4, "lin1.weight", "spectral"),
            (4, "mix", "spectral"),
            (4, "lin2.weight", "spectral"),
            (6, "lin1.weight", "spectral"),
            (6, "mix", "spectral"),
            (6, "lin2.weight", "spectral"),
        ],
    ),
    "oracle": (
        {
            "lin1.bias": "d76f7f58e281ad6a",
            "lin1.weight": "fdc85b77daf7db3f",
            "lin2.bias": "4511b330a07b2606",
            "lin2.weight": "234ac1ee353a1b00",
            "mix": "8f6aad2a1b9cb54c",
        },
        [
            (0, "lin1.weight", "linf"),
            (0, "mix", "linf"),
            (0, "lin2.weight", "spectral"),
            (2, "lin1.weight", "linf"),
            (2, "mix", "frobenius"),
            (2, "lin2.weight", "frobenius"),
            (4, "lin1.weight", "linf"),
            (4, "mix", "frobenius"),
            (4, "lin2.weight", "linf"),
            (6, "lin1.weight", "frobenius"),
            (6, "mix", "frobenius"),
            (6, "lin2.weight", "linf"),
        ],
    ),
    "proxy": (
        {
            "lin1.bias": "c7bd535ca071bbdd",
            "lin1.weight": "c4cabc312fba8b94",
            "lin2.bias": "02055b55db404686",
            "lin2.weight": "95b830084eb65b82",
            "mix": "ff6559d918396bf3",
        },
        [
            (0, "lin1.weight", "spectral"),
            (0, "mix", "spectral"),
            (0, "lin2.weight", "spectral"),
            (2, "lin1.weight", "spectral"),
            (2, "mix", "spectral"),
            (2, "lin2.weight", "spectral"),
            (4, "lin1.weight", "spectral"),
            (4, "mix", "spectral"),
            (4, "lin2.weight", "spectral"),
            (6, "lin1.weight", "spectral"),
            (6, "mix", "spectral"),
            (6, "lin2.weight", "spectral"),
        ],
    ),
    "proxy-entrywise": (
        {
            "lin1.bias": "5563ab2743e97e14",
            "lin1.weight": "8408e24e163b4868",
            "lin2.bias": "8c8fef6b681db8a5",
            "lin2.weight": "53072aa5b012850e",
            "mix": "f073f87b702c3bd4",
        },
        [
            (0, "lin1.weight", "frobenius"),
            (0, "mix", "linf"),
            (0, "lin2.weight", "linf"),
            (2, "lin1.weight", "linf"),
            (2, "mix", "frobenius"),
            (2, "lin2.weight", "linf"),
            (4, "lin1.weight", "frobenius"),
            (4, "mix", "linf"),
            (4, "lin2.weight", "frobenius"),
            (6, "lin1.weight", "frobenius"),
            (6, "mix", "frobenius"),
            (6, "lin2.weight", "frobenius"),
        ],
    ),
    "spec_sign": (
        {
            "lin1.bias": "c7bd535ca071bbdd",
            "lin1.weight": "c4cabc312fba8b94",
            "lin2.bias": "02055b55db404686",
            "lin2.weight": "95b830084eb65b82",
            "mix": "ff6559d918396bf3",
        },
        [
            (0, "lin1.weight", "spectral"),
            (0, "mix", "spectral"),
            (0, "lin2.weight", "spectral"),
            (2, "lin1.weight", "spectral"),
            (2, "mix", "spectral"),
            (2, "lin2.weight", "spectral"),
            (4, "lin1.weight", "spectral"),
            (4, "mix", "spectral"),
            (4, "lin2.weight", "spectral"),
            (6, "lin1.weight", "spectral"),
            (6, "mix", "spectral"),
            (6, "lin2.weight", "spectral"),
        ],
    ),
}


#: kernel_env.kernel_key() -> case -> weight hashes (FROZEN holds the CI machine's, with the decisions).
DIGESTS: dict = {
    "2.13.0+cpu-AVX512-x86_64-AuthenticAMD": {case: digests for case, (digests, _) in FROZEN.items()},
    "2.13.0+cpu-AVX512-x86_64-GenuineIntel-amx": {
        "dd": {
            "lin1.bias": "a5c7d52559695a3e",
            "lin1.weight": "7aab6213f42ba361",
            "lin2.bias": "02055b55db404686",
            "lin2.weight": "3efffd8d59b73294",
            "mix": "165a701ebcdc6882",
        },
        "dual-multipliers": {
            "lin1.bias": "8edd285f285086c0",
            "lin1.weight": "8162a07b11f8e2ef",
            "lin2.bias": "4b8e07704338cc7e",
            "lin2.weight": "b75c6a74ca92f9f9",
            "mix": "61eaf86d30dc49a7",
        },
        "oracle": {
            "lin1.bias": "cd6c9cbd5b4fb22b",
            "lin1.weight": "ba4dd117a9e65d40",
            "lin2.bias": "4511b330a07b2606",
            "lin2.weight": "c0c07498fd8e9899",
            "mix": "e73f9c3e4dbb664d",
        },
        "proxy": {
            "lin1.bias": "a5c7d52559695a3e",
            "lin1.weight": "00bdd7905ed23fb4",
            "lin2.bias": "02055b55db404686",
            "lin2.weight": "3efffd8d59b73294",
            "mix": "165a701ebcdc6882",
        },
        "proxy-entrywise": {
            "lin1.bias": "dc1dd1c329773d1f",
            "lin1.weight": "3e623c14a6ae3245",
            "lin2.bias": "8c8fef6b681db8a5",
            "lin2.weight": "482b2a0dd963b9fe",
            "mix": "754e64b9cafbea1e",
        },
        "spec_sign": {
            "lin1.bias": "a5c7d52559695a3e",
            "lin1.weight": "00bdd7905ed23fb4",
            "lin2.bias": "02055b55db404686",
            "lin2.weight": "3efffd8d59b73294",
            "mix": "165a701ebcdc6882",
        },
    },
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_adaptive_trajectory_is_frozen(case):
    digests, history = trajectory(case)
    assert history == FROZEN[case][1]  # the decisions: machine-independent (ties go to the first candidate)
    frozen = DIGESTS.get(kernel_key())
    if frozen is None:
        pytest.skip(f"weight hashes frozen for {sorted(DIGESTS)} only; this machine is {kernel_key()}")
    assert digests == frozen[case]
