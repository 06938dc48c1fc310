"""Training-time overhead of LayerMonitor(every=10) on a small GPT-like char model (CPU).

Trains the same model for ``steps`` steps with and without the monitor (records to JSONL + CSV),
interleaving repeats to spread machine noise, and reports the median time per step. Goal: <= 5%.

Run: .venv/bin/python benchmarks/monitor_overhead.py   (writes benchmarks/results/monitor_overhead.json)
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

from steepest.diagnostics import LayerMonitor, default_sinks
from steepest.runs import atomic_write_json, environment

VOCAB, T, D, LAYERS, HEADS, BATCH = 81, 64, 128, 4, 4, 16


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(D), nn.LayerNorm(D)
        self.qkv, self.proj = nn.Linear(D, 3 * D), nn.Linear(D, D)
        self.fc, self.fc2 = nn.Linear(D, 4 * D), nn.Linear(4 * D, D)

    def forward(self, x):
        B, L, _ = x.shape
        q, k, v = self.qkv(self.ln1(x)).view(B, L, 3, HEADS, D // HEADS).permute(2, 0, 3, 1, 4)
        y = nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.proj(y.transpose(1, 2).reshape(B, L, D))
        return x + self.fc2(nn.functional.gelu(self.fc(self.ln2(x))))


class CharGPT(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb, self.pos = nn.Embedding(VOCAB, D), nn.Parameter(torch.zeros(T, D))
        self.blocks = nn.Sequential(*[Block() for _ in range(LAYERS)])
        self.ln, self.head = nn.LayerNorm(D), nn.Linear(D, VOCAB)

    def forward(self, idx):
        return self.head(self.ln(self.blocks(self.emb(idx) + self.pos[: idx.shape[1]])))


def run(steps, monitored, tmp):
    torch.manual_seed(0)
    model = CharGPT()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    mon = LayerMonitor(model, every=10, sinks=default_sinks(tmp)).attach(opt) if monitored else None
    gen = torch.Generator().manual_seed(1)
    data = torch.randint(0, VOCAB, (steps, BATCH, T + 1), generator=gen)
    t0 = time.perf_counter()
    for t in range(steps):
        logits = model(data[t, :, :-1])
        loss = nn.functional.cross_entropy(logits.reshape(-1, VOCAB), data[t, :, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    elapsed = time.perf_counter() - t0
    if mon is not None:
        mon.detach()
    return elapsed / steps


def main(steps: int = 30, repeats: int = 3) -> None:
    torch.set_num_threads(2)
    times = {"without": [], "with": []}
    with tempfile.TemporaryDirectory() as tmp:
        run(5, True, tmp)  # warm-up
        for r in range(repeats):
            for key in ("without", "with"):
                times[key].append(run(steps, key == "with", Path(tmp) / f"{r}"))
                print(f"repeat {r} {key:>7}: {times[key][-1]*1e3:.1f} ms/step", flush=True)
    med = {k: statistics.median(v) for k, v in times.items()}
    overhead = med["with"] / med["without"] - 1
    print(f"\n| monitor | ms/step (median of {repeats}) |\n|---|---|\n| without | {med['without']*1e3:.1f} |\n"
          f"| with (every=10) | {med['with']*1e3:.1f} |\noverhead: {overhead*100:+.1f}% (goal <= 5%)")
    out = Path(__file__).parent / "results" / "monitor_overhead.json"
    atomic_write_json(out, {"command": " ".join([Path(sys.executable).name, *sys.argv]), "environment": environment(),
                            "model": dict(vocab=VOCAB, T=T, d=D, layers=LAYERS, heads=HEADS, batch=BATCH),
                            "steps": steps, "repeats": repeats, "every": 10, "ms_per_step": {k: v * 1e3 for k, v in med.items()},
                            "all_ms_per_step": {k: [x * 1e3 for x in v] for k, v in times.items()},
                            "overhead": overhead, "meets_goal": overhead <= 0.05})
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
