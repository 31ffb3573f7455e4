"""The visible text of an HTML page, for any nesting depth.

A tree builder (BeautifulSoup, lxml) holds every element and walks them recursively or hits its parser's depth
limit; the stdlib tokenizer used here keeps no tree at all, only whether it is inside an invisible element, so 5000
nested divs cost what 5000 sibling divs do. The page is fed in blocks so a time budget is checked as it goes, and
the result is checked to hold no markup."""

from __future__ import annotations

import re
from collections.abc import Callable
from html.parser import HTMLParser

from mmrag.errors import PermanentError

STAGE = "text_embedder"
FEED_CHARS = 1 << 16
INVISIBLE = frozenset({"script", "style", "noscript", "template", "head", "svg", "math", "iframe", "object"})
_BLOCKS_WORDS = (
    "address article aside blockquote br dd details dialog div dl dt fieldset figcaption figure footer form h1 h2 "
    "h3 h4 h5 h6 header hr li main nav ol p pre section summary table tbody thead tfoot tr td th ul title body "
    "html caption option"
)
BLOCKS = frozenset(_BLOCKS_WORDS.split())
_TAG_LIKE = re.compile(r"</?[A-Za-z][\w:-]*(\s[^<>]*)?/?>")
MARKUP_SHARE_LIMIT = 0.3  # real prose quoting the odd tag stays far below; leftover markup is far above


class _VisibleText(HTMLParser):
    """Collects text outside invisible elements; a newline at every block boundary."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._hidden_by = ""  # the invisible element being skipped
        self._hidden_depth = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if self._hidden_by:
            if tag == self._hidden_by:
                self._hidden_depth += 1
            elif self._hidden_by == "head" and tag == "body":  # an unclosed <head> ends where the body starts
                self._hidden_by, self._hidden_depth = "", 0
            return
        if tag in INVISIBLE:
            self._hidden_by, self._hidden_depth = tag, 1
        elif tag in BLOCKS:
            self.parts.append("\n")

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if not self._hidden_by and tag in BLOCKS:  # <br/>, <hr/>: a break; <script/> hides nothing
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if self._hidden_by:
            if tag == self._hidden_by:
                self._hidden_depth -= 1
                if self._hidden_depth == 0:
                    self._hidden_by = ""
            return
        if tag in BLOCKS:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if not self._hidden_by:
            self.parts.append(data)


def html_visible_text(html: str, subject: str, check: Callable[[], None] | None = None) -> str:
    """One line per block of visible text (scripts, styles, head and embedded SVG left out), whitespace collapsed.

    Raises PermanentError naming ``subject`` when the parser fails or the result is still mostly markup;
    ``check`` runs between blocks of input (a time budget raises there).
    """
    parser = _VisibleText()
    try:
        for start in range(0, len(html), FEED_CHARS):
            parser.feed(html[start : start + FEED_CHARS])
            if check is not None:
                check()
        parser.close()
    except (AssertionError, ValueError, IndexError) as exc:  # the tokenizer's own failure modes on broken input
        raise PermanentError(STAGE, subject, f"HTML could not be parsed ({exc})", "re-save the page as HTML") from exc
    lines = (" ".join(line.split()) for line in "".join(parser.parts).splitlines())
    text = "\n".join(line for line in lines if line)
    markup = sum(len(m.group(0)) for m in _TAG_LIKE.finditer(text))
    if text and markup > MARKUP_SHARE_LIMIT * len(text):
        raise PermanentError(
            STAGE,
            subject,
            f"the extracted text is still {100 * markup // len(text)}% markup (escaped or malformed HTML)",
            "upload the page's HTML source, not an escaped copy of it",
        )
    return text
