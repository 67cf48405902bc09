"""JSONL of supervised examples: chat (`{"messages": [...]}`) or prompt/completion pairs, kept as
conversations, not flattened into prose."""

from __future__ import annotations

import json

from services.contracts import RejectReason
from services.normalizer.extract import Extracted, Rejection
from services.normalizer.extract.text import decode

ROLES = {"system", "user", "assistant"}


def extract(data: bytes) -> Extracted:
    examples, bad = [], []
    for number, line in enumerate(decode(data).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            examples.append(_example(json.loads(line)))
        except (ValueError, TypeError, KeyError) as exc:
            bad.append(f"line {number}: {exc}")
    if not examples:
        detail = "; ".join(bad[:3]) or "no lines"
        raise Rejection(RejectReason.CORRUPT, f"no valid chat or prompt/completion example ({detail})")
    return Extracted(examples=examples)


def _example(record: object) -> list[dict[str, str]]:
    if not isinstance(record, dict):
        raise ValueError("not a JSON object")
    if "messages" in record:
        messages = [{"role": str(m["role"]), "content": str(m["content"])} for m in record["messages"]]
    elif "prompt" in record and "completion" in record:
        messages = [{"role": "user", "content": str(record["prompt"])},
                    {"role": "assistant", "content": str(record["completion"])}]
    else:
        raise ValueError("neither 'messages' nor 'prompt'/'completion'")
    if not messages or any(m["role"] not in ROLES for m in messages):
        raise ValueError(f"roles must be among {sorted(ROLES)}")
    if not any(m["role"] == "assistant" and m["content"].strip() for m in messages):
        raise ValueError("no assistant answer to learn from")
    return messages
