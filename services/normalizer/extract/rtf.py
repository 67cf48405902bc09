"""RTF documents with striprtf: the text without control words, in the document's code page."""

from __future__ import annotations

import re

from services.contracts import RejectReason
from services.normalizer.extract import Extracted, Rejection

_CODE_PAGE = re.compile(rb"\\ansicpg(\d+)")


def extract(data: bytes) -> Extracted:
    from striprtf.striprtf import rtf_to_text

    found = _CODE_PAGE.search(data[:4096])
    encoding = f"cp{int(found.group(1))}" if found else "cp1252"
    try:
        text = rtf_to_text(data.decode("ascii", errors="replace"), encoding=encoding, errors="replace")
    except LookupError:  # a code page Python does not know
        text = rtf_to_text(data.decode("ascii", errors="replace"), encoding="cp1252", errors="replace")
    except Exception as exc:  # noqa: BLE001 (a damaged group structure)
        raise Rejection(RejectReason.CORRUPT, f"the RTF cannot be read ({type(exc).__name__}: {exc})") from None
    return Extracted(pages=[text])
