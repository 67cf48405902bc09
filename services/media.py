"""Media types sniffed from a document's first bytes, with its name only as a tie-breaker.

Content wins over the extension: a PDF renamed to .txt is a PDF, and an HTML page
saved as report.pdf is HTML. Text formats that have no signature (Markdown, JSONL)
are told apart by extension once the bytes are known to be text.
"""

from __future__ import annotations

import json
import re
import struct
import zipfile
from pathlib import PurePosixPath
from typing import BinaryIO

HEAD_BYTES = 8192  # how much of a file sniffing needs
# zipfile reads a ZIP's whole central directory into memory: an Office file's has a few dozen
# entries, so a larger one is not looked into (it stays application/zip)
MAX_ZIP_ENTRIES = 10_000
MAX_ZIP_DIRECTORY_BYTES = 4 << 20

PDF = "application/pdf"
PNG, JPEG, GIF, TIFF, WEBP = "image/png", "image/jpeg", "image/gif", "image/tiff", "image/webp"
IMAGES = (PNG, JPEG, GIF, TIFF, WEBP)
DOCX = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
PPTX = "application/vnd.openxmlformats-officedocument.presentationml.presentation"
ODT = "application/vnd.oasis.opendocument.text"
ODS = "application/vnd.oasis.opendocument.spreadsheet"
ODP = "application/vnd.oasis.opendocument.presentation"
EPUB = "application/epub+zip"
RTF = "application/rtf"
EML = "message/rfc822"
MSG = "application/vnd.ms-outlook"  # an Outlook message: an OLE compound file of MAPI properties
ZIP = "application/zip"
OLE = "application/x-ole-storage"  # legacy .doc/.xls, and encrypted OOXML
HTML = "text/html"
MARKDOWN = "text/markdown"
JSONL = "application/jsonl"
JSON = "application/json"
TEXT = "text/plain"
BINARY = "application/octet-stream"

_SIGNATURES: list[tuple[bytes, str]] = [
    (b"%PDF-", PDF),
    (b"{\\rtf", RTF),
    (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", OLE),
    (b"\x89PNG\r\n\x1a\n", PNG),
    (b"\xff\xd8\xff", JPEG),
    (b"GIF8", GIF),
    (b"II*\x00", TIFF),
    (b"MM\x00*", TIFF),
    (b"\x1f\x8b", "application/gzip"),
]
_OOXML_PARTS = {"word/document.xml": DOCX, "xl/workbook.xml": XLSX, "ppt/presentation.xml": PPTX}
# what a name says a file is (sniffing decides; this says what a damaged file was meant to be)
_NAMED = {".pdf": PDF, ".docx": DOCX, ".html": HTML, ".htm": HTML, ".md": MARKDOWN, ".markdown": MARKDOWN,
          ".txt": TEXT, ".text": TEXT, ".jsonl": JSONL, ".xlsx": XLSX, ".pptx": PPTX, ".png": PNG, ".jpg": JPEG,
          ".jpeg": JPEG, ".tif": TIFF, ".tiff": TIFF, ".odt": ODT, ".ods": ODS, ".odp": ODP, ".epub": EPUB,
          ".rtf": RTF, ".eml": EML, ".msg": MSG}
_NAMED_IN_ZIP = (ODT, ODS, ODP, EPUB)  # the ZIP's first member, "mimetype", says which
_TEXT_BOMS = (b"\xef\xbb\xbf", b"\xff\xfe", b"\xfe\xff")
# an email starts with header fields; these are in almost every message, and in few other texts
_HEADER_FIELD = re.compile(rb"^([A-Za-z][A-Za-z0-9-]{0,76}):[ \t]?\S?", re.M)
_MAIL_FIELDS = {b"from", b"to", b"subject", b"date", b"message-id", b"mime-version", b"received", b"return-path"}


def sniff(head: bytes, name: str, whole: BinaryIO | None = None) -> str:
    """The media type of a document from its first bytes (``HEAD_BYTES``) and its name.

    ``whole`` is the whole document, seekable; it is only read for ZIP containers, whose
    type is decided by the names of the parts inside. It is left open.
    """
    suffix = PurePosixPath(name).suffix.lower()
    stripped = head.lstrip()
    if stripped.startswith(b"%PDF-") and not head.startswith(b"%PDF-"):
        return PDF  # leading junk before the header is common and tolerated by readers
    for signature, media_type in _SIGNATURES:
        if head.startswith(signature):
            return MSG if media_type == OLE and whole is not None and _is_outlook_message(whole) else media_type
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return WEBP
    if head.startswith(b"PK\x03\x04"):
        return _zip_type(whole) if whole is not None else ZIP
    if not _looks_like_text(head):
        return BINARY
    text = _decode_head(head)
    lowered = text.lstrip("\ufeff \t\r\n").lower()
    if lowered.startswith(("<!doctype html", "<html")) or (suffix in {".html", ".htm"} and lowered.startswith("<")):
        return HTML
    if _is_email(head, suffix):
        return EML
    if suffix == ".jsonl" or (suffix == ".json" and _is_json_lines(text)):
        return JSONL
    if suffix == ".json":
        return JSON
    if suffix in {".md", ".markdown"}:
        return MARKDOWN
    return TEXT


def named(name: str) -> str | None:
    """The media type a file's name claims, if it names one afina knows."""
    return _NAMED.get(PurePosixPath(name).suffix.lower())


def _is_outlook_message(whole: BinaryIO) -> bool:
    """An OLE file whose root holds MAPI property streams (a legacy Office file holds others)."""
    import olefile

    try:
        whole.seek(0)
        ole = olefile.OleFileIO(whole)
        try:
            return ole.exists("__properties_version1.0") and ole.exists("__substg1.0_001A001F")  # its class
        finally:
            ole.close()
    except (OSError, ValueError, IndexError, struct.error):
        return False


def _zip_type(whole: BinaryIO) -> str:
    try:
        if not _directory_is_small(whole):
            return ZIP
        whole.seek(0)
        with zipfile.ZipFile(whole) as archive:  # a ZipFile leaves a file it was given open
            names = set(archive.namelist())
            declared = archive.open("mimetype").read(100).decode("ascii", "replace").strip() \
                if "mimetype" in names else ""
    except (zipfile.BadZipFile, OSError, EOFError, RuntimeError, ValueError):
        return ZIP
    if declared in _NAMED_IN_ZIP:
        return declared
    for part, media_type in _OOXML_PARTS.items():
        if part in names:
            return media_type
    return ZIP


def _directory_is_small(whole: BinaryIO) -> bool:
    """Whether the ZIP's end record announces a central directory within the bounds, read from the
    last 64 KiB (the end record sits there, after a comment of at most 65,535 bytes)."""
    size = whole.seek(0, 2)
    tail_start = max(0, size - (1 << 16) - 22)
    whole.seek(tail_start)
    tail = whole.read()
    at = tail.rfind(b"PK\x05\x06")
    if at < 0 or len(tail) - at < 22:
        return False
    entries, directory_bytes = struct.unpack("<xxxxxxxxxxHI", tail[at : at + 16])
    if entries == 0xFFFF or directory_bytes == 0xFFFFFFFF:  # ZIP64: sizes beyond any Office file
        return False
    return entries <= MAX_ZIP_ENTRIES and directory_bytes <= MAX_ZIP_DIRECTORY_BYTES


def _looks_like_text(head: bytes) -> bool:
    if not head:
        return True
    if head.startswith(_TEXT_BOMS):
        return True
    if b"\x00" in head:
        return False
    controls = sum(1 for byte in head if byte < 32 and byte not in (9, 10, 12, 13, 27))
    # valid UTF-8 is text with a few stray controls (a BEL, a vertical tab); other bytes must be cleaner
    return controls <= len(head) // (20 if _is_utf8(head) else 100)


def _is_utf8(head: bytes) -> bool:
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        return exc.start >= len(head) - 3 and exc.reason == "unexpected end of data"  # cut inside a character
    return True


def _decode_head(head: bytes) -> str:
    # the head may end inside a character: replace, don't fail; Latin-1 text is ASCII enough here
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        return head.decode("utf-16", errors="replace")
    return head.decode("utf-8", errors="replace")


def _is_email(head: bytes, suffix: str) -> bool:
    """A header block of RFC 5322 fields first: two of the usual ones (one, for a file named .eml)."""
    block = head.lstrip(b"\r\n").replace(b"\r\n", b"\n").split(b"\n\n", 1)[0]
    lines = [line for line in block.split(b"\n") if line and line[:1] not in b" \t"]  # folded lines go on
    if not lines or not all(_HEADER_FIELD.match(line) for line in lines[:20]):
        return False
    fields = {_HEADER_FIELD.match(line).group(1).lower() for line in lines}
    return len(fields & _MAIL_FIELDS) >= (1 if suffix == ".eml" else 2)


def _is_json_lines(text: str) -> bool:
    lines = [line for line in text.splitlines()[:3] if line.strip()]
    if len(lines) < 2:
        return False
    try:
        return all(isinstance(json.loads(line), dict) for line in lines[:-1])  # the last may be cut
    except ValueError:
        return False
