"""A real public corpus for the extraction benchmarks, assembled from Debian's documentation packages.

The Debian FAQ (English), the Debian New Maintainers' Guide (Spanish and English) and the Debian
Reference (Spanish and English) ship as .deb packages with their manuals as HTML chapters, PDF and
plain text. The packages are fetched from deb.debian.org at pinned versions (sha256 checked) and
their files unpacked; pandoc (the PyPI wheel pypandoc-binary) converts a share of the HTML chapters
to DOCX, ODT, EPUB and PPTX. Everything is cached under ``<state dir>/bench/debian``.

Each document comes with known sentences drawn from its publisher's HTML, read with lxml (not with
afina's extractor): paragraphs' sentences of 8 to 30 words of prose (no digits, paths, addresses or
markup characters, which redaction or typesetting may rightly change). A chapter and its
conversions get two sentences; a whole manual (PDF, text) gets ten of its chapters' sentences that
its plain-text edition holds too, from paragraphs without links or footnotes (the PDF edition
prints a link's URL and a footnote's mark inside the sentence).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import random
import re
import tarfile
import unicodedata
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import lxml.html

MIRROR = "http://deb.debian.org/debian/"
PACKAGES = {  # bookworm's versions
    "pool/main/d/debian-faq/debian-faq_11.1_all.deb":
        "427426e0cfa6888622fc1d72631071cb4b5a1f86ccde722e7820bcef284de5d0",
    "pool/main/d/debian-reference/debian-reference-es_2.100_all.deb":
        "a59b68c96f83d3cf29a476c847aee38364764603ea62eee592791e0a843a269e",
    "pool/main/d/debian-reference/debian-reference-en_2.100_all.deb":
        "9f31d3a17df505de09689ca255512ea58c1fc47c59bb1b0c7bf1c23362e9743f",
    "pool/main/m/maint-guide/maint-guide-es_1.2.53_all.deb":
        "5a76b5e43285173ce4cce9284fb47b9a1851a68a9c0c0b8300c338d8890a42b6",
    "pool/main/m/maint-guide/maint-guide_1.2.53_all.deb":
        "762c8a400a36668d2eb814a3ba356b06488fd889dfce478eb11d5cfb189a47b5",
}
# (manual, language, its HTML chapters, its PDF, its plain text), paths inside the packages
MANUALS = [
    ("debian-faq", "en", "usr/share/doc/debian/FAQ/*.en.html", "usr/share/doc/debian/FAQ/debian-faq.en.pdf.gz",
     "usr/share/doc/debian/FAQ/debian-faq.en.txt.gz"),
    ("maint-guide", "es", "usr/share/doc/maint-guide-es/html/*.es.html",
     "usr/share/doc/maint-guide-es/maint-guide.es.pdf", "usr/share/doc/maint-guide-es/maint-guide.es.txt.gz"),
    ("maint-guide", "en", "usr/share/doc/maint-guide/html/*.en.html", "usr/share/doc/maint-guide/maint-guide.en.pdf",
     "usr/share/doc/maint-guide/maint-guide.en.txt.gz"),
    ("debian-reference", "es", "usr/share/debian-reference/*.es.html",
     "usr/share/debian-reference/debian-reference.es.pdf", "usr/share/debian-reference/debian-reference.es.txt.gz"),
    ("debian-reference", "en", "usr/share/debian-reference/*.en.html",
     "usr/share/debian-reference/debian-reference.en.pdf", "usr/share/debian-reference/debian-reference.en.txt.gz"),
]
CONVERTED = ("docx", "odt", "epub", "pptx")
CONVERT_FROM = ("debian-faq", "maint-guide")  # the chapters pandoc converts (the reference's are 100-400 KB each)
PER_CHAPTER, PER_MANUAL = 2, 10
_PROSE = re.compile(r"^[A-ZÁÉÍÓÚÑ¿¡][^\d@/\\<>`$#{}|=_*\[\]~^]+[.]$")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-ZÁÉÍÓÚÑ¿¡])")


@dataclass(frozen=True)
class Document:
    path: Path
    manual: str
    language: str
    kind: str  # html, pdf, txt, docx, odt, epub, pptx
    sentences: tuple[str, ...]


def comparable(text: str) -> str:
    """Text as both sides are compared: NFKC, plain quotes and dashes, one space for any run of them."""
    text = unicodedata.normalize("NFKC", text).replace("\u00ad", "")
    for fancy, plain in (("“”„«»", '"'), ("‘’‚", "'"), ("–—‐‑", "-")):
        text = re.sub(f"[{fancy}]", plain, text)
    return " ".join(text.split())


def _fetch(cache: Path, pool_path: str, sha256: str) -> Path:
    target = cache / "debs" / Path(pool_path).name
    if target.exists() and hashlib.sha256(target.read_bytes()).hexdigest() == sha256:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with urllib.request.urlopen(MIRROR + pool_path, timeout=120) as response:
        data = response.read()
    if hashlib.sha256(data).hexdigest() != sha256:
        raise RuntimeError(f"{pool_path}: sha256 mismatch (the mirror changed the file?)")
    target.write_bytes(data)
    return target


def _unpack(deb: Path, into: Path) -> None:
    """A .deb is an ar archive; its data.tar.* holds the files."""
    data = deb.read_bytes()
    at = 8  # "!<arch>\n"
    while at < len(data):
        name, size = data[at : at + 16].decode().strip().rstrip("/"), int(data[at + 48 : at + 58])
        body = data[at + 60 : at + 60 + size]
        if name.startswith("data.tar"):
            with tarfile.open(fileobj=io.BytesIO(body)) as archive:
                archive.extractall(into, filter="data")
            return
        at += 60 + size + (size % 2)
    raise RuntimeError(f"{deb.name} has no data.tar")


def _sentences(html_bytes: bytes, without_links: bool = False) -> list[str]:
    """Prose sentences of the page's paragraphs (``without_links``: of paragraphs without links or
    footnotes only, whose text a PDF edition prints the same: it adds a link's URL, a footnote's mark)."""
    tree = lxml.html.document_fromstring(html_bytes)
    found = []
    for paragraph in tree.iter("p"):
        if paragraph.xpath("ancestor::*[self::pre or self::table or self::code]"):
            continue
        if without_links and (paragraph.xpath(".//a[@href]") or paragraph.xpath(".//sup")):
            continue
        for sentence in _SENTENCE_END.split(comparable(paragraph.text_content())):
            if 8 <= len(sentence.split()) <= 30 and _PROSE.match(sentence):
                found.append(sentence)
    return list(dict.fromkeys(found))


def _convert(source: Path, kind: str, target: Path) -> None:
    import pypandoc

    pypandoc.convert_file(str(source), kind, format="html", outputfile=str(target),
                          extra_args=["--resource-path", str(source.parent)])


def assemble(state_dir: Path, echo=print) -> list[Document]:
    cache = state_dir / "bench" / "debian"
    files = cache / "files"
    if not (cache / "unpacked").exists():
        for pool_path, sha in PACKAGES.items():
            echo(f"  fetching {Path(pool_path).name}")
            _unpack(_fetch(cache, pool_path, sha), files)
        (cache / "unpacked").touch()
    rng = random.Random("afina-public-corpus")
    documents: list[Document] = []
    for manual, language, chapters, pdf, txt in MANUALS:
        pages = sorted(p for p in files.glob(chapters) if p.stat().st_size > 0)
        plain = comparable(gzip.decompress((files / txt).read_bytes()).decode("utf-8", "replace"))
        pooled = []
        for page in pages:
            sentences = _sentences(page.read_bytes())
            if len(sentences) < PER_CHAPTER:
                continue  # a table of contents, a page of links
            chosen = tuple(rng.sample(sentences, PER_CHAPTER))
            documents.append(Document(page, manual, language, "html", chosen))
            pooled += [s for s in _sentences(page.read_bytes(), without_links=True) if s in plain]
            if manual in CONVERT_FROM:
                for kind in CONVERTED:
                    target = cache / "converted" / f"{page.stem}.{kind}"
                    if not target.exists():
                        target.parent.mkdir(parents=True, exist_ok=True)
                        echo(f"  pandoc {page.name} -> {target.name}")
                        _convert(page, kind, target)
                    documents.append(Document(target, manual, language, kind, chosen))
        whole = tuple(rng.sample(pooled, PER_MANUAL))
        pdf_path = files / pdf
        if pdf_path.suffix == ".gz":
            unzipped = cache / "converted" / pdf_path.stem
            if not unzipped.exists():
                unzipped.parent.mkdir(parents=True, exist_ok=True)
                unzipped.write_bytes(gzip.decompress(pdf_path.read_bytes()))
            pdf_path = unzipped
        text_path = cache / "converted" / f"{manual}.{language}.txt"
        if not text_path.exists():
            text_path.parent.mkdir(parents=True, exist_ok=True)
            text_path.write_bytes(gzip.decompress((files / txt).read_bytes()))
        documents.append(Document(pdf_path, manual, language, "pdf", whole))
        documents.append(Document(text_path, manual, language, "txt", whole))
    return documents
