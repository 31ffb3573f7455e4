"""What an object holds, decided from its first bytes (magic numbers via puremagic, then a text check), never from
the key's extension alone: a `.txt` holding a PNG is an image, an `.md` holding an ELF binary is unsupported."""

from __future__ import annotations

from dataclasses import dataclass

import puremagic

from mmrag.pb.events_pb2 import MediaKind

SNIFF_BYTES = 8192
ZIP_MAGIC = b"PK\x03\x04"
DOCX_MIME = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
HTML_STARTS = (b"<!doctype html", b"<html", b"<head", b"<body", b"<!--")
TEXT_CONTROL_OK = {9, 10, 12, 13, 27}  # tab, newline, form feed, carriage return, escape


@dataclass(frozen=True)
class Sniffed:
    media_kind: MediaKind
    content_type: str
    reason: str = ""  # why it is unsupported

    @property
    def supported(self) -> bool:
        return self.media_kind != MediaKind.MEDIA_KIND_UNSUPPORTED


def sniff(head: bytes) -> Sniffed:
    """Routes an object by its first bytes: text, image, document (PDF, HTML, DOCX) or unsupported (with why)."""
    if not head:
        return Sniffed(MediaKind.MEDIA_KIND_UNSUPPORTED, "", "the object is empty")
    mime = _magic_mime(head)
    if mime.startswith("image/") and "svg" not in mime:
        return Sniffed(MediaKind.MEDIA_KIND_IMAGE, mime)
    if mime == "application/pdf":
        return Sniffed(MediaKind.MEDIA_KIND_DOCUMENT, mime)
    if head.startswith(ZIP_MAGIC):
        if b"word/" in head:
            return Sniffed(MediaKind.MEDIA_KIND_DOCUMENT, DOCX_MIME)
        return Sniffed(MediaKind.MEDIA_KIND_UNSUPPORTED, "application/zip", "a ZIP archive that is not a DOCX")
    if _is_text(head):
        if head.lstrip(b"\xef\xbb\xbf \t\r\n").lower().startswith(HTML_STARTS):
            return Sniffed(MediaKind.MEDIA_KIND_DOCUMENT, "text/html")
        return Sniffed(MediaKind.MEDIA_KIND_TEXT, "text/plain; charset=utf-8")
    kind = mime or "application/octet-stream"
    return Sniffed(MediaKind.MEDIA_KIND_UNSUPPORTED, kind, f"binary content ({kind}) that is no image, PDF or DOCX")


def _magic_mime(head: bytes) -> str:
    try:
        return str(puremagic.from_string(head, mime=True))
    except (puremagic.PureError, ValueError):
        return ""


def _is_text(head: bytes) -> bool:
    """UTF-8 without NULs or stray control bytes; a multi-byte character cut at the sniff boundary is fine."""
    for cut in range(4):
        try:
            text = head[: len(head) - cut].decode("utf-8")
            break
        except UnicodeDecodeError:
            continue
    else:
        return False
    return not any(ord(ch) < 32 and ord(ch) not in TEXT_CONTROL_OK for ch in text)
