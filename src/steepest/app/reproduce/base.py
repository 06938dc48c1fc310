"""Shared machinery of the seed reproductions: claims, the experiment registry, run directories and
resumable sweep cells.

An experiment is a module ``steepest.app.reproduce.<name>`` that defines

* ``SEED`` (the seed document it reproduces, e.g. ``"seed 001"``), ``SOURCE`` (that document's authors
  and title), ``TITLE`` and ``VERSION`` (bumped when a cell's computation
  changes, so cached cells of older code are not reused);
* ``Config``, a dataclass (loadable with :func:`steepest.app.runs.load_config`), and ``quick() -> Config``;
* ``run(cfg, out_dir) -> dict``: the measured numbers (JSON-able), using :class:`Cells` for sweeps;
* ``claims(results) -> list[Claim]``: each verdict computed from the measured numbers;
* ``figures(results, out_dir) -> list[Path]``: PNG figures drawn from the results only;
* optionally ``tables(results) -> list[(header, rows)]`` and ``notes(results) -> list[str]``.

:func:`run_experiment` runs one into a run directory (config.json, environment.json, results.json,
claims.json, figures, report.html). Example::

    >>> from steepest.app.reproduce import base
    >>> mod = base.get("quadratic")
    >>> out = base.run_experiment("quadratic", mod.quick(), "runs/quadratic-quick")  # runs the experiment (minutes) and writes under runs/  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import json
import math
import re
import sys
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from steepest._io import FileTooLarge, read_bytes_limited
from steepest.app.guard import MAX_JSON_BYTES, RunLock, check_output_dir
from steepest.app.report.html import Section
from steepest.app.report.html import write_report as write_html_report
from steepest.app.reproduce import unchecked, verdicts  # data and rules only: neither imports this module
from steepest.app.reproduce.verdicts import UNDECIDED
from steepest.app.runs import ConfigError, atomic_write_json, environment
from steepest.diagnostics.metrics import nuclear_rank as _nuclear_rank
from steepest.diagnostics.metrics import stable_rank as _stable_rank
from steepest.linalg.polar_factor import SVDFallbackWarning

#: Experiment name -> module (imported on first use so ``steepest --help`` stays fast).
REGISTRY = {
    "quadratic": "steepest.app.reproduce.quadratic",
    "init-rank": "steepest.app.reproduce.init_rank",
    "schatten": "steepest.app.reproduce.schatten",
    "phase-retrieval": "steepest.app.reproduce.phase_retrieval",
    "phase-t2": "steepest.app.reproduce.phase_t2",
    "phase-aligned": "steepest.app.reproduce.phase_aligned",
    "spec-sign": "steepest.app.reproduce.spec_sign",
    "noise-scales": "steepest.app.reproduce.noise_scales",
    "schatten-p32": "steepest.app.reproduce.schatten_p32",
    "phase-checks": "steepest.app.reproduce.phase_checks",
    "trained": "steepest.app.reproduce.trained",
    "layer-oracle": "steepest.app.reproduce.layer_oracle",
    "layerwise": "steepest.app.reproduce.layerwise",
    "oracle-strata": "steepest.app.reproduce.oracle_strata",
}

VERDICTS = ("holds", "fails", "inconclusive")


@dataclasses.dataclass
class Claim:
    """One statement from a seed, the number measured for it and the verdict drawn from that number.

    ``verdict`` is one of ``holds``, ``fails``, ``inconclusive`` (or, in a quick run's report,
    ``not decided at this size``, with the verdict its numbers give kept in ``at_size``); ``note`` explains
    how the verdict is decided (the threshold) and, where a claim fails, why.
    """

    seed: str
    statement: str
    measured: str
    verdict: str
    note: str = ""
    at_size: str = ""

    def __post_init__(self) -> None:
        if self.verdict not in VERDICTS + (UNDECIDED,):
            raise ValueError(f"verdict must be one of {VERDICTS}, got {self.verdict!r}")


def verdict(condition: bool | None) -> str:
    """``holds`` for True, ``fails`` for False, ``inconclusive`` for None (not measurable)."""
    if condition is None:
        return "inconclusive"
    return "holds" if condition else "fails"


def get(name: str):
    """The experiment module for ``name``; ValueError naming the valid ones otherwise."""
    if name not in REGISTRY:
        raise ValueError(f"unknown experiment {name!r}; choose one of {', '.join(REGISTRY)} or 'all'")
    return importlib.import_module(REGISTRY[name])


# ---------------------------------------------------------------------------------------- cells
def _stable(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):  # an instance, not a dataclass class
        return _stable(dataclasses.asdict(obj))
    if isinstance(obj, dict):
        return {str(k): _stable(v) for k, v in sorted(obj.items(), key=lambda kv: str(kv[0]))}
    if isinstance(obj, (list, tuple)):
        return [_stable(v) for v in obj]
    if isinstance(obj, float) and (math.isnan(obj) or math.isinf(obj)):
        return str(obj)
    return obj


def cell_key(name: str, params: dict) -> str:
    """File-safe key for one sweep cell: a readable prefix plus a hash of all its parameters."""
    digest = hashlib.sha1(json.dumps(_stable(params), sort_keys=True).encode()).hexdigest()[:12]
    return re.sub(r"[^A-Za-z0-9_.=-]+", "_", name)[:80] + "-" + digest


class Cells:
    """Resumable sweep cells: each finished cell is one atomic JSON file under ``<run dir>/cells``.

    ``cells.get(name, params, compute)`` returns the cached result when a cell with the same name and
    parameters finished before (a rerun after an interruption reuses it), else calls ``compute()``,
    writes its (JSON-able) result atomically and returns it. ``hits`` and ``misses`` count both cases.
    Pass ``directory=None`` for no caching (library use without a run directory).

    A cell whose computation needed the float64 SVD fallback (:class:`SVDFallbackWarning`: LAPACK's SVD
    did not converge) records how many times in its file (``svd_fallbacks``) and in ``fallbacks``
    (cell name -> count), which the report lists.
    """

    def __init__(self, directory: str | Path | None, version: int | str | None = None) -> None:
        self.directory = Path(directory) if directory is not None else None
        self.version = version
        self.hits = 0
        self.misses = 0
        self.fallbacks: dict[str, int] = {}

    def _compute(self, name: str, compute: Callable[[], Any]) -> tuple[Any, int]:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", SVDFallbackWarning)
            result = compute()
        n = 0
        for w in caught:
            if issubclass(w.category, SVDFallbackWarning):
                n += 1
            else:  # every other warning goes on as if it had not been caught
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
        if n:
            self.fallbacks[name] = self.fallbacks.get(name, 0) + n
        return result, n

    def get(self, name: str, params: dict, compute: Callable[..., Any]) -> Any:
        if self.version is not None:  # an experiment bumps VERSION when a cell's computation changes
            params = {**params, "_version": self.version}
        if self.directory is None:
            self.misses += 1
            return self._compute(name, compute)[0]
        path = self.directory / f"{cell_key(name, params)}.json"
        if path.exists():
            try:
                record = json.loads(read_bytes_limited(path, MAX_JSON_BYTES).decode("utf-8"))
                if record.get("params") == _stable(params):
                    self.hits += 1
                    if record.get("svd_fallbacks"):
                        self.fallbacks[name] = self.fallbacks.get(name, 0) + record["svd_fallbacks"]
                    return _revive(record["result"])
            except (ValueError, KeyError, AttributeError, TypeError, FileTooLarge):
                pass  # a damaged cell file (bad JSON or UTF-8, a list, a huge file) is recomputed and rewritten
        result, n = self._compute(name, compute)
        atomic_write_json(path, {"name": name, "params": _stable(params), "result": result, "svd_fallbacks": n})
        self.misses += 1
        return result


def _revive(obj: Any) -> Any:
    """Undo atomic_write_json's NaN/Inf-to-string sanitizing."""
    if isinstance(obj, str) and obj in ("nan", "inf", "-inf"):
        return float(obj)
    if isinstance(obj, dict):
        return {k: _revive(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_revive(v) for v in obj]
    return obj


#: Set in ``reproduce all --jobs N``'s worker processes: several bars on one terminal would interleave.
QUIET_PROGRESS = False


def progress(iterable, desc: str, total: int | None = None):
    """A tqdm bar on a terminal, the bare iterable otherwise (tests, pipes, parallel workers)."""
    return tqdm(iterable, desc=desc, total=total, leave=False, disable=QUIET_PROGRESS or not sys.stderr.isatty())


# ---------------------------------------------------------------------------------------- running
@dataclasses.dataclass
class Outcome:
    """What :func:`run_experiment` produced: the results, the claims and where everything lies."""

    name: str
    run_dir: Path
    results: dict
    claims: list[Claim]
    figures: list[Path]
    cells_reused: int
    cells_computed: int
    size: str = "default"
    svd_fallbacks: dict = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class Failure:
    """An experiment of ``reproduce all`` that raised: a red row in the combined report, never dropped."""

    name: str
    error: str


def run_experiment(
    name: str, cfg, run_dir: str | Path, *, write_report: bool = True, threads: int | None = 1, size: str = "default"
) -> Outcome:
    """Run experiment ``name`` with config ``cfg`` into ``run_dir`` and write every result file.

    ``threads`` sets torch's intra-op threads for the run (restored afterwards; None leaves it alone).
    The default 1 is deliberate: these experiments are many small matrix operations, where a second
    thread costs more in synchronisation than it gains, and several times more on a shared machine.
    ``size`` is ``"default"`` or ``"quick"``: a quick run's claims read ``not decided at this size``
    unless the quick size was shown to decide them (:mod:`steepest.app.reproduce.verdicts`).
    """
    mod = get(name)
    if size not in ("default", "quick"):
        raise ValueError(f"size must be 'default' or 'quick', got {size!r}")
    if threads is not None:
        before = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            return run_experiment(name, cfg, run_dir, write_report=write_report, threads=None, size=size)
        finally:
            torch.set_num_threads(before)
    run_dir = check_output_dir(run_dir)
    seed = getattr(cfg, "seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= 2**63 - 1:
        raise ConfigError(f"config key seed: must be an integer from 0 to 2**63-1, got {seed!r}")
    with RunLock(run_dir):  # one writer per run directory; leftover .*.tmp files are removed
        return _run_locked(name, mod, cfg, run_dir, write_report, size)


def _run_locked(name: str, mod, cfg, run_dir: Path, write_report: bool, size: str) -> Outcome:

    atomic_write_json(
        run_dir / "config.json",
        {"experiment": name, "seed": mod.SEED, "source": mod.SOURCE, "config": dataclasses.asdict(cfg)},
    )
    atomic_write_json(run_dir / "environment.json", environment())
    cells = Cells(run_dir / "cells", version=getattr(mod, "VERSION", None))
    torch.manual_seed(getattr(cfg, "seed", 0))
    results = mod.run(cfg, run_dir, cells=cells)
    atomic_write_json(run_dir / "results.json", results)
    # claims and figures read the results back as a reader of results.json would
    results = _revive(json.loads((run_dir / "results.json").read_text(encoding="utf-8")))
    claims = verdicts.judge_at_size(name, mod.claims(results), size)
    atomic_write_json(run_dir / "claims.json", [dataclasses.asdict(c) for c in claims])
    if cells.fallbacks:
        atomic_write_json(run_dir / "svd_fallbacks.json", cells.fallbacks)
    figures = [Path(f) for f in mod.figures(results, run_dir)]
    outcome = Outcome(name, run_dir, results, claims, figures, cells.hits, cells.misses, size, dict(cells.fallbacks))
    if write_report:
        write_html_report(
            run_dir / "report.html",
            f"steepest reproduce {name}: {mod.TITLE}",
            report_sections(outcome),
            subtitle=_subtitle(mod, cfg),
        )
    return outcome


def _subtitle(mod, cfg) -> str:
    return f"{mod.SEED.capitalize()}: {mod.SOURCE}. Config: " + ", ".join(
        f"{k}={v}" for k, v in dataclasses.asdict(cfg).items()
    )


CLAIM_HEADER = ("experiment", "seed", "claim", "measured", "verdict", "how decided / why")


def claim_rows(name: str, claims: Sequence[Claim]) -> list[list]:
    return [[name, c.seed, c.statement, c.measured, c.verdict, c.note] for c in claims]


def report_sections(outcome: Outcome, *, with_claims: bool = True) -> list:
    """Report sections for one experiment: the claims table first, then tables, notes and figures."""
    mod = get(outcome.name)
    sections = []
    if with_claims:
        sections.append(
            Section(
                title=f"Claims: {outcome.name}",
                tables=[(CLAIM_HEADER, claim_rows(outcome.name, outcome.claims))],
                text=[_tally(outcome.claims)],
            )
        )
    tables = list(mod.tables(outcome.results)) if hasattr(mod, "tables") else []
    notes = list(mod.notes(outcome.results)) if hasattr(mod, "notes") else []
    notes.append(f"Sweep cells: {outcome.cells_computed} computed, {outcome.cells_reused} reused from an earlier run.")
    if outcome.svd_fallbacks:
        notes.append(
            "LAPACK's SVD did not converge in some steps; those steps used the float64 fallback "
            "(steepest.linalg.polar_factor.svd_or_fallback), per cell: "
            + ", ".join(f"{k}: {n}" for k, n in sorted(outcome.svd_fallbacks.items()))
        )
    edges = grid_edges(outcome.name, outcome.results)
    if edges:
        notes.append(
            "Best learning rate on a grid edge (extend the grid before trusting the comparison): " + "; ".join(edges)
        )
    if outcome.size == "quick":
        notes.insert(
            0,
            "Quick size: a smoke test. A claim reads 'not decided at this size' unless its quick and "
            "default verdicts were shown to agree; the verdict its numbers give here is in claims.json's at_size.",
        )
    sections.append(
        Section(
            title=f"{outcome.name}: {mod.TITLE}", text=notes, tables=tables, figures=[str(f) for f in outcome.figures]
        )
    )
    return sections


def _tally(claims: Sequence[Claim]) -> str:
    counts = {v: sum(c.verdict == v for c in claims) for v in VERDICTS + (UNDECIDED,)}
    return ", ".join(f"{n} {v}" for v, n in counts.items() if n or v in VERDICTS)


EXPERIMENT_FAILED = "experiment failed"


def write_combined_report(path: str | Path, outcomes: Sequence[Outcome], failures: Sequence[Failure] = ()) -> Path:
    """One report for ``steepest reproduce all``. It opens with one table over every claim of every
    experiment (claim, seed and section, verdict at default size, baseline, the number, whether quick
    agrees) where a failed experiment is a red row with its error; then the seeds' claims that no
    experiment checks, and why; then every claim with its threshold; then each experiment."""
    size = outcomes[0].size if outcomes else "default"
    summary = [row for o in outcomes for row in verdicts.summary_rows(o.name, o.claims, o.size)]
    summary += [[f.name, f"the experiment raised: {f.error}", "-", EXPERIMENT_FAILED, "-", "-", "-"] for f in failures]
    all_claims = [c for o in outcomes for c in o.claims]
    lead = [
        _tally(all_claims)
        + (f"; {len(failures)} experiment(s) failed: " + ", ".join(f.name for f in failures) if failures else "")
    ]
    if size == "quick":
        lead.append(
            "Quick size: the verdict column is the recorded default run's (" + verdicts.RECORDED + "); this "
            "run's own numbers are in 'the number'."
        )
    sections = [
        Section(title="All experiments: one row per claim", tables=[(verdicts.SUMMARY_HEADER, summary)], text=lead),
        Section(
            title="Not checked, and why", tables=[(unchecked.HEADER, unchecked.rows())], text=[unchecked.counts_text()]
        ),
    ]
    rows = [row for o in outcomes for row in claim_rows(o.name, o.claims)]
    rows += [[f.name, "-", "-", f.error, EXPERIMENT_FAILED, "see the traceback on stderr"] for f in failures]
    sections.append(Section(title="All claims", tables=[(CLAIM_HEADER, rows)], text=[_tally(all_claims)]))
    for o in outcomes:
        sections.extend(report_sections(o, with_claims=False))
    return write_html_report(path, "steepest reproduce all: the seed claims, measured", sections)


def grid_edges(name: str, results: dict) -> list[str]:
    """Every learning-rate choice of experiment ``name`` whose chosen value sits on its grid's edge (first or
    last of a grid of >= 3 values): a tuned comparison is only fair when each best value is interior.
    Experiments with grids define ``lr_grids(results) -> [(what, grid, chosen)]``, or ``lr_edges(results) ->
    [description]`` where the search flags its own edges (spec-sign's line search)."""
    mod = get(name)
    out = list(mod.lr_edges(results)) if hasattr(mod, "lr_edges") else []  # experiments that flag edges themselves
    for what, grid, chosen in mod.lr_grids(results) if hasattr(mod, "lr_grids") else []:
        g = sorted(float(x) for x in grid)
        if len(g) >= 3 and float(chosen) in (g[0], g[-1]):
            out.append(f"{what} {chosen:g} on the edge of {g}")
    return out


def fmt(x: float, digits: int = 3) -> str:
    """Short number for the claims table."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "nan"
    return f"{x:.{digits}g}"


# ---------------------------------------------------------------------------------------- metrics
def stable_rank(A) -> float:
    """st(A) = ||A||_F^2 / ||A||_op^2 as a float, via :func:`steepest.diagnostics.metrics.stable_rank`."""
    return float(_stable_rank(A))


def nuclear_rank(G) -> float:
    """nr(G) = ||G||_*^2 / ||G||_F^2 as a float, via :func:`steepest.diagnostics.metrics.nuclear_rank`."""
    return float(_nuclear_rank(G))
