"""A dataset part's rows cut into passages: short enough to embed whole (E5 reads 512 tokens) and
to put several into a small model's prompt, never across a section heading.

Text is packed sentence by sentence up to ``MAX_WORDS``; a short line without closing punctuation
is taken for a heading: it starts a new passage and is kept as the passage's section (and its
first line, so that both searches see it). A conversation is one passage per conversation
(its system message left out), packed the same way when it is long.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

MAX_WORDS = 150  # about 200 tokens: E5 reads 512; three of them fit a small model's prompt
_SENTENCE_END = re.compile(r"(?<=[.!?;:])\s+")
_CLOSING = tuple(".,;:!?)»\"'")
_UNDERLINE = re.compile(r"^([*=~^-])\1{2,}$")


@dataclass(frozen=True)
class Passage:
    chunk: int  # the part's chunk (row) it comes from
    number: int  # its place among the chunk's passages
    section: str
    text: str


def _heading(line: str) -> bool:
    words = line.split()
    return 0 < len(words) <= 8 and not line.rstrip().endswith(_CLOSING) and line[:1].isupper()


def _pack(sentences: list[str], max_words: int) -> list[str]:
    packed, current, count = [], [], 0
    for sentence in sentences:
        words = sentence.split()
        while len(words) > max_words:  # a run-on "sentence" (a table, a list): cut by words
            if current:
                packed.append(" ".join(current))
                current, count = [], 0
            packed.append(" ".join(words[:max_words]))
            words = words[max_words:]
        if count + len(words) > max_words and current:
            packed.append(" ".join(current))
            current, count = [], 0
        if words:
            current.append(" ".join(words))
            count += len(words)
    if current:
        packed.append(" ".join(current))
    return packed


def split_text(text: str, max_words: int = MAX_WORDS) -> list[tuple[str, str]]:
    """(section, text) passages of one chunk of text."""
    sections: list[tuple[str, list[str]]] = [("", [])]
    previous = ""  # the line before: a heading follows a blank line or a finished sentence, not a wrapped one
    for line in text.split("\n"):
        line = line.strip()
        if _UNDERLINE.match(line):  # reStructuredText-style underlines mark the heading above them
            continue
        if line and _heading(line) and (not previous or previous.endswith(_CLOSING) or previous == sections[-1][0]):
            sections.append((line, []))
        elif line:
            sections[-1][1].append(line)
        previous = line
    found = []
    for section, lines in sections:
        sentences = [s for s in _SENTENCE_END.split(" ".join(lines)) if s.strip()]
        for body in _pack(sentences, max_words - len(section.split())):
            found.append((section, f"{section}\n{body}" if section else body))
    return found


def from_rows(rows: list[dict], max_words: int = MAX_WORDS) -> list[Passage]:
    """Passages of a part's rows (``chunk_index``, ``kind``, ``text``, ``messages``)."""
    found = []
    for row in rows:
        if row["kind"] == "chat":
            # the system message instructs the model and repeats in every conversation: not knowledge
            lines = [f"{m['role']}: {m['content']}" for m in json.loads(row["messages"]) if m["role"] != "system"]
            pieces = [("", body) for body in _pack(lines, max_words)]
        else:
            pieces = split_text(row["text"], max_words)
        found += [Passage(row["chunk_index"], i, section, text) for i, (section, text) in enumerate(pieces)]
    return found
