"""Whether a document is master (fine-tuned) or volatile (retrieved only), from the operator's rules.

A document's own Markdown front matter (``stability: volatile``) wins; otherwise its path inside
the inbox decides: a folder prefix (``news/``) or a glob pattern (``*/campaigns/*.md``) from the
settings makes it volatile; everything else is master.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass

import yaml

from services.contracts import Stability


@dataclass(frozen=True)
class StabilityRules:
    prefixes: tuple[str, ...] = ()  # folder prefixes of volatile documents, e.g. "news/"
    patterns: tuple[str, ...] = ()  # glob patterns of volatile documents, matched against the whole path

    @classmethod
    def parse(cls, prefixes: str, patterns: str) -> StabilityRules:
        def split(value: str) -> tuple[str, ...]:
            return tuple(item.strip() for item in value.split(",") if item.strip())

        return cls(tuple(p.lstrip("/") for p in split(prefixes)), split(patterns))

    def of(self, source_id: str) -> Stability:
        path = document_path(source_id)
        volatile = path.startswith(self.prefixes) or any(fnmatch.fnmatchcase(path, p) for p in self.patterns)
        return Stability.VOLATILE if volatile else Stability.MASTER


def document_path(source_id: str) -> str:
    """A document's path inside its inbox: 'folder:news/a.md' and 'bucket:inbox/news/a.md' are 'news/a.md'."""
    kind, _, path = source_id.partition(":")
    return path.removeprefix("inbox/") if kind == "bucket" else path


def split_front_matter(text: str) -> tuple[dict, str]:
    """Markdown's YAML front matter (between '---' lines at the very start) and the text after it.
    Text without front matter, or with front matter that is not a YAML mapping, comes back whole."""
    if not text.startswith("---"):
        return {}, text
    lines = text.split("\n")
    if lines[0].strip() != "---":
        return {}, text
    end = next((i for i, line in enumerate(lines[1:], 1) if line.strip() in ("---", "...")), None)
    if end is None:
        return {}, text
    try:
        found = yaml.safe_load("\n".join(lines[1:end]))
    except yaml.YAMLError:
        return {}, text
    if not isinstance(found, dict):
        return {}, text
    return found, "\n".join(lines[end + 1:])


def from_front_matter(front: dict) -> Stability | None:
    """``stability: volatile`` (or ``master``) in front matter; None when it says nothing usable."""
    value = str(front.get("stability", "")).strip().lower()
    return Stability(value) if value in set(Stability) else None
