"""Media types from content first, the name second."""

from __future__ import annotations

import io
import zipfile

import pytest

from services import media


def zipped(*names: str) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name in names:
            archive.writestr(name, "x")
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("content", "name", "expected"),
    [
        (b"%PDF-1.7\n...", "report.txt", media.PDF),  # content wins over the extension
        (b"\r\n  %PDF-1.4 junk first", "x.pdf", media.PDF),
        (b"<!DOCTYPE html><html></html>", "report.pdf", media.HTML),
        (b"  <html lang='es'>", "page", media.HTML),
        (b"<div>fragment</div>", "frag.htm", media.HTML),
        (b"# Title\n\ntext", "notes.md", media.MARKDOWN),
        (b"# Title\n\ntext", "notes.txt", media.TEXT),
        (b'{"messages": []}\n{"messages": []}\n', "chats.jsonl", media.JSONL),
        (b'{"prompt": "a"}\n{"prompt": "b"}\n{"pro', "data.json", media.JSONL),
        (b'{"a": 1}', "config.json", media.JSON),
        ("Año de la señal".encode("cp1252"), "latin.txt", media.TEXT),
        ("texto".encode("utf-16"), "utf16.txt", media.TEXT),
        (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1rest", "old.doc", media.OLE),
        (b"\x00\x01\x02\x03binary\x00", "random.txt", media.BINARY),
        (b"", "empty.txt", media.TEXT),
    ],
)
def test_sniff(content, name, expected):
    assert media.sniff(content[: media.HEAD_BYTES], name) == expected


def test_zip_containers_are_told_apart_by_their_parts():
    docx = zipped("[Content_Types].xml", "word/document.xml")
    assert media.sniff(docx[:64], "x.bin", whole=io.BytesIO(docx)) == media.DOCX
    assert media.sniff(docx[:64], "x.docx") == media.ZIP  # without the whole file, only "a ZIP"
    plain = zipped("a.txt")
    assert media.sniff(plain[:64], "a.docx", whole=io.BytesIO(plain)) == media.ZIP
    broken = b"PK\x03\x04" + b"\x00" * 100
    assert media.sniff(broken, "broken.docx", whole=io.BytesIO(broken)) == media.ZIP


def test_whole_file_is_left_open():
    docx = io.BytesIO(zipped("word/document.xml"))
    media.sniff(docx.getvalue()[:64], "x.docx", whole=docx)
    assert not docx.closed


def test_a_zip_whose_directory_is_too_large_is_not_read_into_memory(monkeypatch):
    """The end record announces the central directory's size; past the bounds zipfile is never
    asked to load it (a ZIP bomb of entries would fill the connector's memory)."""
    many = zipped("word/document.xml", *(f"part{i}.xml" for i in range(300)))
    assert media.sniff(many[:64], "x.docx", whole=io.BytesIO(many)) == media.DOCX
    monkeypatch.setattr(media, "MAX_ZIP_ENTRIES", 100)
    opened = []
    monkeypatch.setattr(media.zipfile, "ZipFile", lambda *a, **k: opened.append(a) or zipfile.ZipFile(*a, **k))
    assert media.sniff(many[:64], "x.docx", whole=io.BytesIO(many)) == media.ZIP
    assert opened == []
    monkeypatch.setattr(media, "MAX_ZIP_ENTRIES", 10_000)
    monkeypatch.setattr(media, "MAX_ZIP_DIRECTORY_BYTES", 1024)  # 301 entries take ~14 KB
    assert media.sniff(many[:64], "x.docx", whole=io.BytesIO(many)) == media.ZIP
    assert opened == []


def test_utf8_text_with_a_few_stray_control_characters_is_text():
    line = "La tienda abre a las nueve.\x07 Política de \x1b[1mdevoluciones\x1b[0m:\x0b treinta días.\x0c\n"
    assert media.sniff(line.encode()[: media.HEAD_BYTES], "notas.txt") == media.TEXT
    assert media.sniff((line * 3).encode("cp1252"), "notas.txt") == media.BINARY  # not UTF-8: held stricter


def test_the_name_says_what_a_file_claims_to_be():
    assert [media.named(n) for n in ("a.DOCX", "b.pdf", "c.htm", "d.txt", "e.png", "f.xyz", "g")] == [
        media.DOCX, media.PDF, media.HTML, media.TEXT, media.PNG, None, None]
