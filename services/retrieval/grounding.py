"""Retrieved passages into a generation's input: the one prompt format that serving, the benchmark
and the tuning data share, so what the model is trained on is what it is asked with.

The passages go into the last user message, the best one nearest the question (a small model
attends most to what is close), each numbered with its source, and the model is asked to answer
from them in a few words.
"""

from __future__ import annotations

from collections.abc import Sequence

INSTRUCTION = "Answer the question with the facts in these passages, in a few words, in the question's language."


def context(passages: Sequence[str]) -> str:
    """The passages as one block, best last: [n] text."""
    numbered = [f"[{i}] {text.strip()}" for i, text in enumerate(passages, 1)]
    return "\n\n".join(reversed(numbered))


def question_with_passages(question: str, passages: Sequence[str]) -> str:
    if not passages:
        return question
    return f"{INSTRUCTION}\n\n{context(passages)}\n\nQuestion: {question}"


def grounded_messages(messages: Sequence[tuple[str, str]], passages: Sequence[str]) -> tuple[tuple[str, str], ...]:
    """The chat with the passages in its last user message."""
    last = max(i for i, (role, _) in enumerate(messages) if role == "user")
    grounded = list(messages)
    grounded[last] = ("user", question_with_passages(messages[last][1], passages))
    return tuple(grounded)


def grounded_prompt(prompt: str, passages: Sequence[str]) -> str:
    """A plain prompt with the passages before it."""
    return f"{context(passages)}\n\n{prompt}" if passages else prompt


def search_text(messages: Sequence[tuple[str, str]] | None, prompt: str | None) -> str:
    """What a generation searches for: its last user message, or its prompt."""
    if messages:
        users = [content for role, content in messages if role == "user"]
        return users[-1] if users else ""
    return prompt or ""
