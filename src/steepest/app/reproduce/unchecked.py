"""The seeds' checkable claims that no experiment checks yet, most important first, and why: the combined
report's table "Not checked, and why", so a reader sees what is missing instead of assuming coverage.

The counts are the independent audit's (issue 20: 77 checkable claims in the five seeds); an entry leaves
this list when an experiment checks it, and :data:`CHECKED_SINCE_AUDIT` names those.

Example:
    >>> rows()[0][0]
    'seed 002, section 3.1, eq. (3)-(4)'
"""

from __future__ import annotations

#: Checkable claims the audit found in seeds 000-004, and how many of them it found unchecked.
AUDIT_CLAIMS = 77
AUDIT_UNCHECKED = 23

#: Claims the audit listed as unchecked that an experiment now checks (experiment name in brackets).
CHECKED_SINCE_AUDIT = (
    "seed 000, section 8: layerwise spectral descent with step ||G_i||_* / L_{*,i} against layerwise GD with "
    "1 / L_{F,i} [layerwise]",
    "seed 002, section 4: spectral methods often outperform sign methods in the early phase of training "
    "[oracle-strata]",
    "seed 001 (thesis): nr(G) >= st(A) predicts the one-step training-loss decrease, per phase and batch size "
    "[oracle-strata]",
)

HEADER = ("seed and section", "claim", "why not checked", "what would check it")

#: (seed and section, claim, why not checked, what would check it), most important first.
UNCHECKED: tuple[tuple[str, str, str, str], ...] = (
    (
        "seed 002, section 3.1, eq. (3)-(4)",
        "c_1 ~ ||sigma||_1 and c_* ~ tr((E[EE^T])^(1/2)) approximate the expected dual norms of the noise",
        "no experiment compares the approximations with sampled sqrt(B) E||G_hat - G|| yet",
        "sampled noise on real-network gradients vs both closed forms, over B",
    ),
    (
        "seed 002, Propositions 1-2, eq. (5)-(6)",
        "E<G, sign(G_hat)> >= ||G||_1 - 2 c_1 / sqrt(B) and E<G, polar(G_hat)> >= ||G||_nuc - 2 c_* / sqrt(B)",
        "the bounds are not evaluated against Monte-Carlo expectations",
        "Monte-Carlo E<G, D(G_hat)> vs the bound over B, Gaussian and real-network noise",
    ),
    (
        "seed 004, stage 2",
        "the second (alignment) stage lasts T2 = O(1/eta)",
        "phase-retrieval measures T1 only",
        "T2 over a grid of eta at fixed d, fitted against 1/eta and rivals",
    ),
    (
        "seed 004, open question 2",
        "how SpecGD's largest stable learning rate scales in d (exponent of d)",
        "phase-checks reports the largest aligned kappa per d, not an exponent with an interval",
        "kappa_max(d) over d = 25 ... 1e4 with a fitted exponent",
    ),
    (
        "seed 004, 'quick check' on the spiked covariance",
        "with the spike aligned with the signal the analysis favours GD",
        "not run",
        "phase-retrieval with v = w*: steps to alignment 0.9 of both methods",
    ),
)


def rows() -> list[list[str]]:
    return [list(r) for r in UNCHECKED]


def counts_text() -> str:
    """One sentence with the counts (the audit's totals, minus what was checked since)."""
    still = AUDIT_UNCHECKED - len(CHECKED_SINCE_AUDIT)
    return (
        f"The audit found {AUDIT_CLAIMS} checkable claims in the five seeds, {AUDIT_UNCHECKED} unchecked; since then "
        f"{len(CHECKED_SINCE_AUDIT)} is checked ({'; '.join(CHECKED_SINCE_AUDIT)}), so {still} remain. The "
        f"{len(UNCHECKED)} most important are listed here; the other {still - len(UNCHECKED)} of the audit's list are not "
        "itemized yet (a gap of this table, not a sign that they hold)."
    )
