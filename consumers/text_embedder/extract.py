"""Text extraction per content kind: plain text/markdown, HTML (visible text), PDF (text layer, OCR for pages
without one), DOCX, and images (OCR). Bad bytes raise PermanentError naming the object; nothing crashes the loop."""

from __future__ import annotations

import io
import re
import zipfile
from dataclasses import dataclass
from typing import Any, Protocol

from mmrag.errors import PermanentError
from mmrag.images import decode_image

STAGE = "text_embedder"
PDF_MAGIC = b"%PDF-"
ZIP_MAGIC = b"PK\x03\x04"
INVISIBLE_TAGS = ("script", "style", "noscript", "template", "head", "svg")


@dataclass(frozen=True)
class Page:
    """Extracted text of one page (``number`` 1-based; 0 for formats without pages)."""

    number: int
    text: str


class Ocr(Protocol):
    def image_text(self, image: Any) -> str: ...


def decode_text(data: bytes, object_id: str) -> str:
    """UTF-8 (BOM allowed) text; other encodings and binary data raise PermanentError."""
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PermanentError(
            STAGE, object_id, f"not UTF-8 text ({exc.reason} at byte {exc.start})", "re-upload it as UTF-8"
        ) from exc
    if "\x00" in text:
        raise PermanentError(STAGE, object_id, "binary data (NUL bytes) in a text object", "upload real text")
    return text


def html_text(data: bytes, object_id: str) -> str:
    """The visible text of an HTML page, one block per line (scripts, styles and head left out)."""
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(data, "html.parser")
    for tag in soup(INVISIBLE_TAGS):
        tag.decompose()
    lines = (re.sub(r"\s+", " ", line).strip() for line in soup.get_text("\n").splitlines())
    return "\n".join(line for line in lines if line)


def docx_text(data: bytes, object_id: str) -> str:
    """Paragraphs and table cells of a Word document, in document order per kind."""
    import docx

    try:
        document = docx.Document(io.BytesIO(data))
    except (zipfile.BadZipFile, KeyError, ValueError) as exc:
        raise PermanentError(STAGE, object_id, f"not a readable DOCX ({exc})", "re-save it as .docx") from exc
    parts = [p.text for p in document.paragraphs if p.text.strip()]
    for table in document.tables:
        parts += [cell.text for row in table.rows for cell in row.cells if cell.text.strip()]
    return "\n".join(parts)


def pdf_pages(data: bytes, object_id: str, ocr: Ocr, max_pages: int) -> list[Page]:
    """Each page's text layer; a page without one is rendered (200 dpi) and OCR'd."""
    import pypdfium2 as pdfium

    try:
        pdf = pdfium.PdfDocument(data)
    except pdfium.PdfiumError as exc:
        raise PermanentError(STAGE, object_id, f"not a readable PDF ({exc})", "re-export the PDF") from exc
    try:
        if len(pdf) > max_pages:
            raise PermanentError(
                STAGE,
                object_id,
                f"{len(pdf)} pages exceed the limit of {max_pages}",
                "split the document or raise MMRAG_MAX_PAGES",
            )
        pages = []
        for number, page in enumerate(pdf, start=1):
            text = page.get_textpage().get_text_range()
            if not text.strip():
                text = ocr.image_text(page.render(scale=200 / 72).to_pil())
            pages.append(Page(number, text))
        return pages
    finally:
        pdf.close()


def document_kind(data: bytes) -> str:
    """Which document format the bytes are (sniffed, not from the name): pdf, docx or html."""
    if data.startswith(PDF_MAGIC):
        return "pdf"
    if data.startswith(ZIP_MAGIC):
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            if "word/document.xml" in archive.namelist():
                return "docx"
    return "html"


def extract_document(data: bytes, object_id: str, ocr: Ocr, max_pages: int) -> list[Page]:
    try:
        kind = document_kind(data)
    except zipfile.BadZipFile as exc:
        raise PermanentError(STAGE, object_id, f"corrupt ZIP container ({exc})", "re-upload the file") from exc
    if kind == "pdf":
        return pdf_pages(data, object_id, ocr, max_pages)
    if kind == "docx":
        return [Page(0, docx_text(data, object_id))]
    return [Page(0, html_text(data, object_id))]


def image_pages(data: bytes, object_id: str, ocr: Ocr) -> list[Page]:
    """OCR text of an image, so words in diagrams and screenshots become searchable."""
    return [Page(0, ocr.image_text(decode_image(data, object_id, STAGE)))]


class TesseractOcr:
    """Tesseract through pytesseract; ``warm_up`` fails fast with the fix when the binary is missing."""

    def __init__(self, languages: str = "eng", timeout_s: float = 60) -> None:
        self.languages = languages
        self.timeout_s = timeout_s

    def warm_up(self) -> None:
        import pytesseract

        try:
            pytesseract.get_tesseract_version()
        except pytesseract.TesseractNotFoundError as exc:
            raise RuntimeError("tesseract is not installed -> `apt-get install tesseract-ocr`") from exc

    def image_text(self, image: Any) -> str:
        import pytesseract

        try:
            return str(pytesseract.image_to_string(image, lang=self.languages, timeout=self.timeout_s))
        except RuntimeError as exc:  # pytesseract raises RuntimeError on its timeout
            raise PermanentError(
                STAGE,
                "image",
                f"OCR gave up after {self.timeout_s}s ({exc})",
                "raise MMRAG_OCR_TIMEOUT_S or upload a smaller image",
            ) from exc
