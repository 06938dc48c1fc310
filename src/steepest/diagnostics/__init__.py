"""Per-layer diagnostics: which geometry helps each layer (seeds 000, 001, 002).

* :mod:`metrics`: stable rank st(A), nuclear rank nr(G), block norms (exact or estimated);
* :mod:`criteria`: the Davis-Drusvyatskiy test and the Spec-Sign Advantage Index, noise scales, curvature;
* :mod:`probe`: :class:`LayerMonitor`, hooks on Linear/Conv2d layers that record the above during training;
* :mod:`oracle`: the layer oracle, the measured one-step decrease of each geometry on each layer;
* :mod:`sinks`: JSONL, CSV, TensorBoard (optional) and in-memory record writers.

Example:
    >>> import steepest
    >>> mon = steepest.diagnostics.LayerMonitor(model, every=10, sinks=steepest.diagnostics.default_sinks("run"))
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

__all__ = ["stable_rank", "nuclear_rank", "operator_norm", "nuclear_norm", "block_norms", "davis_drusvyatskiy",
           "noise_scales", "spec_sign_index", "score_geometries", "layer_curvatures", "kfac_curvature",
           "LayerMonitor", "ActivationCapture", "MemorySink", "JSONLSink", "CSVSink", "TensorBoardSink",
           "default_sinks", "layer_oracle", "oracle_winners", "step_decreases", "LineSearch"]
