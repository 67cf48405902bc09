"""Retrieved passages into a generation's input: the one prompt format that serving, the benchmark
and the tuning data share, so what the model is trained on is what it is asked with.

The passages go into the system message, best first, and the question stays the user's own
message. Measured with the untuned SmolLM2-135M on the samples' 30 questions (benchmarks/retrieval.py's
prompts, top 3 hybrid passages): 11 answered this way, against 8 with the passages and an instruction
in the user message (best last, or 10 best first), 9 with one passage, 7 with five, and 4-5 with the
retrieved passages' best sentences only.
"""

from __future__ import annotations

from collections.abc import Sequence

INSTRUCTION = "Use these passages to answer."


def context(passages: Sequence[str]) -> str:
    """The passages as one block, best first (numbering them cost 2 of the 11 answers)."""
    return "\n\n".join(text.strip() for text in passages)


def grounded_messages(messages: Sequence[tuple[str, str]], passages: Sequence[str]) -> tuple[tuple[str, str], ...]:
    """The chat with the passages in its system message (after the caller's own system text, if any)."""
    if not passages:
        return tuple(messages)
    block = f"{INSTRUCTION}\n\n{context(passages)}"
    if messages and messages[0][0] == "system":
        return (("system", f"{messages[0][1]}\n\n{block}"), *messages[1:])
    return (("system", block), *messages)


def grounded_prompt(prompt: str, passages: Sequence[str]) -> str:
    """A plain prompt with the passages before it."""
    return f"{context(passages)}\n\n{prompt}" if passages else prompt


def search_text(messages: Sequence[tuple[str, str]] | None, prompt: str | None) -> str:
    """What a generation searches for: its last user message, or its prompt."""
    if messages:
        users = [content for role, content in messages if role == "user"]
        return users[-1] if users else ""
    return prompt or ""
