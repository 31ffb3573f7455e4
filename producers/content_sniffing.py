"""What an object holds, decided from its first bytes (magic numbers via puremagic, then a text check), never from
the key's extension alone: a `.txt` holding a PNG is an image, an `.md` holding an ELF binary is unsupported.

Text is any Unicode encoding with a byte-order mark (UTF-8, UTF-16, UTF-32), UTF-8 without one, or a legacy
charset (cp1252, cp1251, Shift-JIS, ...) detected by charset-normalizer and read with confidence (damaged UTF-8 and
readings with stray characters are refused, not guessed); the charset travels in the content type.
Markup is routed by its root element: HTML is a document (its visible text is extracted), SVG is an image
(rasterized, never indexed as markup or scripts), other XML, JSON, CSV and YAML are text."""

from __future__ import annotations

import mimetypes
from dataclasses import dataclass

import puremagic

from mmrag.pb.events_pb2 import MediaKind
from mmrag.text_decoding import (
    RESAVE_AS_UTF8,
    bom_charset,
    damaged_utf8,
    has_stray_controls,
    is_html,
    legacy_text_problem,
    markup_root,
)

SNIFF_BYTES = 8192
ZIP_MAGIC = b"PK\x03\x04"
DOCX_MIME = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
SVG_MIME = "image/svg+xml"
UPLOAD_SUPPORTED = "upload text, markdown, PDF, HTML, DOCX or an image"
TEXTUAL_APPLICATION_TYPES = frozenset({"application/json", "application/xml", "application/yaml", "application/x-yaml"})
PREFERRED_LEGACY = "cp1252"  # Western European: what most legacy text is, and what its lookalikes are read as
# Textual formats whose words sit among control words: indexing them raw would index the markup.
REFUSED_TEXT = (("{\\rtf", "RTF (save it as DOCX or PDF)"), ("%!PS", "PostScript (save it as PDF)"))
UNICODE_NAMES = {
    "utf-8": "utf-8",
    "utf-16-le": "utf-16le",
    "utf-16-be": "utf-16be",
    "utf-32-le": "utf-32le",
    "utf-32-be": "utf-32be",
}


@dataclass(frozen=True)
class Sniffed:
    media_kind: MediaKind
    content_type: str
    reason: str = ""  # why it is unsupported
    fix: str = UPLOAD_SUPPORTED  # what to do about it

    @property
    def supported(self) -> bool:
        return self.media_kind != MediaKind.MEDIA_KIND_UNSUPPORTED


def sniff(head: bytes, key: str = "") -> Sniffed:
    """Routes an object by its first bytes: text, image, document (PDF, HTML, DOCX) or unsupported (with why). The
    bytes decide the kind; the key's extension only names the format of plain text (`.md` -> text/markdown, `.csv`
    -> text/csv, `.json` -> application/json), which bytes cannot tell apart, so content-type filters find it."""
    sniffed = _sniff(head)
    if sniffed.media_kind == MediaKind.MEDIA_KIND_TEXT and sniffed.content_type.startswith("text/plain;"):
        named = _textual_type(key)
        if named:
            return Sniffed(sniffed.media_kind, named + sniffed.content_type[len("text/plain") :])
    return sniffed


def _textual_type(key: str) -> str | None:
    """The text format the key's extension names (text/*, JSON, YAML, XML), or None."""
    guessed, encoding = mimetypes.guess_type(key.rsplit("/", 1)[-1], strict=False)
    if guessed is None or encoding is not None:
        return None
    textual = guessed.startswith("text/") or guessed in TEXTUAL_APPLICATION_TYPES
    return guessed if textual and guessed != "text/html" else None


def _sniff(head: bytes) -> Sniffed:
    if not head:
        return _unsupported("", "the object is empty")
    bom = bom_charset(head)
    if bom is not None:  # before the magic numbers: puremagic calls UTF-16 text binary
        codec, start = bom
        text = _decoded_head(head[start:], codec)
        if text is None:
            return _unsupported("application/octet-stream", f"binary content after a {codec} byte-order mark")
        return _text_kind(text, UNICODE_NAMES[codec])
    mime = _magic_mime(head)
    if mime.startswith("image/") and "svg" not in mime:
        return Sniffed(MediaKind.MEDIA_KIND_IMAGE, mime)
    if mime == "application/pdf":
        return Sniffed(MediaKind.MEDIA_KIND_DOCUMENT, mime)
    if head.startswith(ZIP_MAGIC):
        if b"word/" in head:
            return Sniffed(MediaKind.MEDIA_KIND_DOCUMENT, DOCX_MIME)
        return _unsupported("application/zip", "a ZIP archive that is not a DOCX")
    text = _decoded_head(head, "utf-8")
    if text is not None:
        return _text_kind(text, "utf-8")
    broken = damaged_utf8(head)
    if broken is not None and not _has_control_bytes(head):
        return _unsupported("application/octet-stream", f"undecodable text: damaged UTF-8 ({broken})", RESAVE_AS_UTF8)
    legacy = _legacy_charset(head)
    if legacy is not None:
        return _legacy_text(head, legacy)
    kind = mime or "application/octet-stream"
    return _unsupported(kind, f"binary content ({kind}) that is no image, PDF or DOCX")


def _unsupported(content_type: str, reason: str, fix: str = UPLOAD_SUPPORTED) -> Sniffed:
    return Sniffed(MediaKind.MEDIA_KIND_UNSUPPORTED, content_type, reason, fix)


def _legacy_text(head: bytes, charset: str) -> Sniffed:
    """Text in a legacy charset when its reading is confident; refused (not guessed) otherwise."""
    text = _decoded_head(head, charset)
    if text is None:  # undefined bytes or stray controls in this charset: charset-normalizer was wrong
        text = head.decode(charset, errors="replace")
    problem = legacy_text_problem(head, text, charset)
    if problem is not None:
        return _unsupported("application/octet-stream", f"undecodable text: {problem}", RESAVE_AS_UTF8)
    return _text_kind(text, charset)


def _text_kind(text: str, charset: str) -> Sniffed:
    """Text by its markup: SVG is an image, HTML a document, anything else (XML, JSON, CSV, prose) text."""
    for prefix, name in REFUSED_TEXT:
        if text.lstrip("\ufeff \t\r\n").startswith(prefix):
            return _unsupported("application/octet-stream", f"{name}: its words sit among control words")
    root = markup_root(text)
    suffix = "" if charset == "utf-8" else f"; charset={charset}"
    if root == "svg":
        return Sniffed(MediaKind.MEDIA_KIND_IMAGE, SVG_MIME + suffix)
    if is_html(root):
        return Sniffed(MediaKind.MEDIA_KIND_DOCUMENT, "text/html" + suffix)
    subtype = "application/xml" if root else "text/plain"
    return Sniffed(MediaKind.MEDIA_KIND_TEXT, f"{subtype}; charset={charset}")


def _magic_mime(head: bytes) -> str:
    try:
        return str(puremagic.from_string(head, mime=True))
    except (puremagic.PureError, ValueError):
        return ""


def _decoded_head(head: bytes, codec: str) -> str | None:
    """The head as text in ``codec`` without NULs or stray control bytes; a character cut at the end is fine."""
    for cut in range(4):
        try:
            text = head[: len(head) - cut].decode(codec)
            break
        except UnicodeDecodeError:
            continue
    else:
        return None
    return None if has_stray_controls(text) else text


def _has_control_bytes(head: bytes) -> bool:
    """NULs or control bytes that no text in an ASCII-compatible charset holds."""
    return any(byte < 32 and chr(byte) not in "\t\n\x0c\r\x1b" for byte in head)


def _legacy_charset(head: bytes) -> str | None:
    """A single- or multi-byte legacy charset for text that is not UTF-8: cp1252 whenever charset-normalizer counts
    it among the candidates (short Western texts are ambiguous between cp125x pages), else its best guess. UTF-16/32
    without a byte-order mark is not guessed: binary data too often passes for it."""
    if _has_control_bytes(head):
        return None
    import charset_normalizer

    matches = [m for m in charset_normalizer.from_bytes(head) if not m.encoding.startswith(("utf_16", "utf_32"))]
    if not matches:
        return None
    candidates = {m.encoding for m in matches} | set(matches[0].could_be_from_charset)
    return PREFERRED_LEGACY if PREFERRED_LEGACY in candidates else matches[0].encoding
