"""One document's text as a dataset part, the shape the trainer reads (services/datasets/parts.py)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from services.datasets.parts import to_parquet


def text_part(path: Path, tokenizer, text: str, language: str = "en") -> Path:
    """``text`` as the one chunk of one document's part, written to ``path``."""
    now = datetime.now(UTC)
    ids = tokenizer(text)["input_ids"]
    row = {"source_id": f"t:{path.stem}", "sha256": "b" * 64, "language": language, "media_type": "text/markdown",
           "tokenizer": "v0", "discovered_at": now, "normalized_at": now, "chunk_index": 0, "kind": "text",
           "text": text, "messages": None, "token_ids": ids, "n_tokens": len(ids)}
    path.write_bytes(to_parquet([row]))
    return path
