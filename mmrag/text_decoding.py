"""Text in any Unicode encoding: a byte-order mark decides (UTF-8, UTF-16 and UTF-32, either byte order), else the
charset the normalizer sniffed, else UTF-8. And what markup a text is (its root element), so that HTML is extracted,
SVG is treated as the image it is, and neither is ever indexed as raw tags."""

from __future__ import annotations

import re

from mmrag.errors import PermanentError

# Longest first: a UTF-32-LE mark starts with the UTF-16-LE one.
BOMS = (
    (b"\x00\x00\xfe\xff", "utf-32-be"),
    (b"\xff\xfe\x00\x00", "utf-32-le"),
    (b"\xef\xbb\xbf", "utf-8"),
    (b"\xfe\xff", "utf-16-be"),
    (b"\xff\xfe", "utf-16-le"),
)
TEXT_CONTROL_OK = frozenset("\t\n\x0c\r\x1b")  # tab, newline, form feed, carriage return, escape
_HTML_ELEMENTS_WORDS = (
    "html head body div p span a table thead tbody tr td th ul ol li dl dt dd h1 h2 h3 h4 h5 h6 meta link title "
    "script style section article header footer nav main aside form input button img br hr pre code blockquote em "
    "strong b i u small iframe noscript template center font label select option textarea figure figcaption"
)
HTML_ELEMENTS = frozenset(_HTML_ELEMENTS_WORDS.split())
_CHARSET = re.compile(r"charset=([\w.:-]+)", re.IGNORECASE)
_SKIPPABLE = (("<?", "?>"), ("<!--", "-->"))
_NAME = re.compile(r"<([A-Za-z_][\w.:-]*)")
_DOCTYPE = re.compile(r"<!doctype\s+([\w.:-]+)", re.IGNORECASE)


def bom_charset(data: bytes) -> tuple[str, int] | None:
    """(codec, length of the mark) when ``data`` starts with a Unicode byte-order mark, else None."""
    for mark, codec in BOMS:
        if data.startswith(mark):
            return codec, len(mark)
    return None


def charset_of(content_type: str) -> str | None:
    """The ``charset=`` parameter of a content type, if any."""
    match = _CHARSET.search(content_type or "")
    return match.group(1).lower() if match else None


def has_stray_controls(text: str) -> bool:
    """True when ``text`` holds NULs or control characters that real text never has (a binary file)."""
    return any(ord(ch) < 32 and ch not in TEXT_CONTROL_OK for ch in text)


def decode_text(data: bytes, subject: str, stage: str, charset: str | None = None) -> str:
    """The text of a whole object: its byte-order mark wins, then ``charset`` (sniffed), then UTF-8.

    Raises PermanentError naming ``subject`` for bytes that are not text in that encoding or hold NULs.
    """
    bom = bom_charset(data)
    codec, start = bom if bom is not None else (charset or "utf-8", 0)
    try:
        text = data[start:].decode(codec)
    except LookupError as exc:
        raise PermanentError(stage, subject, f"unknown text encoding {codec!r}", "re-upload it as UTF-8") from exc
    except UnicodeDecodeError as exc:
        where = f"{exc.reason} at byte {exc.start + start}"
        problem = "not UTF-8 text" if codec == "utf-8" else f"not {codec} text"
        raise PermanentError(stage, subject, f"{problem} ({where})", "re-upload it as UTF-8") from exc
    if "\x00" in text:
        raise PermanentError(stage, subject, "binary data (NUL bytes) in a text object", "upload real text")
    return text


def markup_root(text: str, head_chars: int | None = 8192) -> str:
    """The lower-case local name of the first element of a markup text ("html", "svg", "div", ...), the doctype's
    name when it comes first, or "" when the text does not start with markup. Reads the first ``head_chars``
    characters (None: all of it, so a long leading comment cannot hide the root)."""
    head = (text if head_chars is None else text[:head_chars]).lstrip("\ufeff \t\r\n")
    for _ in range(64):  # declarations, processing instructions and comments before the root
        doctype = _DOCTYPE.match(head)
        if doctype:
            return doctype.group(1).lower().rpartition(":")[2]
        for opener, closer in _SKIPPABLE:
            if head.startswith(opener):
                end = head.find(closer, len(opener))
                if end < 0:
                    return ""
                head = head[end + len(closer) :].lstrip()
                break
        else:
            name = _NAME.match(head)
            return name.group(1).lower().rpartition(":")[2] if name else ""
    return ""


def is_html(root: str) -> bool:
    return root in HTML_ELEMENTS
