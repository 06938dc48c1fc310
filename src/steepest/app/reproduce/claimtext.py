"""How a reproduction states a claim: the seed's own sentence (quoted, with its section) or an extension
of the project's own (labelled as such), with the baseline or rival law it is judged against and the
threshold fixed in the experiment's Config before the run.

Everything is folded into :class:`steepest.app.reproduce.base.Claim`'s fields so claims.json and the
report table keep their columns: ``seed`` reads ``"seed 002, section 4.1"`` for a seed claim and
``"extension (project's own; seed 002 context)"`` for an extension; ``note`` starts with
``"baseline: ...; threshold: ..."``.

Example:
    >>> c = seed_claim("seed 002", "4.1", "SpecGD is at an inherent disadvantage", "ratio 0.4",
    ...                True, baseline="ratio 1", threshold="ratio < 1")
    >>> kind(c), c.verdict
    ('seed', 'holds')
"""

from __future__ import annotations

from steepest.app.reproduce.base import Claim, verdict

EXTENSION = "extension"


def _note(baseline: str, threshold: str, why: str) -> str:
    parts = [f"baseline: {baseline}" if baseline else "", f"threshold (set in Config before the run): {threshold}", why]
    return "; ".join(p for p in parts if p)


def seed_claim(
    seed: str,
    section: str,
    quote: str,
    measured: str,
    condition: bool | None,
    *,
    baseline: str,
    threshold: str,
    why: str = "",
    paraphrase: bool = False,
) -> Claim:
    """A claim in the seed's words: ``quote`` is the seed sentence (``paraphrase=True`` marks a close
    paraphrase, shown without quotation marks), ``section`` where it stands in the seed."""
    text = quote if paraphrase else f"\u201c{quote}\u201d"
    return Claim(
        f"{seed}, {section}",
        text + (" (paraphrase)" if paraphrase else ""),
        measured,
        verdict(condition),
        _note(baseline, threshold, why),
    )


def extension_claim(
    seed: str, statement: str, measured: str, condition: bool | None, *, baseline: str, threshold: str, why: str = ""
) -> Claim:
    """A statement of the project's own (not in the seed), labelled as an extension of ``seed``'s setting."""
    return Claim(
        f"{EXTENSION} (project's own; {seed} context)",
        statement,
        measured,
        verdict(condition),
        _note(baseline, threshold, why),
    )


def kind(claim: Claim) -> str:
    """``"seed"`` or ``"extension"``, read back from the claim's ``seed`` field."""
    return EXTENSION if claim.seed.startswith(EXTENSION) else "seed"
