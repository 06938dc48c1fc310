"""The seeds' checkable claims that no experiment checks yet, most important first, and why: the combined
report's table "Not checked, and why", so a reader sees what is missing instead of assuming coverage.

The counts are the independent audit's (issue 20: 77 checkable claims in the five seeds, 23 unchecked); an
entry leaves this list when an experiment checks it, and :data:`CHECKED_SINCE_AUDIT` names those. Every one
of the 23 is itemized: 8 were listed first (the issue names them), the other 15 come from a re-reading of
the five seeds against the experiments' claims (issue 20, item 5); one row is one claim. (Seed 002's
"the effective nuclear rank degrades slower than the effective l_1 geometry" is the mechanism of its
small-batch claim, which spec-sign judges, so it is not counted again.)

Example:
    >>> rows()[0][0]
    "seed 003, 'Faster feature learning', 1 (Weight Erasure)"
"""

from __future__ import annotations

#: Checkable claims the audit found in seeds 000-004, and how many of them it found unchecked.
AUDIT_CLAIMS = 77
AUDIT_UNCHECKED = 23

#: Claims the audit listed as unchecked that an experiment now checks (experiment name in brackets).
CHECKED_SINCE_AUDIT = (
    "seed 000, section 8: layerwise spectral descent with step ||G_i||_* / L_{*,i} against layerwise GD with "
    "1 / L_{F,i} [layerwise]",
    "seed 002, section 3.1, eqs. (3)-(4): c_1 ~ ||sigma||_1 and c_* ~ tr((E[EE^T])^(1/2)) [noise-scales]",
    "seed 002, Propositions 1-2, eqs. (5)-(6): the signal-alignment lower bounds [noise-scales]",
    "seed 003, 'On the relative size and stable rank of gradients': the raw gradients have very low stable rank "
    "[schatten]",
    "seed 004, stage 2: the alignment stage lasts T2 = O(1/eta) [phase-t2]",
    "seed 004, quick check: with the spike aligned with the signal the analysis favours GD [phase-aligned]",
    "seed 004, open question 2: the exponent in d of SpecGD's largest stable learning rate [phase-t2]",
    "seed 002, section 4: spectral methods often outperform sign methods in the early phase of training "
    "[oracle-strata]",
    "seed 001 (thesis): nr(G) >= st(A) predicts the one-step training-loss decrease, per phase and batch size "
    "[oracle-strata]",
)

HEADER = ("seed and section", "claim", "why not checked", "what would check it")

#: (seed and section, claim, why not checked, what would check it), most important first.
UNCHECKED: tuple[tuple[str, str, str, str], ...] = (
    (
        "seed 003, 'Faster feature learning', 1 (Weight Erasure)",
        "models trained with SGD, Adam or similar optimizers \u201ctend to get 'stuck' within a small region of the "
        "parameter space around the initialization\u201d; Muon-like optimizers \u201cquickly 'escape' the init region\u201d",
        "no experiment measures the distance travelled from initialization",
        "charlm at tuned lrs: ||W_T - W_0||_F / ||W_0||_F per hidden layer for Muon / SpecGD vs AdamW and SGD, over "
        "3 seeds, against the loss each reaches",
    ),
    (
        "seed 003, 'Faster feature learning', 2",
        "updates that are too small \u201cwould vanish at larger model widths\u201d; Muon's updates \u201cgrow with the "
        "model width\u201d",
        "widths are not swept in any training experiment",
        "Definition 6 relative size of each optimizer's update over widths 64-512 at tuned lrs (muP-style fit of "
        "the exponent in width)",
    ),
    (
        "seed 004, 'Failure signatures', 1",
        "GD's alignment drops during Stage I (spike dominance) before recovering (Figure 4 right)",
        "phase-retrieval records alignment trajectories but judges only T1 and final alignment",
        "min alignment during GD's stage I against its value at step 0 and at T1, per d and lambda",
    ),
    (
        "seed 004, 'Design tradeoffs' and 'Failure signatures', 2",
        "GD needs eta <= 1/(16(1+lambda)) for stability; its loss diverges for eta x lambda above a threshold "
        "(Figure 5), while SpecGD runs at eta = kappa/sqrt(d+lambda)",
        "phase-checks measures SpecGD's largest aligned kappa, not GD's divergence threshold over lambda",
        "GD's largest non-diverging eta over lambda = 1 ... 1e3, fitted against 1/(1+lambda) and rival laws",
    ),
    (
        "seed 002, section 4.1, regime 1",
        "the deterministic limit \u201crecovers the intuition from Davis & Drusvyatskiy (2025) regarding the condition "
        "nr(G) >= st(A)\u201d",
        "no experiment compares the index at B = inf with seed 001's condition on the same layers",
        "agreement of sign(I(G, inf) - 1) with sign(nr(G) - st(A)) on charlm / GPT-2 layers and random features",
    ),
    (
        "seed 002, section 4.1, regime 3",
        "for n >> m (embedding layers) \u201cthe noise c_* is also much lower\u201d",
        "spec-sign judges the signal side of the shape factor only",
        "c_* / c_1 of real embedding vs hidden-layer minibatch noise over aspect ratios n/m (noise-scales subjects)",
    ),
    (
        "seed 004, 'Design tradeoffs', initialization scale",
        "rho_0 = 1/log d is the feature-learning regime; larger rho_0 enters the kernel / lazy regime",
        "every phase-retrieval run uses the seed's rho_0",
        "relative movement ||M_T - M_0|| / ||M_0|| and final alignment over rho_0 across decades, per d",
    ),
    (
        "seed 004, 'Foundational learning', invariant manifold",
        "initialized on M = {a w* w*^T + b v v^T + c P_perp} (orthogonal start), the dynamics stay on it",
        "phase-checks measures the distance to M only for the Gaussian start (Next Check 1)",
        "phase_checks.off_manifold over the trajectory from the orthogonal start, GD and SpecGD, against float64 "
        "round-off",
    ),
    (
        "seed 001, abstract",
        "in spiked random feature models, after a short burn-in, the Euclidean gradient's nuclear rank grows "
        "(the sentence is cut off in the seed)",
        "the seed's text ends mid-sentence; init-rank measures initialization only",
        "a spiked random-feature regression trained by GD: nr(G) against st(A) per step after the burn-in",
    ),
    (
        "seed 002, section 5 (Limitations)",
        "evaluating the index (SVDs for c_*, Hessian projections for H_spec) \u201cmay be prohibitive for real-time "
        "adaptive switching\u201d",
        "no experiment times the index",
        "wall-clock of spec_sign_index with its inputs per layer against one optimizer step, over widths",
    ),
    (
        "seed 000, Corollary 5.2 and Proposition 3.2",
        "sum_t ||grad f(X_t)||_*^2 <= 2 L_*(f(X_0) - f_inf) for spectral descent, and the operator-norm descent "
        "lemma for any L_*-smooth f",
        "quadratic checks the one-step decrease on the quadratic only",
        "spectral descent runs on the quadratic and a non-quadratic smooth loss (e.g. logistic) with a bound on L_*: "
        "the running sum against the bound",
    ),
    (
        "seed 000, Remark 6.1",
        "one always has L_* >= L_F, so neither method uniformly dominates",
        "quadratic computes both constants but does not state the inequality as a claim",
        "L_* / L_F >= 1 on every quadratic and layer of quadratic / layerwise, with a case won by each method",
    ),
    (
        "seed 003, Proposition 2, Corollary 3, sanity checks, 'Max-of-Max Norm'",
        "the Schatten-p dualizer formula and dual norm S_q; p = 2, inf recover SGD and Muon; the Schatten-1 "
        "dualizer has the rank of sigma_max's multiplicity; the l_(1->inf) dualizer sign(G) is Adam without "
        "accumulation",
        "checked by the library's unit tests (tests/test_geometry.py), not by an experiment in the report",
        "a report section re-running those identities in float64 against closed forms, and Adam(beta1 = beta2 = 0) "
        "against sign descent",
    ),
    (
        "seed 000, Remark 8.1",
        "learning-rate schedules, per-layer tuning and stochastic gradients \u201ctransfer naturally\u201d to the "
        "layerwise spectral template",
        "vague (no quantity named); no experiment transfers a schedule",
        "a GD-tuned lr schedule reused by layerwise spectral descent, against its own tuned schedule",
    ),
)


def rows() -> list[list[str]]:
    return [list(r) for r in UNCHECKED]


def counts_text() -> str:
    """One sentence with the counts (the audit's totals, minus what was checked since)."""
    still = AUDIT_UNCHECKED - len(CHECKED_SINCE_AUDIT)
    listed = (
        f"all {still} are listed here, most important first"
        if still == len(UNCHECKED)
        else f"{len(UNCHECKED)} are listed here; the other {still - len(UNCHECKED)} are not itemized yet (a gap of "
        "this table, not a sign that they hold)"
    )
    return (
        f"The audit found {AUDIT_CLAIMS} checkable claims in the five seeds, {AUDIT_UNCHECKED} unchecked; since then "
        f"{len(CHECKED_SINCE_AUDIT)} are checked ({'; '.join(CHECKED_SINCE_AUDIT)}), so {still} remain: {listed}."
    )
