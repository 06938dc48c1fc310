"""Frozen LayerMonitor records: one small fixed-seed training, monitored with every ``method`` and warm start.

tests/test_monitor.py::test_records_equal_the_frozen_records compares today's records with the ones frozen for
this machine's float kernels (:mod:`kernel_env`: torch build, instruction set, CPU vendor, AMX) in
``tests/data/monitor_records_<kernel key>.json``, written by running

    PYTHONPATH=src python tests/monitor_scenario.py

The AMD EPYC file (the CI machine's) was written before the monitor was split by concern (and regenerated for
the intended changes its commits name); the Intel Xeon (AMX) file on 2026-12-07 from the monitor code that
passed against the EPYC file on the CI machine (unchanged since ``0c65757``). Regenerate only for an intended
change of the records, and say so in the commit message; a machine without a file skips.

The model exercises every path of the monitor: a wide ``nn.Linear`` (300 inputs > GRAM_MAX_COLS, 256 rows:
block-Krylov ||A||_op with ||A||_F from one norm), a skinny wide one (280 inputs, 16 rows: < 2**16 entries),
an ``nn.Conv2d`` (unfolded rows), a GPT-2 style ``Conv1D`` (its matrix is W^T; 96 inputs: A's Gram by the
Krylov start from the column mean; W's Gram 40 x 40: warm-started Krylov with ``warm_start``), a small
``nn.Linear`` (exact eigensolves) and a frozen layer (skipped). The Spec-Sign index runs on every second
record. One thread: the float32 products are then reduced in one fixed order.
"""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path

import torch
from torch import nn

from kernel_env import kernel_environment, kernel_key  # tests/ is on sys.path (pytest's rootdir, or the script's)

DATA_DIR = Path(__file__).parent / "data"
STEPS = 4

#: name -> LayerMonitor keyword arguments (besides every=1, spec_sign_every=2); "closure" steps with a closure
CONFIGS = {
    "fast": {},
    "fast_warm": {"warm_start": True},
    "exact": {"method": "exact"},
    "exact_warm": {"method": "exact", "warm_start": True},
    "estimate": {"method": "estimate"},
    "estimate_warm": {"method": "estimate", "warm_start": True},
    "fast_max_rows": {"max_rows": 100},
    "fast_no_spec_sign": {"microbatches": 0},
    "closure_warm": {"warm_start": True},
}


class Conv1D(nn.Module):
    """GPT-2's transformers.pytorch_utils.Conv1D: y = x W + b, W stored (in, out)."""

    def __init__(self, nf: int, nx: int) -> None:
        super().__init__()
        self.nf = nf
        self.weight = nn.Parameter(torch.randn(nx, nf) * 0.1)
        self.bias = nn.Parameter(torch.zeros(nf))

    def forward(self, x):
        return torch.addmm(self.bias, x, self.weight)


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.wide = nn.Linear(300, 48)
        self.conv = nn.Conv2d(1, 2, 3, padding=1)
        self.c1d = Conv1D(40, 96)
        self.out = nn.Linear(40, 4)
        self.skinny = nn.Linear(280, 4)
        self.frozen = nn.Linear(4, 4)
        self.frozen.requires_grad_(False)

    def forward(self, x):
        h = torch.tanh(self.wide(x + 0.5)).view(-1, 1, 6, 8)
        h = torch.relu(self.conv(h)).flatten(1)
        y = self.frozen(self.out(torch.tanh(self.c1d(h))))
        return y.square().mean() + self.skinny(x[:16, :280]).square().mean()


def records(config: str) -> dict:
    """Train ``Net`` for STEPS SGD steps under a LayerMonitor with ``CONFIGS[config]``: its records and the
    warm vectors of its final ``state_dict``."""
    from steepest.diagnostics import LayerMonitor, MemorySink

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(0)
        model = Net()
        opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.05, momentum=0.9)
        sink = MemorySink()
        gen = torch.Generator().manual_seed(1)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the frozen layer's skip warning
            mon = LayerMonitor(model, every=1, sinks=[sink], spec_sign_every=2, **CONFIGS[config]).attach(opt)
            for _ in range(STEPS):
                x = torch.randn(256, 300, generator=gen)
                if config.startswith("closure"):

                    def closure(x=x):
                        opt.zero_grad()
                        loss = model(x)
                        loss.backward()
                        return loss

                    opt.step(closure)
                else:
                    opt.zero_grad()
                    model(x).backward()
                    opt.step()
        state = mon.state_dict()
        mon.detach()
    finally:
        torch.set_num_threads(threads)
    return {
        "fields": list(LayerMonitor.FIELDS),
        "rows": [[r[k] for k in LayerMonitor.FIELDS] for r in sink.records],
        "step": state["step"],
        "warm": {k: fingerprint(v) for k, v in sorted(state["warm"].items())},
    }


def fingerprint(v: torch.Tensor) -> list:
    """A kept warm-start vector in three numbers: its length, sum and sum weighted by position (float64)."""
    x = v.detach().double().flatten()
    return [x.numel(), float(x.sum()), float((x * torch.arange(1, x.numel() + 1, dtype=torch.float64)).sum())]


def environment() -> dict:
    """What the float32 kernels depend on (:func:`kernel_env.kernel_environment`)."""
    return kernel_environment()


def data_file(env: dict | None = None) -> Path:
    """The frozen records' file for ``env`` (default: this machine)."""
    return DATA_DIR / f"monitor_records_{kernel_key(env)}.json"


def frozen_environments() -> list[dict]:
    """The environments that have frozen records."""
    return [json.loads(f.read_text())["environment"] for f in sorted(DATA_DIR.glob("monitor_records_*.json"))]


def main() -> None:
    out = {"environment": environment(), "configs": {c: records(c) for c in CONFIGS}}
    DATA = data_file(out["environment"])
    DATA.parent.mkdir(exist_ok=True)
    # one line per record (readable diffs); json writes floats by repr, which reads back exactly; NaN as NaN
    lines = ["{", f' "environment": {json.dumps(out["environment"])},', ' "configs": {']
    for i, (name, got) in enumerate(out["configs"].items()):
        lines.append(
            f'  {json.dumps(name)}: {{"fields": {json.dumps(got["fields"])}, "step": {got["step"]}, '
            f'"warm": {json.dumps(got["warm"])}, "rows": ['
        )
        lines += [f"   {json.dumps(r)}" + ("," if j + 1 < len(got["rows"]) else "") for j, r in enumerate(got["rows"])]
        lines.append("  ]}" + ("," if i + 1 < len(out["configs"]) else ""))
    lines += [" }", "}"]
    DATA.write_text("\n".join(lines) + "\n")
    assert json.loads(DATA.read_text()) == json.loads(json.dumps(out))  # the hand-made layout is valid JSON
    print(f"wrote {DATA} ({sum(len(v['rows']) for v in out['configs'].values())} records)", file=sys.stderr)


if __name__ == "__main__":
    main()
