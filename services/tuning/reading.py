"""Reading examples: a document's facts asked with passages in the prompt, as the retrieval path asks
(services/retrieval/grounding.py), and answered with the passage's sentence that holds the fact.

The untuned 135M model reads poorly: given the top 3 passages it answered 11 of the samples' 30
questions, and given only the one sentence that holds the answer still 11 to 13 ("The Tramontana UL 1
is a type of Italian food" when told it weighs 1,050 grams). Trained on the company's own facts asked
this way, it should learn to find the sentence and say it, which is what the retrieval path needs
for the volatile documents it is never trained on. Measured (benchmarks/retrieval.py --tuned), it did
not at the demo's budget: 8 of 30 answered from the top 3 passages, against 10 tuned without these
examples and 11 untuned; its answers took the passages' words, often from the wrong sentence. So
they are off by default (AFINA_TUNING_READING_EXAMPLES), for a budget that can teach it.

Each example shows two windows of a document's passages (the passages the indexer makes,
``retrieval.passages``), cut to WINDOW_WORDS so that an example fits a training sequence: the one
around the answer and one from another passage of the same document, in an order picked by a hash,
so that the model learns to choose between passages, not to repeat the only one. A fact whose
answer is not wholly inside its window is not made into an example: the model must learn to say
only what the passages say.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from services.retrieval.grounding import grounded_messages
from services.tuning.knowledge import Example, pick, split_sentences

WINDOW_WORDS = 30  # two windows, the question and the answer fit a 256-token sequence (4 in 5 on the samples)


@dataclass(frozen=True)
class Reading:
    prompt: str
    passages: tuple[str, ...]
    answer: str

    def messages(self) -> list[dict[str, str]]:
        chat = grounded_messages([("user", self.prompt)], self.passages)
        return [{"role": role, "content": content} for role, content in chat] + [
            {"role": "assistant", "content": self.answer}]


def readings(questions: Sequence[Example], passages: Sequence[str]) -> list[Reading]:
    """One reading example per answer of a document's ``questions`` (its question asked in the
    example picked by a hash), over the document's ``passages``."""
    asked: dict[str, list[str]] = {}
    said: dict[str, str] = {}  # an answer that names a pronoun is found in its passage by the words said there
    for example in questions:
        asked.setdefault(example.answer, []).append(example.prompt)
        said[example.answer] = example.said
    flat = [_flat(text) for text in passages]
    found = []
    for answer, prompts in asked.items():
        holding = next((i for i, text in enumerate(flat) if _flat(said[answer]) in text), None)
        if holding is None:
            continue
        near = window(passages[holding], said[answer])
        if near is None:
            continue
        others = [i for i in range(len(passages)) if i != holding]
        pair = [near]
        if others:
            pair.append(window(passages[pick(others, f"{answer}|other")], None))
        if pick([False, True], f"{answer}|order"):
            pair.reverse()
        found.append(Reading(pick(prompts, f"{answer}|prompt"), tuple(pair), answer))
    return found


def window(passage: str, answer: str | None, words: int = WINDOW_WORDS) -> str | None:
    """The passage's heading line and its sentences around ``answer`` (or its first sentences), at
    most ``words`` words beside the answer's own; None where the answer is not inside the passage."""
    heading, _, body = passage.partition("\n") if "\n" in passage else ("", "", passage)
    sentences = split_sentences(body)
    if answer is None:
        first = last = 0
    else:
        start = _flat(body).find(_flat(answer))
        if start < 0:
            return None
        ends = [len(_flat(" ".join(sentences[: i + 1]))) for i in range(len(sentences))]
        first = next(i for i, end in enumerate(ends) if end > start)
        last = next(i for i, end in enumerate(ends) if end >= start + len(_flat(answer)))
    count = sum(len(s.split()) for s in sentences[first : last + 1])
    budget = words if answer is None else words + count
    while True:  # a sentence before, then one after, while they fit
        grown = False
        for side in (-1, 1):
            i = first - 1 if side < 0 else last + 1
            if 0 <= i < len(sentences) and count + len(sentences[i].split()) <= budget:
                count += len(sentences[i].split())
                first, last = (i, last) if side < 0 else (first, i)
                grown = True
        if not grown:
            break
    text = " ".join(sentences[first : last + 1])
    return f"{heading}\n{text}" if heading else text


def _flat(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()
