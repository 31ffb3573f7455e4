"""Text extraction per content kind: plain text in any Unicode encoding, HTML (visible text), PDF (text layer, OCR
for pages without one), DOCX, and images, SVG included (OCR of the picture). Pages come one at a time so the caller
can stop at its chunk cap; every step checks the object's time budget and the limits below. Bad bytes or an object
over a limit raise PermanentError naming the object, the limit and the setting; nothing crashes the loop."""

from __future__ import annotations

import io
import math
import threading
import time
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from consumers.text_embedder.docx_reader import docx_body_bytes, docx_paragraphs
from consumers.text_embedder.lanes import HeavyObject, LightLimits
from consumers.text_embedder.markup import html_visible_text
from mmrag.errors import PermanentError
from mmrag.images import decode_image, is_blank
from mmrag.pb.events_pb2 import MediaKind
from mmrag.text_decoding import charset_of, is_html, markup_root
from mmrag.text_decoding import decode_text as decode_any_text

STAGE = "text_embedder"
PDF_MAGIC = b"%PDF-"
ZIP_MAGIC = b"PK\x03\x04"
OCR_DPI = 200
# PDFium is not thread-safe, not even across documents (pypdfium2: "Incompatibility with Threading"): two extract
# workers reading two PDFs at once crashed the process (SIGSEGV in get_page beside a tokenizer thread). Every pdfium
# call in this process holds this lock; OCR, the slow part, runs outside it. Re-entrant because a PDF generator
# dropped mid-way is closed by the garbage collector, possibly while this thread already holds it.
PDFIUM_LOCK = threading.RLock()


@dataclass(frozen=True)
class Page:
    """Extracted text of one page (``number`` 1-based; 0 for formats without pages)."""

    number: int
    text: str


@dataclass(frozen=True)
class Limits:
    """What one object may cost extraction; each has a setting of the same name (MMRAG_...)."""

    max_pages: int = 500
    max_text_chars: int = 8_000_000
    max_unpacked_bytes: int = 64 << 20
    max_ocr_pixels: int = 12_000_000
    max_ocr_pages: int = 100


class Budget:
    """The time one object may take to extract and chunk; ``check`` raises PermanentError once it is spent, or
    HeavyObject once the light lane's shorter ``light_s`` is (the heavy lane then takes the object)."""

    def __init__(
        self,
        subject: str,
        seconds: float,
        clock: Callable[[], float] = time.monotonic,
        light_s: float | None = None,
    ) -> None:
        self.subject = subject
        self.seconds = seconds
        self.light_s = light_s
        self._clock = clock
        self._start = clock()

    def remaining(self) -> float:
        allowed = self.seconds if self.light_s is None else min(self.seconds, self.light_s)
        return max(0.0, self._start + allowed - self._clock())

    def check(self) -> None:
        spent = self._clock() - self._start
        if spent > self.seconds:
            raise PermanentError(
                STAGE,
                self.subject,
                f"extraction took longer than its budget of {self.seconds:g}s (MMRAG_EXTRACT_BUDGET_S)",
                "split the document or raise MMRAG_EXTRACT_BUDGET_S",
            )
        if self.light_s is not None and spent > self.light_s:
            setting = "MMRAG_LIGHT_BUDGET_S"
            raise HeavyObject(
                self.subject, setting, f"extraction took over the light lane's {setting}={self.light_s:g}s"
            )


class Ocr(Protocol):
    def image_text(self, image: Any, subject: str, timeout_s: float | None = None) -> str: ...


def decode_text(data: bytes, object_id: str, charset: str | None = None) -> str:
    """Text in any Unicode encoding with a byte-order mark, else ``charset``, else UTF-8; PermanentError otherwise."""
    return decode_any_text(data, object_id, STAGE, charset)


def html_text(data: bytes, object_id: str, charset: str | None = None, check: Callable[[], None] | None = None) -> str:
    """The visible text of an HTML page, one block per line (scripts, styles, head and SVG left out)."""
    return html_visible_text(decode_text(data, object_id, charset), object_id, check)


def document_kind(data: bytes) -> str:
    """Which document format the bytes are (sniffed, not from the name): pdf, docx or html."""
    if data.startswith(PDF_MAGIC):
        return "pdf"
    if data.startswith(ZIP_MAGIC):
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            if "word/document.xml" in archive.namelist():
                return "docx"
    return "html"


class Extractor:
    """Pages of text from an object's bytes, bounded by ``limits`` and a per-object ``Budget``; in the light lane
    (``light`` given) an object over a light limit raises HeavyObject as soon as that shows."""

    def __init__(self, ocr: Ocr, limits: Limits, light: LightLimits | None = None) -> None:
        self.ocr = ocr
        self.limits = limits
        self.light = light

    def pages(self, kind: int, data: bytes, subject: str, content_type: str, budget: Budget) -> Iterator[Page]:
        """The object's pages, lazily: a caller that stops early never extracts the rest."""
        charset = charset_of(content_type)
        if kind == MediaKind.MEDIA_KIND_IMAGE:
            yield Page(0, self.image_text(data, subject, budget))
        elif kind == MediaKind.MEDIA_KIND_DOCUMENT:
            yield from self._document(data, subject, charset, budget)
        else:
            yield Page(0, self._text(data, subject, charset, budget))

    def _text(self, data: bytes, subject: str, charset: str | None, budget: Budget) -> str:
        text = decode_text(data, subject, charset)
        root = markup_root(text, head_chars=None)
        if root == "svg":  # an image: its markup and scripts are never text to index
            raise PermanentError(
                STAGE,
                subject,
                "SVG markup labelled as text (SVG is indexed as an image, never as markup)",
                "upload it again, without anything long before its <svg> root, or as PNG",
            )
        if is_html(root):
            text = html_visible_text(text, subject, budget.check)
        return self._capped(text, subject)

    def _document(self, data: bytes, subject: str, charset: str | None, budget: Budget) -> Iterator[Page]:
        try:
            kind = document_kind(data)
        except zipfile.BadZipFile as exc:
            raise PermanentError(STAGE, subject, f"corrupt ZIP container ({exc})", "re-upload the file") from exc
        if kind == "pdf":
            yield from self.pdf_pages(data, subject, budget)
        elif kind == "docx":
            yield Page(0, self._docx(data, subject, budget))
        else:
            yield Page(0, self._capped(html_text(data, subject, charset, budget.check), subject))

    def _docx(self, data: bytes, subject: str, budget: Budget) -> str:
        if self.light is not None:  # its body's size from the ZIP directory, nothing unpacked
            self.light.over(subject, "MAX_BYTES", docx_body_bytes(data), self.light.max_bytes, "bytes of DOCX body")
        parts: list[str] = []
        size = 0
        for paragraph in docx_paragraphs(data, subject, self.limits.max_unpacked_bytes, budget.check):
            parts.append(paragraph)
            size += len(paragraph) + 1
            self._capped_size(size, subject)
        return "\n".join(parts)

    def pdf_pages(self, data: bytes, subject: str, budget: Budget) -> Iterator[Page]:
        """Each page's text layer; a page without one is rendered (200 dpi, at most max_ocr_pixels) and OCR'd unless
        it is blank. The page count and the pages that need OCR are checked before any page is read. Every pdfium
        call holds PDFIUM_LOCK; OCR does not."""
        import pypdfium2 as pdfium

        with PDFIUM_LOCK:
            try:
                pdf = pdfium.PdfDocument(data)
            except pdfium.PdfiumError as exc:
                raise PermanentError(STAGE, subject, f"not a readable PDF ({exc})", "re-export the PDF") from exc
        try:
            with PDFIUM_LOCK:
                self._check_pdf_cost(pdf, subject)
                pages = len(pdf)
            ocr_pages = ocr_pixels = 0
            for number in range(1, pages + 1):
                budget.check()
                with PDFIUM_LOCK:
                    page = pdf[number - 1]
                    try:
                        text = _text_layer(page)
                        image = None if text.strip() else self._page_image(page)
                    finally:
                        page.close()
                if image is not None and is_blank(image):
                    image = None
                if image is not None:
                    ocr_pages += 1
                    self._check_ocr_pages(ocr_pages, pages, subject)
                    text = self._ocr(image, subject, budget, ocr_pixels)
                    ocr_pixels += image.width * image.height
                yield Page(number, text)
        finally:
            with PDFIUM_LOCK:
                pdf.close()

    def _page_image(self, page: Any) -> Any:
        """The page rendered for OCR as a PIL image that holds no pdfium memory, or None when the page has no
        objects: an empty page costs no render and no OCR run (issue 19: 300 empty pages took 111 s of OCR). The
        caller holds PDFIUM_LOCK."""
        import pypdfium2.raw as pdfium_c

        if pdfium_c.FPDFPage_CountObjects(page) == 0:
            return None
        bitmap = page.render(scale=self._ocr_scale(*page.get_size()))
        try:
            return bitmap.to_pil().copy()  # to_pil may share the bitmap's buffer, freed by close()
        finally:
            bitmap.close()

    def _ocr_scale(self, width: float, height: float) -> float:
        """The render scale of a page of ``width`` x ``height`` points (1/72 inch) for OCR."""
        return min(OCR_DPI / 72, _fit_scale(width, height, self.limits.max_ocr_pixels))

    def _ocr_pixels(self, width: float, height: float) -> int:
        scale = self._ocr_scale(width, height)
        return math.ceil(width * scale) * math.ceil(height * scale)

    def _check_pdf_cost(self, pdf: Any, subject: str) -> None:
        """Before any page is read: pages, and the pages that surely need OCR, within the limits (PermanentError)
        and, in the light lane, within its limits (HeavyObject)."""
        if len(pdf) > self.limits.max_pages:
            raise PermanentError(
                STAGE,
                subject,
                f"{len(pdf)} pages exceed the limit of {self.limits.max_pages}",
                "split the document or raise MMRAG_MAX_PAGES",
            )
        to_ocr = _pages_to_ocr(pdf, self.limits.max_ocr_pages)
        self._check_ocr_pages(len(to_ocr), len(pdf), subject)
        if self.light is not None:  # after the hard limits: what neither lane takes goes to the DLQ from here
            self.light.over(subject, "MAX_PAGES", len(pdf), self.light.max_pages, "pages")
            pixels = sum(self._ocr_pixels(*pdf.get_page_size(i)) for i in to_ocr)
            self.light.over(subject, "MAX_OCR_PIXELS", pixels, self.light.max_ocr_pixels, "pixels to OCR")

    def _check_ocr_pages(self, count: int, pages: int, subject: str) -> None:
        if count > self.limits.max_ocr_pages:
            raise PermanentError(
                STAGE,
                subject,
                f"more than MMRAG_MAX_OCR_PAGES={self.limits.max_ocr_pages} of its {pages} pages need OCR "
                "(no text layer)",
                "upload the document with a text layer (OCR it first), split it, or raise MMRAG_MAX_OCR_PAGES",
            )

    def _ocr(self, image: Any, subject: str, budget: Budget, pixels_before: int = 0) -> str:
        """OCR within what is left of the budget; in the light lane only while the object's OCR'd pixels stay within
        its limit, and an OCR run cut short by the light lane's time is that lane's HeavyObject, not a failure."""
        if self.light is not None:
            pixels = pixels_before + image.width * image.height
            self.light.over(subject, "MAX_OCR_PIXELS", pixels, self.light.max_ocr_pixels, "pixels to OCR")
        try:
            return self.ocr.image_text(image, subject, budget.remaining())
        except PermanentError:
            budget.check()
            raise

    def image_text(self, data: bytes, subject: str, budget: Budget) -> str:
        """OCR text of an image (SVG rasterized first), scaled down to at most max_ocr_pixels; none of a blank one
        (the vision group refuses it)."""
        image = decode_image(data, subject, STAGE)
        if is_blank(image):
            return ""
        pixels = image.width * image.height
        if pixels > self.limits.max_ocr_pixels:
            factor = math.sqrt(self.limits.max_ocr_pixels / pixels)
            image = image.resize((max(1, int(image.width * factor)), max(1, int(image.height * factor))))
        return self._ocr(image, subject, budget)

    def _capped(self, text: str, subject: str) -> str:
        self._capped_size(len(text), subject)
        return text

    def _capped_size(self, size: int, subject: str) -> None:
        if size > self.limits.max_text_chars:
            raise PermanentError(
                STAGE,
                subject,
                f"more than {self.limits.max_text_chars} characters of text",
                "split the document or raise MMRAG_MAX_TEXT_CHARS",
            )


def _text_layer(page: Any) -> str:
    textpage = page.get_textpage()
    try:
        return str(textpage.get_text_range())
    finally:
        textpage.close()


def _pages_to_ocr(pdf: Any, enough: int) -> list[int]:
    """The pages (0-based) that surely need OCR, found without reading any text or rendering (stops past
    ``enough``): pages whose top-level objects are images or drawings but neither text nor forms (a form may hold
    text). A lower bound: text objects holding only spaces are found out while extracting."""
    import pypdfium2.raw as pdfium_c

    found: list[int] = []
    for number in range(len(pdf)):
        page = pdf[number]
        kinds = {
            pdfium_c.FPDFPageObj_GetType(pdfium_c.FPDFPage_GetObject(page, i))
            for i in range(pdfium_c.FPDFPage_CountObjects(page))
        }
        page.close()
        if kinds and not kinds & {pdfium_c.FPDF_PAGEOBJ_TEXT, pdfium_c.FPDF_PAGEOBJ_FORM}:
            found.append(number)
            if len(found) > enough:
                break
    return found


def _fit_scale(width: float, height: float, max_pixels: int) -> float:
    """The largest scale whose rendering (each side rounded up) stays within ``max_pixels``:
    (w*s + 1)(h*s + 1) <= max_pixels, solved for s."""
    w, h = max(width, 1.0), max(height, 1.0)
    return (-(w + h) + math.sqrt((w + h) ** 2 + 4 * w * h * (max_pixels - 1))) / (2 * w * h)


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

    def image_text(self, image: Any, subject: str, timeout_s: float | None = None) -> str:
        """The words in ``image``; PermanentError naming ``subject`` when OCR runs past its timeout (the setting, or
        what is left of the object's budget when that is less)."""
        import pytesseract

        timeout = self.timeout_s if timeout_s is None else min(self.timeout_s, timeout_s)
        if timeout <= 0:
            raise PermanentError(
                STAGE, subject, "no time left of its extraction budget for OCR", "raise MMRAG_EXTRACT_BUDGET_S"
            )
        try:
            return str(pytesseract.image_to_string(image, lang=self.languages, timeout=timeout))
        except RuntimeError as exc:  # pytesseract raises RuntimeError on its timeout
            raise PermanentError(
                STAGE,
                subject,
                f"OCR gave up after {timeout:g}s ({exc})",
                "raise MMRAG_OCR_TIMEOUT_S / MMRAG_EXTRACT_BUDGET_S or upload a smaller image",
            ) from exc
