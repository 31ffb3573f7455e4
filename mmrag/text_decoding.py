"""Text in any Unicode encoding: a byte-order mark decides (UTF-8, UTF-16 and UTF-32, either byte order), else the
charset the normalizer sniffed, else UTF-8. Text in a legacy charset is read only when the reading is confident
(``legacy_text_problem``), never as a guess. And what markup a text is (its root element), so that HTML is
extracted, SVG is treated as the image it is, and neither is ever indexed as raw tags."""

from __future__ import annotations

import codecs
import re
import unicodedata
from collections import Counter

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
MIN_LEGACY_CONFIDENCE = 0.9  # share of a legacy reading's non-ASCII characters that must read as text
UTF8_LOOKALIKE_SHARE = 0.8  # non-UTF-8 bytes whose high bytes mostly form UTF-8 sequences are broken UTF-8
RESAVE_AS_UTF8 = "save it as UTF-8 (or fix the damaged bytes) and upload it again"
_WORD = re.compile(r"\w+")
_NON_ASCII_OTHER = re.compile(r"[^\x00-\x7f\w]")  # non-ASCII punctuation, symbols, spaces, controls, marks
_UTF8_SEQUENCE = re.compile(rb"[\xc2-\xdf][\x80-\xbf]|[\xe0-\xef][\x80-\xbf]{2}|[\xf0-\xf4][\x80-\xbf]{3}")
_ASCII_BYTES = bytes(range(128))
_TEXT_SYMBOLS = frozenset("\u00a9\u00ae\u00b0\u2122\u00ad")  # (c) (R) degree TM, soft hyphen


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

    Raises PermanentError naming ``subject`` for bytes that are not text in that encoding, hold NULs, or whose
    reading in a legacy ``charset`` is not confident (``legacy_text_problem``).
    """
    bom = bom_charset(data)
    codec, start = bom if bom is not None else (charset or "utf-8", 0)
    try:
        text = data[start:].decode(codec)
    except LookupError as exc:
        raise PermanentError(stage, subject, f"unknown text encoding {codec!r}", RESAVE_AS_UTF8) from exc
    except UnicodeDecodeError as exc:
        raise PermanentError(stage, subject, _undecodable(data, codec, exc, start), RESAVE_AS_UTF8) from exc
    if "\x00" in text:
        raise PermanentError(stage, subject, "binary data (NUL bytes) in a text object", "upload real text")
    unsure = None if is_unicode(codec) else legacy_text_problem(data, text, codec)
    if unsure is not None:
        raise PermanentError(stage, subject, unsure, RESAVE_AS_UTF8)
    return text


def is_unicode(codec: str) -> bool:
    """True for the UTF encodings, whose decoding is either right or an error (never a guess)."""
    try:
        return codecs.lookup(codec).name.startswith("utf")
    except LookupError:
        return False


def legacy_text_problem(data: bytes, text: str, charset: str) -> str | None:
    """Why ``text`` (``data`` read in the legacy ``charset``) is not confidently text, or None when it is.

    Not confident: bytes that are damaged UTF-8 (read in a legacy charset they become mojibake), or a reading in
    which fewer than MIN_LEGACY_CONFIDENCE of the non-ASCII characters read as text: letters in words (a
    Latin-script word of several letters holds an ASCII letter too: "café", not "ÿþ"), punctuation, digits,
    currency and a few common symbols."""
    broken = damaged_utf8(data)
    if broken is not None:
        return f"damaged UTF-8 ({broken}), not {charset} text"
    confidence, odd = legacy_confidence(text)
    if confidence >= MIN_LEGACY_CONFIDENCE:
        return None
    return (
        f"not UTF-8 ({_first_non_utf8(data)}), and read as {charset} only {confidence:.0%} of its non-ASCII "
        f"characters are text (under {MIN_LEGACY_CONFIDENCE:.0%}; not text: {odd!r}): its encoding cannot be told "
        "with confidence"
    )


def damaged_utf8(data: bytes) -> str | None:
    """Where bytes that are UTF-8 but for some damage break ("byte 0xFF at offset 27: invalid start byte; 184 of its
    188 non-ASCII bytes are UTF-8"), or None: valid UTF-8, or under UTF8_LOOKALIKE_SHARE of the non-ASCII bytes in
    UTF-8 sequences (a legacy charset or binary data)."""
    where = _first_non_utf8(data)
    high = len(data.translate(None, _ASCII_BYTES))
    in_sequences = len(data) - len(_UTF8_SEQUENCE.sub(b"", data))
    if where is None or not high or in_sequences < UTF8_LOOKALIKE_SHARE * high:
        return None
    return f"{where}; {in_sequences} of its {high} non-ASCII bytes are UTF-8"


def legacy_confidence(text: str) -> tuple[float, str]:
    """(share of the non-ASCII characters of ``text`` that read as text, the first few that do not); 1.0 for ASCII.
    Words and symbols are judged once each however often they occur, so the cost is one pass of two regexes."""
    total = odd = 0
    examples: list[str] = []
    words = Counter(word for match in _WORD.finditer(text) if not (word := match.group()).isascii())
    for word, count in words.items():
        total += count * sum(not ch.isascii() for ch in word)
        if _odd_word(word):
            odd += count * sum(not ch.isascii() for ch in word)
            examples.append(word)
    for char, count in Counter(match.group() for match in _NON_ASCII_OTHER.finditer(text)).items():
        total += count
        if not _text_symbol(char):
            odd += count
            examples.append(char)
    return (1.0 if total == 0 else 1 - odd / total), " ".join(examples[:5])


def _odd_word(word: str) -> bool:
    """A word of several non-ASCII Latin letters and no ASCII one: no Latin-script language writes like that (a
    legacy reading of other bytes does). One-letter words are fine: à, è, é."""
    if len(word) < 2 or any(ch.isascii() for ch in word):
        return False
    return any(unicodedata.name(ch, "").startswith("LATIN") for ch in word)


def _text_symbol(char: str) -> bool:
    category = unicodedata.category(char)
    return category[0] in "PZNM" or category in ("Sc", "Sm") or char in _TEXT_SYMBOLS


def _first_non_utf8(data: bytes) -> str | None:
    """Where ``data`` stops being UTF-8 (its first bad byte), None when it is UTF-8 throughout."""
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        return f"byte 0x{data[exc.start]:02X} at offset {exc.start}: {exc.reason}"
    return None


def _undecodable(data: bytes, codec: str, exc: UnicodeDecodeError, start: int) -> str:
    """What is wrong with ``data`` that ``codec`` cannot decode (``start``: the length of its byte-order mark)."""
    broken = None if is_unicode(codec) else damaged_utf8(data)
    if broken is not None:
        return f"damaged UTF-8 ({broken}), not {codec} text"
    problem = "not UTF-8 text" if codec == "utf-8" else f"not {codec} text"
    return f"{problem} ({exc.reason} at byte {exc.start + start})"


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
