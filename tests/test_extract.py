"""Extraction per content kind with the real libraries and Tesseract: text layers, OCR, visible HTML, DOCX."""

from __future__ import annotations

import pytest

from consumers.text_embedder.extract import (
    Budget,
    Extractor,
    Limits,
    Page,
    TesseractOcr,
    decode_text,
    document_kind,
    html_text,
)
from mmrag.errors import PermanentError
from mmrag.images import decode_image
from mmrag.pb.events_pb2 import MediaKind
from tests.documents import HTML, bomb_png, docx_bytes, pdf_bytes, png_bytes, words_image

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def ocr() -> TesseractOcr:
    engine = TesseractOcr()
    engine.warm_up()
    return engine


def extract_document(data: bytes, subject: str, ocr: TesseractOcr, max_pages: int) -> list[Page]:
    pages = Extractor(ocr, Limits(max_pages=max_pages)).pages(
        MediaKind.MEDIA_KIND_DOCUMENT, data, subject, "", budget()
    )
    return list(pages)


def image_pages(data: bytes, subject: str, ocr: TesseractOcr) -> list[Page]:
    return list(Extractor(ocr, Limits()).pages(MediaKind.MEDIA_KIND_IMAGE, data, subject, "", budget()))


def budget() -> Budget:
    return Budget("b/x", 600)


def test_html_keeps_visible_text_only() -> None:
    text = html_text(HTML, "b/page.html")
    assert text.splitlines() == ["Tide pools", "Sea anemones and starfish live in them.", "Visit at low tide"]
    assert "hidden" not in text and "Ignored title" not in text


def test_pdf_text_layer_per_page_and_ocr_for_scanned_pages(ocr: TesseractOcr) -> None:
    data = pdf_bytes(["Kafka transactions commit offsets.", "Second page about consumer lag."], ["INVOICE 4711"])
    assert document_kind(data) == "pdf"
    pages = extract_document(data, "b/doc.pdf", ocr, max_pages=10)
    assert [p.number for p in pages] == [1, 2, 3]
    assert "Kafka transactions commit offsets." in pages[0].text
    assert "consumer lag" in pages[1].text
    assert "INVOICE 4711" in pages[2].text  # no text layer: rendered and OCR'd


def test_pdf_page_limit_and_corrupt_pdf(ocr: TesseractOcr) -> None:
    with pytest.raises(PermanentError, match="exceed the limit of 1"):
        extract_document(pdf_bytes(["one", "two"]), "b/long.pdf", ocr, max_pages=1)
    with pytest.raises(PermanentError, match="not a readable PDF") as err:
        extract_document(b"%PDF-1.7 truncated garbage", "b/bad.pdf", ocr, max_pages=10)
    assert err.value.subject == "b/bad.pdf" and err.value.stage == "text_embedder"


def test_docx_paragraphs_and_tables(ocr: TesseractOcr) -> None:
    data = docx_bytes(["Quarterly report", "Revenue grew in the north region."], ["cell alpha", "cell beta"])
    assert document_kind(data) == "docx"
    [page] = extract_document(data, "b/r.docx", ocr, max_pages=10)
    assert page.text.splitlines() == [
        "Quarterly report",
        "Revenue grew in the north region.",
        "cell alpha",
        "cell beta",
    ]


def test_ocr_reads_words_in_an_image(ocr: TesseractOcr) -> None:
    [page] = image_pages(png_bytes(words_image("HELLO KAFKA STREAMS")), "b/shot.png", ocr)
    assert "HELLO KAFKA STREAMS" in page.text


@pytest.mark.parametrize(
    ("mode", "fmt"), [("RGBA", "PNG"), ("P", "PNG"), ("CMYK", "JPEG"), ("I;16", "PNG"), ("L", "GIF")]
)
def test_decode_image_handles_modes(mode: str, fmt: str) -> None:
    img = decode_image(png_bytes(words_image("MODE", mode=mode), fmt), "b/x", "test")
    assert img.mode == "RGB" and img.size == (900, 160)
    assert img.getpixel((5, 5)) == pytest.approx((255, 255, 255), abs=8)  # white stays white (alpha, 16-bit)


def test_decode_image_draft_mode_and_refusals() -> None:
    big = png_bytes(words_image("DRAFT", size=(2400, 1600)), "JPEG", quality=90)
    # draft mode decodes at 1/4 scale: the smallest JPEG scale that keeps both sides >= 256
    assert decode_image(big, "b/big.jpg", "test", min_side=256).size == (600, 400)
    assert decode_image(big, "b/big.jpg", "test").size == (2400, 1600)
    with pytest.raises(PermanentError, match="cannot decode image"):
        decode_image(b"GIF89a broken", "b/bad.gif", "test")
    with pytest.raises(PermanentError, match="cannot decode image"):
        decode_image(big[: len(big) // 2], "b/truncated.jpg", "test")
    for side in (9000, 20000):  # over the limit, and over Pillow's own hard limit
        with pytest.raises(PermanentError, match="DecompressionBombError"):
            decode_image(bomb_png(side), "b/bomb.png", "test")


def test_text_decoding_refuses_binary_and_other_encodings() -> None:
    assert decode_text("\ufeffhello".encode(), "b/k") == "hello"
    with pytest.raises(PermanentError, match="not UTF-8"):
        decode_text("caf\xe9".encode("latin-1"), "b/k")
    with pytest.raises(PermanentError, match="NUL"):
        decode_text(b"a\x00b", "b/k")
