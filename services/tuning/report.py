"""What a tuning run shows in the Prefect UI: the eval table, the gate decision, the snapshot
summary and the loss curve. Pure functions from results to tables, Markdown and PNG bytes."""

from __future__ import annotations

import io

from services.registry import GateDecision
from services.tuning.evaluate import VersionScores


def metrics(scores: VersionScores) -> dict[str, float]:
    """A version's scores as flat numbers (the card's `metrics`, the eval table's rows)."""
    flat = {
        "eval_perplexity": scores.eval.perplexity,
        "eval_bits_per_byte": scores.eval.bits_per_byte,
        "regression_perplexity": scores.regression.perplexity,
        "regression_bits_per_byte": scores.regression.bits_per_byte,
    }
    if scores.qa is not None:
        flat |= {"qa_knows": scores.qa.knows, "qa_exact_match": scores.qa.exact_match, "qa_rouge_l": scores.qa.rouge_l}
        flat |= {f"qa_knows_{language}": share for language, share in scores.qa.knows_by_language.items()}
    return {name: round(value, 5) for name, value in flat.items()}


def eval_table(candidate: VersionScores, champion: VersionScores) -> list[dict]:
    ours, theirs = metrics(candidate), metrics(champion)
    return [
        {"metric": name, "champion": theirs[name], "candidate": ours[name],
         "change": f"{(ours[name] / theirs[name] - 1):+.1%}" if theirs[name] else "n/a"}
        for name in ours if name in theirs
    ]


def gate_markdown(decision: GateDecision, candidate_version: int, champion_version: int) -> str:
    verdict = (f"**Promoted**: v{candidate_version} replaces v{champion_version} as the champion."
               if decision.promote else
               f"**Rejected**: v{candidate_version} is kept in the registry, marked rejected; v{champion_version} stays the champion.")
    return "\n".join(["# Gate decision", "", verdict, "", *[f"- {reason}" for reason in decision.reasons]])


def snapshot_markdown(summary: dict, excluded: list[str]) -> str:
    lines = ["# Dataset snapshot", "", "| | |", "|---|---|"]
    lines += [f"| {name} | {summary[name]} |" for name in
              ("id", "created_at", "documents", "train_documents", "eval_documents", "train_tokens", "eval_tokens",
               "eval_percent")]
    lines += [f"| tokenizers | {', '.join(summary['tokenizers'])} |"]
    if excluded:
        lines += ["", f"{len(excluded)} part(s) left out, tokenized with another tokenizer than the base model's:", ""]
        lines += [f"- `{key}`" for key in excluded[:20]]
    return "\n".join(lines)


def loss_curve_png(losses: list[dict], title: str) -> bytes:
    import matplotlib

    matplotlib.use("Agg")  # no display: render to bytes
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6, 3.2), dpi=100)
    axes = figure.subplots()
    axes.plot([row["step"] for row in losses], [row["loss"] for row in losses], color="#1f6feb", label="train")
    validated = [row for row in losses if "val_loss" in row]
    if validated:
        axes.plot([row["step"] for row in validated], [row["val_loss"] for row in validated], color="#d1242f",
                  marker="o", markersize=3, label="validation (eval split)")
        best = min(validated, key=lambda row: row["val_loss"])
        axes.axvline(best["step"], color="#d1242f", alpha=0.3, linestyle="--")
        axes.legend()
    axes.set(xlabel="step", ylabel="loss", title=title)
    axes.grid(alpha=0.3)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()
