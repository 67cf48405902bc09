"""Quality filters: each says why a text is not worth training on, or None when it is."""

from __future__ import annotations

import re
from collections import Counter

MIN_WORDS = 20
MIN_LETTER_RATIO = 0.5  # share of letters among non-space characters
MAX_DUPLICATE_LINE_RATIO = 0.5
MAX_MEAN_WORD_CHARS = 20


# a Markdown table's syntax (cell separators, the header rule): the cells are the text
_TABLE_SYNTAX = re.compile(r"(?<!\\)\||^\s*[-:| ]{3,}\s*$", re.M)


def problem(text: str) -> str | None:
    text = _TABLE_SYNTAX.sub(" ", text)
    words = text.split()
    if len(words) < MIN_WORDS:
        return f"too short: {len(words)} words (at least {MIN_WORDS})"
    visible = [ch for ch in text if not ch.isspace()]
    letters = sum(ch.isalpha() for ch in visible) / len(visible)
    if letters < MIN_LETTER_RATIO:
        return f"mostly symbols or digits: {letters:.0%} letters (at least {MIN_LETTER_RATIO:.0%})"
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if len(lines) >= 4:
        repeated = 1 - len(set(lines)) / len(lines)
        if repeated > MAX_DUPLICATE_LINE_RATIO:
            return f"mostly repeated lines: {repeated:.0%} of lines are repeats"
    mean_word = sum(len(w) for w in words) / len(words)
    if mean_word > MAX_MEAN_WORD_CHARS:
        return f"not prose: words average {mean_word:.0f} characters"
    top, count = Counter(w.lower() for w in words).most_common(1)[0]
    if len(words) >= 50 and count / len(words) > 0.3:
        return f"one word is {count / len(words):.0%} of the text ('{top}')"
    return None
