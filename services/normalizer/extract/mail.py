"""Email: EML (RFC 5322 with MIME) with the standard library's parser, Outlook's MSG with extract-msg.
The subject is the heading, then the sender, recipients and date, then the body (the plain text one,
or else the HTML one read as a web page). Attachments are not read here: each comes back apart, to
be its own document, under the same limits as any other (a forwarded EML message too, as an .eml of
its own)."""

from __future__ import annotations

import io
import mimetypes
import re
import warnings
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import PurePosixPath

from services.contracts import RejectReason
from services.normalizer.extract import Extracted, Rejection, html

MAX_ATTACHMENTS = 100
_SHOWN = ("From", "To", "Cc", "Date")
_UNSAFE_NAME = re.compile(r"[\x00-\x1f/\\#]+")  # a name is one path component in the attachment's id


def extract(data: bytes) -> Extracted:
    try:
        message: EmailMessage = BytesParser(policy=policy.default).parsebytes(data)
        lines = [f"# {' '.join(str(message['Subject']).split())}"] if message["Subject"] else []
        lines += [f"{field}: {message[field]}" for field in _SHOWN if message[field]]
        body = message.get_body(preferencelist=("plain", "html"))
        text = _body_text(body) if body is not None else ""
        attachments = _attachments(message)
    except Rejection:
        raise
    except Exception as exc:  # noqa: BLE001 (the parser is lenient; reading a part's content is not)
        raise Rejection(RejectReason.CORRUPT, f"the email cannot be read ({type(exc).__name__}: {exc})") from None
    return _mail(lines, text, attachments)


def extract_outlook(data: bytes) -> Extracted:
    """An Outlook message (MSG). An attached Outlook message is not read (extract-msg gives no bytes of it)."""
    import extract_msg

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            message = extract_msg.openMsg(io.BytesIO(data), delayAttachments=True)
        try:
            shown = {"From": message.sender, "To": message.to, "Cc": message.cc, "Date": message.date}
            lines = [f"# {' '.join(message.subject.split())}"] if message.subject else []
            lines += [f"{field}: {value}" for field, value in shown.items() if value]
            text = message.body or ""
            if not text.strip() and message.htmlBody:
                text = _html_text(message.htmlBody)
            if len(message.attachments) > MAX_ATTACHMENTS:
                raise Rejection(RejectReason.TOO_LARGE, f"the email has more than {MAX_ATTACHMENTS} attachments")
            held = [(a.longFilename or a.shortFilename or "attachment", a.data) for a in message.attachments
                    if isinstance(a.data, bytes)]
        finally:
            message.close()
    except Rejection:
        raise
    except Exception as exc:  # noqa: BLE001 (extract-msg raises many kinds on malformed files)
        raise Rejection(RejectReason.CORRUPT, f"the Outlook message cannot be read ({type(exc).__name__}: {exc})"
                        ) from None
    return _mail(lines, text, _named(held))


def _mail(lines: list[str], text: str, attachments: list[tuple[str, bytes]]) -> Extracted:
    if not lines:
        raise Rejection(RejectReason.CORRUPT, "the email has no header fields (no subject, sender or date)")
    return Extracted(pages=["\n".join(lines) + ("\n\n" + text if text.strip() else "")], attachments=attachments)


def _body_text(body: EmailMessage) -> str:
    content = body.get_content()  # decoded from its transfer encoding and charset
    return _html_text(content) if body.get_content_type() == "text/html" else content


def _html_text(content: str | bytes) -> str:
    try:
        return "\n\n".join(html.extract(content if isinstance(content, bytes) else content.encode()).pages)
    except Rejection as exc:
        if exc.reason == RejectReason.NO_TEXT:
            return ""
        raise


def _attachments(message: EmailMessage) -> list[tuple[str, bytes]]:
    found = []
    for number, part in enumerate(message.iter_attachments(), 1):
        if number > MAX_ATTACHMENTS:
            raise Rejection(RejectReason.TOO_LARGE, f"the email has more than {MAX_ATTACHMENTS} attachments")
        if part.get_content_type() == "message/rfc822":  # a forwarded message: an email of its own
            inner = part.get_payload(0)
            data, name = inner.as_bytes(policy=policy.default), f"{inner['Subject'] or 'message'}.eml"
        else:
            data = part.get_payload(decode=True) or b""
            name = part.get_filename() or f"attachment{mimetypes.guess_extension(part.get_content_type()) or ''}"
        found.append((name, data))
    return _named(found)


def _named(attachments: list[tuple[str, bytes]]) -> list[tuple[str, bytes]]:
    """The attachments with bytes, their names made safe and unique ("informe (2).pdf"): each names a document."""
    found, names = [], set()
    for name, data in attachments:
        if not data:
            continue
        name = _UNSAFE_NAME.sub("_", name).strip() or "attachment"
        path, copy = PurePosixPath(name), 1
        while name in names:
            copy += 1
            name = f"{path.stem} ({copy}){path.suffix}"
        names.add(name)
        found.append((name, data))
    return found
