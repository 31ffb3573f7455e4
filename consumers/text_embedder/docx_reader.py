"""The paragraphs of a Word document, streamed: the body's size is checked before anything is unpacked (zip bombs), and
word/document.xml is parsed incrementally, each paragraph dropped once read, so memory follows the paragraph, not
the document. Paragraphs come in document order, table cells and text boxes included."""

from __future__ import annotations

import io
import zipfile
from collections.abc import Callable, Iterator
from typing import Any

from mmrag.errors import PermanentError

STAGE = "text_embedder"
BODY = "word/document.xml"
W = "{http://schemas.openxmlformats.org/wordprocessingml/2006/main}"
_PIECES = {f"{W}t": None, f"{W}tab": "\t", f"{W}br": "\n", f"{W}cr": "\n"}


def docx_paragraphs(
    data: bytes, subject: str, max_unpacked_bytes: int, check: Callable[[], None] | None = None
) -> Iterator[str]:
    """Each non-empty paragraph's text. PermanentError naming ``subject`` for a corrupt container, a missing body,
    or a body that would unpack to more than ``max_unpacked_bytes`` (checked from the directory, before reading;
    the images and other parts of the package are never unpacked)."""
    from lxml import etree

    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        unpacked = archive.getinfo(BODY).file_size  # the only entry read; zipfile never unpacks past it
        if unpacked > max_unpacked_bytes:
            raise PermanentError(
                STAGE,
                subject,
                f"{BODY} unpacks to {unpacked} bytes, over the limit of {max_unpacked_bytes} (a zip bomb?)",
                "split the document or raise MMRAG_MAX_UNPACKED_BYTES",
            )
        with archive.open(BODY) as body:
            parsed = etree.iterparse(
                body, events=("end",), tag=f"{W}p", resolve_entities=False, no_network=True, load_dtd=False
            )
            for _, paragraph in parsed:
                text = "".join(_PIECES.get(node.tag) or node.text or "" for node in paragraph.iter(*_PIECES))
                _forget(paragraph)
                if text.strip():
                    yield text
                if check is not None:
                    check()
    except (zipfile.BadZipFile, KeyError, etree.XMLSyntaxError, EOFError, zipfile.LargeZipFile) as exc:
        raise PermanentError(STAGE, subject, f"not a readable DOCX ({exc})", "re-save it as .docx") from exc


def docx_body_bytes(data: bytes) -> int:
    """What the body would unpack to, from the ZIP directory alone; 0 when unreadable (``docx_paragraphs`` then says
    why)."""
    try:
        return zipfile.ZipFile(io.BytesIO(data)).getinfo(BODY).file_size
    except (zipfile.BadZipFile, KeyError, zipfile.LargeZipFile, EOFError):
        return 0


def _forget(element: Any) -> None:
    """Drops a read paragraph and the siblings before it, so the parsed tree never grows with the document."""
    element.clear(keep_tail=True)
    while element.getprevious() is not None:
        del element.getparent()[0]
