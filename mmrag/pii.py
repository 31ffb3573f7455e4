"""PII redaction for answers and for what is logged: e-mail addresses, phone numbers, payment card numbers (Luhn
checked), IBANs (mod-97 checked) and US SSNs, each replaced by ``[<kind> redacted]`` and counted per kind.

A tested module rather than a library: Presidio needs spaCy models that cannot be fetched here, and the checks that
matter (Luhn, mod-97) are a few lines. Numbers that fail their check stay as they are. ``StreamRedactor`` redacts a
text that arrives in pieces (an answer's deltas): it holds back a short tail so an item split across two pieces is
still found whole."""

from __future__ import annotations

import logging
import re
from collections import Counter
from dataclasses import dataclass, field

from prometheus_client import Counter as MetricCounter

REDACTIONS = MetricCounter("mmrag_pii_redactions_total", "PII items redacted (answers and logged text)", ["kind"])
KINDS = ("email", "iban", "card", "ssn", "phone")

_EMAIL = re.compile(r"(?<![\w.+-])[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,24}\b")
_IBAN = re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?\b")
_CARD = re.compile(r"(?<![\d-])\d(?:[ -]?\d){12,18}(?![\d-])")
_SSN = re.compile(r"(?<![\d-])(?!000|666|9\d\d)\d{3}-(?!00)\d{2}-(?!0000)\d{4}(?![\d-])")
# International (+ country code, 8-15 digits in groups) or North American ((415) 555-2671, 415-555-2671).
_PHONE = re.compile(
    r"(?<![\w+])\+\d{1,3}(?:[ .-]?\(?\d{1,4}\)?){2,6}(?!\w)"
    r"|(?<![\w(-])(?:\(\d{3}\) ?|\d{3}[-. ])\d{3}[-. ]\d{4}(?![\w-])"
)
HOLD_CHARS = 48  # longer than any spaced item (an IBAN of 34 characters in groups of 4 is 42)


def luhn_ok(digits: str) -> bool:
    """The Luhn check of payment card numbers."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def iban_ok(iban: str) -> bool:
    """ISO 13616: country code and check digits moved to the end, letters as 10..35, the number mod 97 is 1."""
    compact = iban.replace(" ", "")
    if not 15 <= len(compact) <= 34:
        return False
    moved = compact[4:] + compact[:4]
    return int("".join(str(int(ch, 36)) for ch in moved)) % 97 == 1


def _digits(text: str) -> str:
    return re.sub(r"\D", "", text)


def _card_ok(text: str) -> bool:
    digits = _digits(text)
    return 13 <= len(digits) <= 19 and luhn_ok(digits)


def _phone_ok(text: str) -> bool:
    return 8 <= len(_digits(text)) <= 15


_DETECTORS = (
    ("email", _EMAIL, None),
    ("iban", _IBAN, iban_ok),
    ("card", _CARD, _card_ok),
    ("ssn", _SSN, None),
    ("phone", _PHONE, _phone_ok),
)


@dataclass(frozen=True)
class Span:
    start: int
    end: int
    kind: str


def find_pii(text: str) -> list[Span]:
    """PII spans in ``text``, in order, not overlapping (the first detector to claim characters keeps them)."""
    spans: list[Span] = []
    for kind, pattern, check in _DETECTORS:
        for match in pattern.finditer(text):
            if check is not None and not check(match.group()):
                continue
            if any(match.start() < s.end and s.start < match.end() for s in spans):
                continue
            spans.append(Span(match.start(), match.end(), kind))
    return sorted(spans, key=lambda s: s.start)


@dataclass
class Redacted:
    text: str
    counts: Counter[str] = field(default_factory=Counter)


def redact(text: str) -> Redacted:
    """``text`` with every PII item replaced by ``[<kind> redacted]``, and how many of each kind; counts nothing in
    the metric (the caller does, once per item it publishes: see ``count``)."""
    out, counts, at = [], Counter[str](), 0
    for span in find_pii(text):
        out.append(text[at : span.start])
        out.append(f"[{span.kind} redacted]")
        counts[span.kind] += 1
        at = span.end
    out.append(text[at:])
    return Redacted("".join(out), counts)


def count(counts: Counter[str]) -> None:
    """Adds ``counts`` to mmrag_pii_redactions_total{kind}."""
    for kind, n in counts.items():
        REDACTIONS.labels(kind).inc(n)


class StreamRedactor:
    """Redacts text that arrives in pieces. ``feed`` returns what is safe to emit now; ``flush`` the rest. Held
    back: the unfinished last word, and the last HOLD_CHARS characters while they hold a digit (every spaced item,
    card, IBAN, phone, has digits in each group); a cut never falls inside a found item."""

    def __init__(self) -> None:
        self.pending = ""
        self.counts: Counter[str] = Counter()

    def feed(self, piece: str) -> str:
        self.pending += piece
        cut = self._safe_cut()
        return self._emit(cut)

    def flush(self) -> str:
        return self._emit(len(self.pending))

    def _safe_cut(self) -> int:
        text = self.pending
        limit = len(text) - HOLD_CHARS if re.search(r"\d", text[-HOLD_CHARS:]) else len(text)
        cut = max((m.start() + 1 for m in re.finditer(r"\s", text[: max(limit, 0)])), default=0)
        for span in find_pii(text):
            if span.start < cut < span.end:
                cut = span.start
        return cut

    def _emit(self, cut: int) -> str:
        if cut <= 0:
            return ""
        done = redact(self.pending[:cut])
        self.pending = self.pending[cut:]
        self.counts.update(done.counts)
        return done.text


class RedactingFilter(logging.Filter):
    """A log handler filter: a record whose message holds PII is rewritten with it redacted (and counted)."""

    def filter(self, record: logging.LogRecord) -> bool:
        done = redact(record.getMessage())
        if done.counts:
            record.msg, record.args = done.text, ()
            count(done.counts)
        return True


def redact_logs(logger: logging.Logger | None = None) -> None:
    """Adds a RedactingFilter to every handler of ``logger`` (the root logger by default), so records propagated
    from any module are redacted before they are written."""
    for handler in (logger or logging.getLogger()).handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())
