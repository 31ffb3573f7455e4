"""Heavy work is bounded per object (issue 19: a 37 KB PDF of 300 empty pages was OCR'd page by page for 111.5 s
before 'no text to index'): empty pages cost no OCR at all, and a PDF needing more OCR than MMRAG_MAX_OCR_PAGES is
refused naming the setting, before any OCR when its page objects show it, else at the first page past the limit."""

from __future__ import annotations

from typing import Any

import pytest

from consumers.text_embedder.extract import Budget, Extractor, Limits, TesseractOcr
from consumers.text_embedder.handler import TextEmbedder, TextEmbedderSettings
from mmrag.errors import PermanentError
from mmrag.messages import Envelope
from mmrag.pb.events_pb2 import MediaKind, ObjectEvent
from mmrag.text_encoder import MiniLMEncoder
from tests.documents import empty_pdf, scanned_pdf

pytestmark = pytest.mark.unit
DOC = MediaKind.MEDIA_KIND_DOCUMENT


class CountingOcr:
    """Tesseract, counting its runs."""

    def __init__(self) -> None:
        self.engine = TesseractOcr()
        self.runs = 0

    def image_text(self, image: Any, subject: str, timeout_s: float | None = None) -> str:
        self.runs += 1
        return self.engine.image_text(image, subject, timeout_s)


class OneObjectStore:
    def __init__(self, data: bytes) -> None:
        self.data = data

    def get(self, bucket: str, key: str, version_id: str = "") -> bytes:
        return self.data


def pdf_texts(data: bytes, ocr: CountingOcr, limits: Limits) -> list[str]:
    pages = Extractor(ocr, limits).pages(DOC, data, "b/book.pdf", "application/pdf", Budget("b/book.pdf", 600))
    return [page.text for page in pages]


def test_300_empty_pages_cost_no_ocr_and_are_refused_as_without_text() -> None:
    data = empty_pdf(300)
    ocr = CountingOcr()
    assert pdf_texts(data, ocr, Limits(max_ocr_pages=2)) == [""] * 300
    assert ocr.runs == 0  # not one of them is rendered for Tesseract, let alone over the limit of 2

    settings = TextEmbedderSettings(ocr_images=False)
    embedder = TextEmbedder(settings, OneObjectStore(data), MiniLMEncoder(), None, ocr)  # type: ignore[arg-type]
    embedder.warm_up()
    event = ObjectEvent(object_id="b/empty.pdf", bucket="b", key="empty.pdf", size=len(data), media_kind=DOC)
    [result] = embedder.handle([Envelope(event.object_id, event, {}, "objects.v1", 0, 0, 0)])
    assert isinstance(result, PermanentError) and result.subject == "b/empty.pdf"
    assert "no text to index" in result.problem and ocr.runs == 0


def test_a_scanned_book_over_the_ocr_page_limit_is_refused_before_any_ocr() -> None:
    ocr = CountingOcr()
    with pytest.raises(PermanentError) as err:
        pdf_texts(scanned_pdf(12), ocr, Limits(max_ocr_pages=3))
    assert ocr.runs == 0
    assert err.value.subject == "b/book.pdf" and err.value.stage == "text_embedder"
    assert "more than MMRAG_MAX_OCR_PAGES=3 of its 12 pages need OCR" in err.value.problem
    assert "raise MMRAG_MAX_OCR_PAGES" in err.value.fix and "text layer" in err.value.fix


def test_pages_whose_need_for_ocr_shows_only_when_read_stop_at_the_limit() -> None:
    ocr = CountingOcr()  # each page holds a text object of one space: counted as text until extracted
    read = []
    with pytest.raises(PermanentError, match="more than MMRAG_MAX_OCR_PAGES=2 of its 5 pages need OCR"):
        for page in Extractor(ocr, Limits(max_ocr_pages=2)).pages(
            DOC, scanned_pdf(5, "PAGE WORDS", hidden_space=True), "b/scan.pdf", "", Budget("b/scan.pdf", 600)
        ):
            read.append(page.text)
    assert ocr.runs == 2 and len(read) == 2 and all("PAGE WORDS" in text for text in read)


def test_scanned_pages_within_the_limit_are_read_by_ocr() -> None:
    ocr = CountingOcr()
    texts = pdf_texts(scanned_pdf(3, "HARBOUR CHART"), ocr, Limits(max_ocr_pages=3))
    assert ocr.runs == 3 and all("HARBOUR CHART" in text for text in texts)


def test_max_ocr_pages_is_a_setting_of_the_text_embedder(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MMRAG_MAX_OCR_PAGES", "7")
    assert TextEmbedderSettings().limits.max_ocr_pages == 7
