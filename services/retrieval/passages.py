"""A dataset part's rows cut into passages: short enough to embed whole (E5 reads 512 tokens) and
to put several into a small model's prompt, never across a section heading.

Text is packed sentence by sentence up to ``MAX_WORDS``. A passage's section is the heading path
the normalizer marked (Markdown heading lines, see ``datasets.structure``), read across the
part's chunks in order, or a line underlined reStructuredText-style. Only in a part without any
marked heading (a PDF's text) is a short line without closing punctuation taken for a heading:
in marked text such lines are wrapped sentences, list items and example output. A heading starts
a new passage and is its first line, so that both searches see it. A conversation is one passage
per conversation (its system message left out), packed the same way when it is long.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from services.datasets import structure

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
    page: int | None = None  # the page its chunk starts on


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


def _underlined(lines: list[str], i: int) -> bool:
    """Line ``i`` is a reStructuredText heading: text over a line of one repeated mark."""
    return bool(lines[i]) and not _UNDERLINE.match(lines[i]) and i + 1 < len(lines) and bool(
        _UNDERLINE.match(lines[i + 1]))


def has_marked_headings(text: str) -> bool:
    lines = [line.strip() for line in text.split("\n")]
    return any(structure.heading(line) is not None or _underlined(lines, i) for i, line in enumerate(lines))


def split_text(text: str, max_words: int = MAX_WORDS, path: str = "",
               guess_headings: bool | None = None) -> list[tuple[str, str]]:
    """(section, text) passages of text under the heading path ``path``. ``guess_headings``: take
    short unpunctuated lines for headings (None: when ``text`` marks none of its own)."""
    lines = [line.strip() for line in text.split("\n")]
    if guess_headings is None:
        guess_headings = not has_marked_headings(text)
    sections: list[tuple[str, list[str]]] = [("", [])]
    previous = ""  # the line before: a heading follows a blank line or a finished sentence, not a wrapped one
    for i, line in enumerate(lines):
        if _UNDERLINE.match(line):  # an underline (or overline) marks the heading it is under
            continue
        if (marked := structure.heading(line)) is not None:
            sections.append((marked[1], []))
        elif _underlined(lines, i) or (guess_headings and line and _heading(line) and (
                not previous or previous.endswith(_CLOSING) or previous == sections[-1][0])):
            sections.append((line, []))
        elif line:
            sections[-1][1].append(line)
        previous = line
    found = []
    last = path.rsplit(structure.SEPARATOR, 1)[-1]
    for heading, lines in sections:
        sentences = [s for s in _SENTENCE_END.split(" ".join(lines)) if s.strip()]
        section = structure.SEPARATOR.join(p for p in (path, "" if heading == last else heading) if p)
        for body in _pack(sentences, max_words - len(heading.split())):
            found.append((section, f"{heading}\n{body}" if heading else body))
    return found


def from_rows(rows: list[dict], max_words: int = MAX_WORDS) -> list[Passage]:
    """Passages of a part's rows (``chunk_index``, ``kind``, ``text``, ``messages``, and ``page`` where
    the part has it)."""
    found = []
    texts = [row for row in rows if row["kind"] != "chat"]
    guess = not any(has_marked_headings(row["text"]) for row in texts)  # the whole part marks them, or none
    # each chunk a "page", so that a heading's path carries from one chunk into the next
    by_chunk: dict[int, list[structure.Paragraph]] = {}
    for paragraph in structure.paragraphs([row["text"] for row in texts], paged=True):
        by_chunk.setdefault(texts[paragraph.page - 1]["chunk_index"], []).append(paragraph)
    for row in rows:
        if row["kind"] == "chat":
            # the system message instructs the model and repeats in every conversation: not knowledge
            lines = [f"{m['role']}: {m['content']}" for m in json.loads(row["messages"]) if m["role"] != "system"]
            pieces = [("", body) for body in _pack(lines, max_words)]
        else:
            pieces = [piece for path, group in _by_section(by_chunk.get(row["chunk_index"], []))
                      for piece in split_text(group, max_words, path, guess)]
        found += [Passage(row["chunk_index"], i, section, text, row.get("page"))
                  for i, (section, text) in enumerate(pieces)]
    return found


def _by_section(paragraphs: list[structure.Paragraph]) -> list[tuple[str, str]]:
    """(section path, text) of each run of a chunk's paragraphs under one heading path."""
    runs: list[tuple[str, list[str]]] = []
    for paragraph in paragraphs:
        if runs and runs[-1][0] == paragraph.section and structure.heading(paragraph.text.split("\n", 1)[0]) is None:
            runs[-1][1].append(paragraph.text)
        else:
            runs.append((paragraph.section, [paragraph.text]))
    return [(path, "\n\n".join(texts)) for path, texts in runs]
