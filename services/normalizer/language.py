"""Language of a text (ISO 639-1), with py3langid's model that ships in the package (offline)."""

from __future__ import annotations

import py3langid

UNKNOWN = "und"


def detect(text: str, sample_chars: int = 5000) -> str:
    sample = text[:sample_chars]
    if sum(ch.isalpha() for ch in sample) < 20:
        return UNKNOWN
    language, _ = py3langid.classify(sample)
    return language
