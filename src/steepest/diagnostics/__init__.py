"""Per-layer diagnostics: which geometry helps each layer (seeds 000, 001, 002).

* :mod:`metrics`: stable rank st(A), nuclear rank nr(G), block norms (exact or estimated);
* :mod:`criteria`: the Davis-Drusvyatskiy test and the Spec-Sign Advantage Index, noise scales, curvature;
* :mod:`probe`: :class:`LayerMonitor`, hooks on Linear/Conv2d layers that record the above during training;
* :mod:`oracle`: the layer oracle, the measured one-step decrease of each geometry on each layer;
* :mod:`sinks`: JSONL, CSV, TensorBoard (optional) and in-memory record writers.

Example:
    >>> import json, tempfile, torch, steepest
    >>> model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2))
    >>> opt = torch.optim.SGD(model.parameters(), lr=0.1)
    >>> tmp = tempfile.TemporaryDirectory()          # your run's folder in real use
    >>> sinks = steepest.diagnostics.default_sinks(tmp.name)
    >>> mon = steepest.diagnostics.LayerMonitor(model, every=10, sinks=sinks).attach(opt)
    >>> for step in range(10):
    ...     opt.zero_grad()
    ...     model(torch.randn(32, 8)).pow(2).mean().backward()
    ...     opt.step()
    >>> mon.detach()                                 # removes the hooks and closes the sinks
    >>> with open(f"{tmp.name}/diagnostics.jsonl") as f:
    ...     records = [json.loads(line) for line in f]
    >>> sorted({r["layer"] for r in records})
    ['0', '2']
    >>> tmp.cleanup()
"""

from steepest.diagnostics.criteria import (
    davis_drusvyatskiy,
    kfac_curvature,
    layer_curvatures,
    noise_scales,
    score_geometries,
    spec_sign_index,
)
from steepest.diagnostics.metrics import block_norms, nuclear_norm, nuclear_rank, operator_norm, stable_rank
from steepest.diagnostics.oracle import LineSearch, layer_oracle, oracle_winners, step_decreases
from steepest.diagnostics.probe import ActivationCapture, LayerMonitor
from steepest.diagnostics.sinks import CSVSink, JSONLSink, MemorySink, TensorBoardSink, default_sinks

__all__ = [
    "stable_rank",
    "nuclear_rank",
    "operator_norm",
    "nuclear_norm",
    "block_norms",
    "davis_drusvyatskiy",
    "noise_scales",
    "spec_sign_index",
    "score_geometries",
    "layer_curvatures",
    "kfac_curvature",
    "LayerMonitor",
    "ActivationCapture",
    "MemorySink",
    "JSONLSink",
    "CSVSink",
    "TensorBoardSink",
    "default_sinks",
    "layer_oracle",
    "oracle_winners",
    "step_decreases",
    "LineSearch",
]
