"""Odd inputs read as what they are (UTF-16, legacy charsets, HTML at any depth, SVG as an image, never its script),
and bounded work: over-size, over-chunk, over-page, zip-bomb and over-budget objects are refused naming the limit,
decided before the object is materialized (tracemalloc peaks bounded, not timings)."""

from __future__ import annotations

import threading
import time
import tracemalloc
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from PIL import Image

from consumers.text_embedder.chunking import TooManyChunks, chunk_text, token_cap
from consumers.text_embedder.extract import Budget, Extractor, Limits, TesseractOcr
from consumers.text_embedder.handler import TextEmbedder, TextEmbedderSettings
from mmrag.errors import PermanentError
from mmrag.images import decode_image
from mmrag.messages import Envelope, Output
from mmrag.pb.events_pb2 import EmbeddingBatch, MediaKind, ObjectEvent
from mmrag.read_ahead import ReadAhead
from mmrag.svg import sanitized_svg
from mmrag.text_encoder import MiniLMEncoder
from producers.content_sniffing import sniff
from tests.documents import pdf_bytes, png_bytes, words_image, zip_bomb_docx

pytestmark = pytest.mark.unit

TEXT, DOC, IMAGE = MediaKind.MEDIA_KIND_TEXT, MediaKind.MEDIA_KIND_DOCUMENT, MediaKind.MEDIA_KIND_IMAGE
UNSUPPORTED = MediaKind.MEDIA_KIND_UNSUPPORTED
NESTED_HTML = ("<div>" * 5000 + "<p>deep visible words</p>" + "</div>" * 5000 + "<script>var x = 1;</script>").encode()
SVG = b"""<?xml version="1.0" encoding="UTF-8"?>
<!-- a diagram -->
<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink" width="600" height="200">
  <script>alert("SECRET SCRIPT TEXT")</script>
  <foreignObject width="100" height="100"><div>FOREIGN WORDS</div></foreignObject>
  <image href="/etc/passwd" width="10" height="10"/><image xlink:href="secret.png" width="10" height="10"/>
  <rect width="600" height="200" fill="white"/>
  <text x="10" y="140" font-size="72">KAFKA SVG</text>
</svg>"""


class RecordingOcr:
    """Tesseract, recording each image it was given."""

    def __init__(self) -> None:
        self.engine = TesseractOcr()
        self.sizes: list[tuple[int, int]] = []

    def image_text(self, image: Any, subject: str, timeout_s: float | None = None) -> str:
        self.sizes.append(image.size)
        return self.engine.image_text(image, subject, timeout_s)


class RecordingStore:
    """An object store in memory that records every read (the S3 adapter is tested against local S3 elsewhere)."""

    def __init__(self, objects: dict[str, bytes]) -> None:
        self.objects = objects
        self.reads: list[str] = []

    def get(self, bucket: str, key: str, version_id: str = "") -> bytes:
        self.reads.append(key)
        return self.objects[key]


def pages(data: bytes, kind: int, content_type: str = "", limits: Limits | None = None, ocr: Any = None) -> list[str]:
    extractor = Extractor(ocr or RecordingOcr(), limits or Limits())
    return [p.text for p in extractor.pages(kind, data, "b/odd", content_type, Budget("b/odd", 600))]


@pytest.mark.parametrize(
    ("data", "kind", "content_type"),
    [
        ("\ufeffWörter in UTF-16".encode("utf-16-le"), TEXT, "text/plain; charset=utf-16le"),
        ("\ufeffWörter in UTF-16".encode("utf-16-be"), TEXT, "text/plain; charset=utf-16be"),
        ("\ufeffWörter in UTF-32".encode("utf-32-le"), TEXT, "text/plain; charset=utf-32le"),
        ("\ufeffWörter mit BOM".encode(), TEXT, "text/plain; charset=utf-8"),
        ("Grüße aus München, die Straße ist schön.".encode("cp1252"), TEXT, "text/plain; charset=cp1252"),
        ("Привет, как дела? Это тест кодировки.".encode("cp1251"), TEXT, "text/plain; charset=cp1251"),
        (b'{"name": "kafka", "partitions": 3}', TEXT, "text/plain; charset=utf-8"),
        (b"id,name\n1,kafka\n", TEXT, "text/plain; charset=utf-8"),
        (b'<?xml version="1.0"?><catalog><book>Kafka</book></catalog>', TEXT, "application/xml; charset=utf-8"),
        (NESTED_HTML, DOC, "text/html"),  # a fragment: no doctype, no <html>
        (b'<?xml version="1.0"?><html xmlns="http://www.w3.org/1999/xhtml"><body/></html>', DOC, "text/html"),
        (SVG, IMAGE, "image/svg+xml"),
        (b'<!DOCTYPE svg PUBLIC "-//W3C//DTD SVG 1.1//EN" "x.dtd"><svg/>', IMAGE, "image/svg+xml"),
        (
            "\ufeff<svg xmlns='http://www.w3.org/2000/svg'/>".encode("utf-16-le"),
            IMAGE,
            "image/svg+xml; charset=utf-16le",
        ),
    ],
)
def test_sniffing_reads_encodings_and_routes_markup_by_its_root(data: bytes, kind: int, content_type: str) -> None:
    found = sniff(data[:8192])
    assert (found.media_kind, found.content_type) == (kind, content_type)


@pytest.mark.parametrize(
    ("head", "why"),
    [
        (b"{\\rtf1\\ansi\\deff0 {\\fonttbl} Hello}", "RTF"),
        (b"%!PS-Adobe-3.0\n%%Pages: 1\n", "PostScript"),
        (b"\xff\xfe" + b"\x01\x00\x02\x00" * 8, "byte-order mark"),  # U+0001 U+0002: controls,
    ],
)
def test_textual_formats_with_control_words_are_refused_with_the_reason(head: bytes, why: str) -> None:
    found = sniff(head)
    assert found.media_kind == UNSUPPORTED and why in found.reason


def test_utf16_text_is_chunked_with_its_words() -> None:
    data = ("\ufeff" + "Kafka Streams verarbeitet Ereignisse. " * 40).encode("utf-16-le")
    [text] = pages(data, TEXT, sniff(data[:8192]).content_type)
    chunks = chunk_text(text, MiniLMEncoder().load_tokenizer(), 64, 8)
    assert len(chunks) > 1 and all("Kafka" in c.text or "Ereignisse" in c.text for c in chunks)
    assert text.startswith("Kafka Streams verarbeitet Ereignisse.")


def test_nested_html_gives_only_its_visible_text() -> None:
    assert pages(NESTED_HTML, DOC) == ["deep visible words"]
    assert pages(NESTED_HTML, TEXT) == ["deep visible words"]  # labelled text by an older producer: still HTML
    with pytest.raises(PermanentError, match="still .*% markup"):
        pages(b"<html><body>" + b"&lt;div class='x'&gt;&lt;/div&gt;" * 50 + b"</body></html>", DOC)


def test_svg_is_an_image_whose_script_is_never_text() -> None:
    ocr = RecordingOcr()
    [text] = pages(SVG, IMAGE, "image/svg+xml", ocr=ocr)
    assert "KAFKA SVG" in text and "SECRET" not in text and "FOREIGN" not in text
    assert max(ocr.sizes[0]) == 2048  # rasterized into the 2048 px box, aspect kept
    clean = sanitized_svg(SVG, "b/x.svg", "test")
    assert "script" not in clean and "foreignObject" not in clean and "passwd" not in clean and "secret" not in clean
    with pytest.raises(PermanentError, match="SVG markup labelled as text"):
        pages(SVG, TEXT)
    hidden = b"<!--" + b"x" * 9000 + b"-->" + SVG[SVG.index(b"<svg") :]  # its root past the sniffed 8 KiB
    assert sniff(hidden[:8192]).media_kind == TEXT
    with pytest.raises(PermanentError, match="SVG markup labelled as text"):
        pages(hidden, TEXT)
    with pytest.raises(PermanentError, match="not a well-formed SVG"):
        decode_image(b"<svg><g></svg>", "b/bad.svg", "test")


def test_svg_references_to_local_files_are_not_rendered(tmp_path: Any) -> None:
    red = tmp_path / "red.png"
    Image.new("RGB", (64, 64), "red").save(red)
    svg = f'<svg xmlns="http://www.w3.org/2000/svg" width="64" height="64"><image href="{red}" width="64" height="64"/>'
    image = decode_image((svg + "</svg>").encode(), "b/leak.svg", "test")
    assert image.getpixel((1000, 1000)) == (255, 255, 255)  # white background, no red from the local file


def test_over_token_text_stops_counting_at_the_cap_without_tokenizing_it_whole() -> None:
    tokenizer = MiniLMEncoder().load_tokenizer()
    text = "streaming events partition offsets " * 250_000  # 8.75 MB, ~1 M tokens
    tracemalloc.start()
    try:
        with pytest.raises(TooManyChunks) as over:
            chunk_text(text, tokenizer, 256, 32, max_chunks=20)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert token_cap(20, 256, 32) < over.value.tokens < 40_000  # one segment past the cap, not a million tokens
    assert peak < 20 << 20, peak  # whole-text offsets alone would be ~100 MB


def test_zip_bomb_docx_is_refused_from_its_directory_before_unpacking() -> None:
    data = zip_bomb_docx(96)
    assert len(data) < 1 << 20  # ~96 MB of body in well under 1 MB
    tracemalloc.start()
    try:
        with pytest.raises(PermanentError, match=r"word/document.xml unpacks to \d+ bytes, over the limit of 67108864"):
            pages(data, DOC)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20, peak


def test_over_page_pdf_is_refused_before_any_page_is_read() -> None:
    ocr = RecordingOcr()
    with pytest.raises(PermanentError, match="3 pages exceed the limit of 2") as err:
        pages(pdf_bytes(["one"], ["TWO", "THREE"]), DOC, limits=Limits(max_pages=2), ocr=ocr)
    assert ocr.sizes == [] and "MMRAG_MAX_PAGES" in err.value.fix


def test_extraction_over_its_time_budget_is_refused_naming_the_budget() -> None:
    ticks = iter(range(0, 10_000, 7))  # a clock that moves 7 s per look: the third page is past 20 s
    budget = Budget("b/slow.pdf", 20, clock=lambda: float(next(ticks)))
    extractor = Extractor(RecordingOcr(), Limits())
    read = []
    with pytest.raises(PermanentError, match="longer than its budget of 20s") as err:
        for page in extractor.pages(DOC, pdf_bytes(["a", "b", "c", "d", "e"]), "b/slow.pdf", "", budget):
            read.append(page.number)
    assert read == [1, 2] and err.value.subject == "b/slow.pdf" and "MMRAG_EXTRACT_BUDGET_S" in err.value.fix


def test_ocr_gets_at_most_the_pixel_cap() -> None:
    ocr = RecordingOcr()
    big = png_bytes(words_image("SCALED DOWN", size=(3000, 2000)))
    [text] = pages(big, IMAGE, limits=Limits(max_ocr_pixels=1_500_000), ocr=ocr)
    assert ocr.sizes[0][0] * ocr.sizes[0][1] <= 1_500_000 and "SCALED" in text
    pdf = pdf_bytes([], ["POSTER PAGE"])
    pages(pdf, DOC, limits=Limits(max_ocr_pixels=500_000), ocr=ocr)
    assert ocr.sizes[1][0] * ocr.sizes[1][1] <= 500_000


def test_read_ahead_keeps_the_bytes_in_flight_within_its_budget() -> None:
    sizes = [40, 40, 40, 100, 10]
    started: list[int] = []
    lock = threading.Lock()

    def read(i: int) -> bytes:
        with lock:
            started.append(i)
        return bytes(sizes[i])

    with ThreadPoolExecutor(4) as pool:
        reads = ReadAhead(pool, read, sizes, budget_bytes=90)
        time.sleep(0.05)
        assert sorted(started) == [0, 1] and reads.held_bytes == 80
        assert len(reads.result(0)) == 40
        reads.release(0)
        assert reads.held_bytes == 80  # object 2 queued in its place, object 3 (100) waits
        for i in (1, 2):
            reads.result(i)
            reads.release(i)
        assert reads.held_bytes == 100  # alone over the budget: still read, by itself
        assert len(reads.result(4)) == 10  # wanted now: queued past the budget
        reads.release(3)
        reads.release(4)
    assert sorted(started) == [0, 1, 2, 3, 4] and reads.held_bytes == 0


def test_text_embedder_refuses_over_size_objects_without_reading_them() -> None:
    settings = TextEmbedderSettings(max_text_bytes=1000, ocr_images=False, max_batch=4)
    store = RecordingStore({"small.txt": b"Kafka consumer groups share partitions."})
    embedder = TextEmbedder(settings, store, MiniLMEncoder(), None, RecordingOcr())  # type: ignore[arg-type]
    embedder.warm_up()
    events = [
        ObjectEvent(object_id="b/huge.txt", bucket="b", key="huge.txt", size=60 << 20, media_kind=TEXT),
        ObjectEvent(object_id="b/small.txt", bucket="b", key="small.txt", size=39, media_kind=TEXT),
    ]
    refused, indexed = embedder.handle(
        [Envelope(e.object_id, e, {}, "objects.v1", 0, n, 0) for n, e in enumerate(events)]
    )
    assert store.reads == ["small.txt"]
    assert isinstance(refused, PermanentError) and refused.subject == "b/huge.txt"
    assert "62914560 bytes is over the text limit of 1000 bytes" in refused.problem
    assert "MMRAG_MAX_TEXT_BYTES" in refused.fix
    assert isinstance(indexed, list) and isinstance(indexed[0], Output)
    batch = indexed[0].value
    assert isinstance(batch, EmbeddingBatch) and "consumer groups" in batch.chunks[0].text
