"""PII redaction to typed placeholders: e-mails, phone numbers, IBANs, card numbers (Luhn),
Spanish DNI/NIE (check letter), IP addresses. Checksums keep ordinary numbers intact."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterable

KINDS = ("email", "iban", "card", "dni", "nie", "ip", "phone")

_EMAIL = re.compile(r"\b[\w.+-]+@[\w-]+(?:\.[\w-]+)*\.[a-z]{2,}\b", re.I)
_IBAN = re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,4})?\b")
_CARD = re.compile(r"\b(?:\d[ -]?){12,18}\d\b")
_DNI = re.compile(r"\b\d{8}-?[A-Z]\b")
_NIE = re.compile(r"\b[XYZ]-?\d{7}-?[A-Z]\b")
_IP = re.compile(r"(?<![\d.])(?:\d{1,3}\.){3}\d{1,3}(?!\.?\d)|(?<![\w:])(?:[0-9a-f]{0,4}:){2,7}[0-9a-f]{0,4}(?![\w:])", re.I)
_PHONE = re.compile(r"(?<![\w+])(?:\+\d{1,3}[ .-]?)?(?:\(\d{1,4}\)[ .-]?)?\d{2,4}(?:[ .-]?\d{2,4}){2,4}(?!\w)")
_DNI_LETTERS = "TRWAGMYFPDXBNJZSQVHLCKE"


def redact(text: str, kinds: Iterable[str] = KINDS) -> tuple[str, dict[str, int]]:
    """Text with each PII found replaced by ``[KIND]``, and how many of each were replaced."""
    counts: dict[str, int] = {}
    for kind in KINDS:
        if kind in kinds:
            pattern, valid = _RULES[kind]
            text = _replace(text, pattern, valid, kind, counts)
    return text, counts


def _replace(text: str, pattern: re.Pattern, valid: Callable[[str], bool], kind: str, counts: dict) -> str:
    def substitute(match: re.Match) -> str:
        if not valid(match.group(0)):
            return match.group(0)
        counts[kind] = counts.get(kind, 0) + 1
        return f"[{kind.upper()}]"

    return pattern.sub(substitute, text)


def luhn_ok(number: str) -> bool:
    digits = [int(d) for d in re.sub(r"\D", "", number)]
    if not 13 <= len(digits) <= 19:
        return False
    total = 0
    for i, digit in enumerate(reversed(digits)):
        if i % 2:
            digit = digit * 2 - 9 if digit * 2 > 9 else digit * 2
        total += digit
    return total % 10 == 0


def iban_ok(iban: str) -> bool:
    compact = iban.replace(" ", "").upper()
    if not 15 <= len(compact) <= 34:
        return False
    rearranged = compact[4:] + compact[:4]
    return int("".join(str(int(c, 36)) for c in rearranged)) % 97 == 1


def dni_ok(dni: str) -> bool:
    compact = dni.replace("-", "").upper()
    return _DNI_LETTERS[int(compact[:8]) % 23] == compact[8]


def nie_ok(nie: str) -> bool:
    compact = nie.replace("-", "").upper()
    return dni_ok(str("XYZ".index(compact[0])) + compact[1:])


def ip_ok(address: str) -> bool:
    try:
        ipaddress.ip_address(address)
    except ValueError:
        return False
    return True


def phone_ok(number: str) -> bool:
    return 9 <= len(re.sub(r"\D", "", number)) <= 15


_RULES: dict[str, tuple[re.Pattern, Callable[[str], bool]]] = {
    "email": (_EMAIL, lambda _: True),
    "iban": (_IBAN, iban_ok),
    "card": (_CARD, luhn_ok),
    "dni": (_DNI, dni_ok),
    "nie": (_NIE, nie_ok),
    "ip": (_IP, ip_ok),
    "phone": (_PHONE, phone_ok),
}
