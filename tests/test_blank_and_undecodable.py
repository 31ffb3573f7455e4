"""Inputs a search system must not index as a guess: an image that renders blank (an SVG of only a script or
metadata, a canvas of one colour) is no image vector but a dead letter naming what to do, and text that is not
UTF-8 and reads with no confidence in any legacy charset (stray bytes, damaged UTF-8) is refused naming the encoding
problem, while real legacy-charset text (a cp1252 French page) is still read and indexed.

Real bytes go through the routing the normalizer does (sniff) and the embedders' handlers; the stack test in
test_odd_inputs_on_stack.py runs the same inputs through the deployed pipeline."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from consumers.text_embedder.handler import TextEmbedder, TextEmbedderSettings
from consumers.vision_embedder.handler import VisionEmbedder, VisionEmbedderSettings
from mmrag.clip import ClipEncoder
from mmrag.errors import PermanentError
from mmrag.messages import Envelope, Output
from mmrag.pb.events_pb2 import EmbeddingBatch, MediaKind, ObjectEvent
from mmrag.text_encoder import MiniLMEncoder
from producers.content_sniffing import sniff
from tests.documents import circle_png, png_bytes
from tests.test_odd_inputs import SVG, RecordingOcr, RecordingStore

pytestmark = pytest.mark.unit

TEXT, IMAGE = MediaKind.MEDIA_KIND_TEXT, MediaKind.MEDIA_KIND_IMAGE
SVG_NS = 'xmlns="http://www.w3.org/2000/svg"'
BLANK = {
    "script.svg": f'<svg {SVG_NS}><script>document.title = "PAYLOAD"</script></svg>'.encode(),
    "metadata.svg": (
        f'<?xml version="1.0"?><svg {SVG_NS} width="300" height="200"><title>Roadmap</title><desc>Q3</desc>'
        "<metadata><rdf>about</rdf></metadata></svg>"
    ).encode(),
    "hidden.svg": f'<svg {SVG_NS} width="300" height="200"><text y="50" visibility="hidden">X</text></svg>'.encode(),
    "white.png": png_bytes(Image.new("RGB", (640, 480), "white")),
    "transparent.png": png_bytes(Image.new("RGBA", (64, 64), (10, 200, 30, 0))),  # flattened onto white
    "navy.jpg": png_bytes(Image.new("RGB", (800, 600), (0, 0, 128)), "JPEG", quality=85),
}


def dotted_png() -> bytes:
    img = Image.new("RGB", (64, 64), "white")
    img.putpixel((40, 20), (250, 250, 250))  # one faint pixel is content: not blank
    return png_bytes(img)


VISIBLE = {"diagram.svg": SVG, "circle.png": circle_png(), "dot.png": dotted_png()}
FRENCH = (
    "La crème brûlée se sert froide ; le café crème, chaud. « Voilà ! » dit la pâtissière, "
    "et l’élève répond : “Déjà prêt – à bientôt…” Prix : 4,50 € la part, à 4 °C au réfrigérateur.\n"
) * 3
# What issue 19 saw indexed as 'café crème brûlée ÿþ': not UTF-8, and no legacy charset reads it with confidence.
STRAY_BYTES = b"caf\xe9 cr\xe8me br\xfbl\xe9e \xff\xfe"
DAMAGED_UTF8 = FRENCH.encode().replace(b" froide", b" \xff\xfefroide", 1)  # two damaged bytes in UTF-8
DAMAGED_AT = FRENCH.encode().index(b" froide") + 1


def envelopes(objects: dict[str, bytes], kind: int, content_type: str = "") -> list[Envelope[ObjectEvent]]:
    events = [
        ObjectEvent(
            object_id=f"b/{key}", bucket="b", key=key, size=len(data), media_kind=kind, content_type=content_type
        )
        for key, data in objects.items()
    ]
    return [Envelope(e.object_id, e, {}, "objects.v1", 0, n, 0) for n, e in enumerate(events)]


@pytest.fixture(scope="module")
def vision(clip_dir: Path) -> VisionEmbedder:
    settings = VisionEmbedderSettings(decode_workers=1, fetch_workers=1)
    embedder = VisionEmbedder(settings, RecordingStore({**BLANK, **VISIBLE}), ClipEncoder(clip_dir, device="cpu"))
    embedder.warm_up()
    return embedder


@pytest.fixture(scope="module")
def text_embedder() -> tuple[TextEmbedder, RecordingOcr]:
    ocr = RecordingOcr()
    objects = {**BLANK, "french.txt": FRENCH.encode("cp1252"), "stray.txt": STRAY_BYTES, "damaged.txt": DAMAGED_UTF8}
    embedder = TextEmbedder(TextEmbedderSettings(max_batch=8), RecordingStore(objects), MiniLMEncoder(), None, ocr)
    embedder.warm_up()
    return embedder, ocr


def test_blank_images_are_dead_letters_not_image_vectors(vision: VisionEmbedder) -> None:
    assert all(sniff(data[:8192]).media_kind == IMAGE for data in {**BLANK, **VISIBLE}.values())
    results = dict(zip([*BLANK, *VISIBLE], vision.handle(envelopes({**BLANK, **VISIBLE}, IMAGE)), strict=True))
    for key in BLANK:
        error = results[key]
        assert isinstance(error, PermanentError), key
        assert (error.stage, error.subject) == ("vision_embedder", f"b/{key}")
        assert "renders blank" in error.problem and "nothing visible to index" in error.problem
        assert error.fix.startswith("upload the image with visible content")
    assert "every pixel is #ffffff" in str(results["script.svg"])  # the raster flattened onto white
    for key in VISIBLE:
        [output] = results[key]  # type: ignore[misc]
        assert isinstance(output, Output) and isinstance(output.value, EmbeddingBatch), key
        assert output.key == f"b/{key}" and len(output.value.chunks[0].vector) == vision.encoder.dim


def test_blank_images_are_not_read_for_words(text_embedder: tuple[TextEmbedder, RecordingOcr]) -> None:
    """The text group finds no words in a blank image without running OCR: the vision group's dead letter is the
    image's only one."""
    embedder, ocr = text_embedder
    assert embedder.handle(envelopes(BLANK, IMAGE)) == [[] for _ in BLANK]
    assert ocr.sizes == []


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (STRAY_BYTES, "read as cp1252 only 67% of its non-ASCII characters are text"),
        (b"Partitions are ordered logs \xff\xfe of records.\n" * 20, "only 0% of its non-ASCII characters are text"),
        (DAMAGED_UTF8, f"damaged UTF-8 (byte 0xFF at offset {DAMAGED_AT}: invalid start byte"),
    ],
)
def test_text_without_a_confident_encoding_is_refused_naming_the_problem(data: bytes, problem: str) -> None:
    found = sniff(data[:8192])
    assert found.media_kind == MediaKind.MEDIA_KIND_UNSUPPORTED
    assert found.reason.startswith("undecodable text: ") and problem in found.reason
    assert found.fix.startswith("save it as UTF-8")


@pytest.mark.parametrize("charset", ["cp1252", "latin-1"])
def test_text_embedder_refuses_a_legacy_label_it_cannot_read_with_confidence(
    text_embedder: tuple[TextEmbedder, RecordingOcr], charset: str
) -> None:
    """The label an older normalizer gave these bytes (or a replay carries) is checked on the whole object."""
    embedder, _ = text_embedder
    objects = {"stray.txt": STRAY_BYTES, "damaged.txt": DAMAGED_UTF8}
    stray, damaged = embedder.handle(envelopes(objects, TEXT, f"text/plain; charset={charset}"))
    assert isinstance(stray, PermanentError) and stray.subject == "b/stray.txt"
    assert f"not UTF-8 (byte 0xE9 at offset 3: invalid continuation byte), and read as {charset} only 67%" in (
        stray.problem
    )
    assert "'ÿþ'" in stray.problem and stray.fix.startswith("save it as UTF-8")
    assert isinstance(damaged, PermanentError) and f"damaged UTF-8 (byte 0xFF at offset {DAMAGED_AT}" in damaged.problem


def test_french_in_cp1252_is_still_read_and_indexed(text_embedder: tuple[TextEmbedder, RecordingOcr]) -> None:
    data = FRENCH.encode("cp1252")
    found = sniff(data[:8192], "menu.txt")
    assert (found.media_kind, found.content_type) == (TEXT, "text/plain; charset=cp1252")
    embedder, _ = text_embedder
    [[output]] = embedder.handle(envelopes({"french.txt": data}, TEXT, found.content_type))
    assert isinstance(output, Output) and isinstance(output.value, EmbeddingBatch)
    text = " ".join(c.text for c in output.value.chunks)
    assert "crème brûlée" in text and "pâtissière" in text and "4,50 €" in text and "«" in text
