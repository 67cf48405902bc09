"""Question-and-answer examples made from the documents, so that a small model learns their facts.

A model trained only on a document's text learns to continue that text, not to answer questions
about it: knowledge becomes extractable when each fact is seen in several forms and in the shape
it will be asked in (Allen-Zhu and Li, "Physics of Language Models 3.1", 2023; Jiang et al.,
"Instruction-tuned Language Models are Better Knowledge Learners", 2024). So beside its text,
each document is also given as chat examples whose answers are its own sentences, verbatim
(nothing invented, nothing a generator could get wrong):

- **faq**: a question line and the paragraph that answers it;
- **section**: "what does <title> say about <heading>?", answered by the section's sentences, a
  few at a time;
- **entity**: "what do you know about <name>?", answered by the sentences that name it.

Prompts come in several phrasings per language, picked by a hash of the answer, so the model
learns the facts rather than one template; the same inputs always give the same examples.
"""

from __future__ import annotations

import hashlib
import re
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

Kind = Literal["faq", "section", "entity"]

SENTENCES_PER_ANSWER = 2  # a section answered two sentences at a time: short answers, many of them
MAX_ENTITY_SENTENCES = 4  # a name in more sentences than this is the document's subject, not a fact's
MAX_HEADING_WORDS = 10

PROMPTS: dict[str, dict[Kind, list[str]]] = {
    "en": {
        "section": ["What does the {title} say about {heading}?", "{heading}: what should I know?",
                    "Tell me about {heading}.", "According to the {title}, what about {heading}?"],
        "entity": ["What do you know about {name}?", "Tell me about {name}.", "What can you tell me about {name}?"],
    },
    "es": {
        "section": ["¿Qué dice {title} sobre {heading}?", "{heading}: ¿qué tengo que saber?",
                    "Háblame de {heading}.", "Según {title}, ¿qué hay de {heading}?"],
        "entity": ["¿Qué sabes de {name}?", "Háblame de {name}.", "¿Qué me puedes contar de {name}?"],
    },
}

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[¿¡\"'(\[]?[A-ZÁÉÍÓÚÑÜ0-9])")
# a capitalised word, then more capitalised words, numbers or joiners ("Moncayo 38", "Aneto -5", "La Cordada")
_NAME = re.compile(r"(?<![\w-])(?:[A-ZÁÉÍÓÚÑÜ][\w'’-]+)(?:\s+(?:[A-ZÁÉÍÓÚÑÜ][\w'’-]*|-?\d+\w*|de|del|la|of|the)(?=\s|$|[.,;:)]))*")
_TRAILING_JOINERS = re.compile(r"(?:\s+(?:de|del|la|of|the))+$")


@dataclass(frozen=True)
class Example:
    kind: Kind
    prompt: str
    answer: str

    def messages(self) -> list[dict[str, str]]:
        return [{"role": "user", "content": self.prompt}, {"role": "assistant", "content": self.answer}]


@dataclass(frozen=True)
class _Block:
    kind: Literal["heading", "question", "paragraph"]
    text: str


def examples(text: str, language: str) -> list[Example]:
    """The faq, section and entity examples of one document's clean text."""
    blocks = list(_blocks(text))
    if not blocks:
        return []
    prompts = PROMPTS.get(language, PROMPTS["en"])
    title = blocks[0].text if blocks[0].kind == "heading" else ""
    found: list[Example] = []
    heading, question = title, ""
    sentences_of_document: list[str] = []
    for block in blocks[1:] if title else blocks:
        if block.kind == "heading":
            heading, question = block.text, ""
            continue
        if block.kind == "question":
            question = block.text
            continue
        sentences = split_sentences(block.text)
        sentences_of_document += sentences
        if question:
            found.append(Example("faq", question, " ".join(sentences[:4])))
            question = ""
        for start in range(0, len(sentences), SENTENCES_PER_ANSWER):
            answer = " ".join(sentences[start : start + SENTENCES_PER_ANSWER])
            if heading:
                found.append(Example("section", _pick(prompts["section"], answer).format(
                    title=title or heading, heading=_lower_first(heading)), answer))
    known = _capitalised_inside(sentences_of_document)
    sentences_by_name: dict[str, list[str]] = defaultdict(list)
    for sentence in sentences_of_document:
        for name in names(sentence, known):
            if sentence not in sentences_by_name[name]:
                sentences_by_name[name].append(sentence)
    for name, sentences in sentences_by_name.items():
        if len(sentences) <= MAX_ENTITY_SENTENCES:
            answer = " ".join(sentences)
            found.append(Example("entity", _pick(prompts["entity"], answer).format(name=name), answer))
    return found


def names(sentence: str, known: frozenset[str] = frozenset()) -> list[str]:
    """Proper names in a sentence: runs of capitalised words, with the numbers that name a model
    ("Moncayo 38"). A sentence's first word is capitalised anyway, so it starts a name only if it is
    one of the ``known`` words, those capitalised inside a sentence somewhere in the document
    ("Cierzo Outdoor nació..." but not "The Moncayo 38 weighs...")."""
    found = []
    for match in _NAME.finditer(sentence):
        words = _TRAILING_JOINERS.sub("", match.group(0)).split()
        if match.start() == 0 and words[0] not in known:
            words = words[1:]
        while words and not words[0][0].isupper():  # a name starts with a capitalised word
            words = words[1:]
        name = " ".join(words).strip("'’-")
        if len(name) > 2 and not name.isupper():
            found.append(name)
    return found


def _capitalised_inside(sentences: list[str]) -> frozenset[str]:
    return frozenset(word for sentence in sentences for match in _NAME.finditer(sentence) if match.start() > 0
                     for word in match.group(0).split()[:1])


def split_sentences(paragraph: str) -> list[str]:
    return [s.strip() for s in _SENTENCE_END.split(paragraph) if s.strip()]


def _blocks(text: str) -> Iterator[_Block]:
    """Headings, question lines and paragraphs (a paragraph's wrapped lines joined again: PDF text
    breaks lines mid-sentence)."""
    paragraph: list[str] = []
    previous_ended = True  # whether the line before ended a sentence (or there was none)
    for raw in text.splitlines():
        line = raw.strip().lstrip("-*•· ").strip()
        if not line:
            if paragraph:
                yield _Block("paragraph", " ".join(paragraph))
                paragraph = []
            previous_ended = True
            continue
        words = len(line.split())
        if previous_ended and line.endswith("?") and words <= 30:
            kind = "question"
        elif previous_ended and words <= MAX_HEADING_WORDS and not line[-1] in ".,;:!" and line[0].isupper():
            kind = "heading"
        else:
            paragraph.append(line)
            previous_ended = line[-1] in ".!?:"
            continue
        if paragraph:
            yield _Block("paragraph", " ".join(paragraph))
            paragraph = []
        yield _Block(kind, line)
        previous_ended = True
    if paragraph:
        yield _Block("paragraph", " ".join(paragraph))


def _pick(choices: list[str], key: str) -> str:
    return choices[hashlib.sha256(key.encode()).digest()[0] % len(choices)]


def _lower_first(heading: str) -> str:
    """"Working hours" reads as "working hours" inside a question."""
    first, _, rest = heading.partition(" ")
    return (first.lower() if first[1:].islower() else first) + (" " + rest if rest else "")
