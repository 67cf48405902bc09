"""The gate: promote a candidate only when it beats the champion, and say why either way.

Its rules are the operator's ``GateSettings`` (``AFINA_GATE_*``).
"""

from __future__ import annotations

from pydantic import BaseModel

from services.registry import GateDecision
from services.settings import GateSettings


class Scores(BaseModel):
    eval_perplexity: float
    regression_perplexity: float
    qa_exact_match: float | None = None
    qa_knows: float | None = None


def decide(candidate: Scores, champion: Scores, rules: GateSettings) -> GateDecision:
    passed, failed = [], []
    gain = 1 - candidate.eval_perplexity / champion.eval_perplexity
    (passed if gain >= rules.min_relative_gain else failed).append(
        f"domain eval perplexity {champion.eval_perplexity:.3f} → {candidate.eval_perplexity:.3f} "
        f"({gain:+.1%}; needs at least {rules.min_relative_gain:+.1%})")
    regression = candidate.regression_perplexity / champion.regression_perplexity - 1
    (passed if regression <= rules.max_regression else failed).append(
        f"regression set perplexity {champion.regression_perplexity:.3f} → {candidate.regression_perplexity:.3f} "
        f"({regression:+.1%}; at most {rules.max_regression:+.1%})")
    if rules.max_eval_perplexity is not None:
        ok = candidate.eval_perplexity <= rules.max_eval_perplexity
        (passed if ok else failed).append(
            f"domain eval perplexity {candidate.eval_perplexity:.3f} (floor {rules.max_eval_perplexity:.3f})")
    if rules.max_qa_drop is not None and champion.qa_knows is not None:
        drop = champion.qa_knows - (candidate.qa_knows or 0.0)
        (passed if drop <= rules.max_qa_drop else failed).append(
            f"Q&A answers known {champion.qa_knows:.0%} → {candidate.qa_knows or 0.0:.0%} "
            f"(may drop {rules.max_qa_drop:.0%} at most)")
    if rules.min_qa_exact_match is not None:
        score = candidate.qa_exact_match or 0.0
        (passed if score >= rules.min_qa_exact_match else failed).append(
            f"Q&A exact match {score:.0%} (floor {rules.min_qa_exact_match:.0%})")
    return GateDecision(promote=not failed, reasons=[f"fails: {r}" for r in failed] + [f"passes: {r}" for r in passed])
