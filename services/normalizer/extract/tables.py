"""Tables as Markdown, so that training text and passages keep their rows and columns."""

from __future__ import annotations


def markdown_table(rows: list[list[str]]) -> str:
    """A Markdown table of ``rows``, the first row as the header; empty rows and columns dropped."""
    cells = [[" ".join(str(c or "").split()).replace("|", "\\|") for c in row] for row in rows]
    cells = [row for row in cells if any(row)]
    if not cells:
        return ""
    width = max(len(row) for row in cells)
    cells = [row + [""] * (width - len(row)) for row in cells]
    used = [i for i in range(width) if any(row[i] for row in cells)]
    cells = [[row[i] for i in used] for row in cells]
    lines = ["| " + " | ".join(row) + " |" for row in cells]
    lines.insert(1, "|" + "|".join(" --- " for _ in used) + "|")
    return "\n".join(lines)
