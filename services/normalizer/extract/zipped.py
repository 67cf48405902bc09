"""The ZIP bomb check that every ZIP-based format (DOCX, PPTX, XLSX) passes before it is opened."""

from __future__ import annotations

import io
import zipfile

from services.contracts import RejectReason
from services.normalizer.extract import Rejection

MAX_UNPACKED_BYTES = 200 * 1024 * 1024
MAX_RATIO = 200  # compression ratios past this are bombs, not documents


def check_zip(data: bytes, what: str) -> None:
    """Raise a Rejection when ``data`` (a ``what``, e.g. "DOCX") is no ZIP or would unpack too far."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            infos = archive.infolist()
    except zipfile.BadZipFile as exc:
        raise Rejection(RejectReason.CORRUPT, f"the {what} is not a valid ZIP container ({exc})") from None
    unpacked = sum(info.file_size for info in infos)
    packed = max(1, sum(info.compress_size for info in infos))
    if unpacked > MAX_UNPACKED_BYTES or unpacked / packed > MAX_RATIO:
        raise Rejection(
            RejectReason.BOMB,
            f"the {what} would unpack to {unpacked} bytes from {packed} (a ZIP bomb); not opened",
        )
