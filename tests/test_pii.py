"""PII redaction: each kind found and counted, near-misses (failing checks, dates, versions) left alone, and the
stream redactor finding items split across deltas."""

from __future__ import annotations

import logging

import pytest

from mmrag.pii import StreamRedactor, find_pii, iban_ok, luhn_ok, redact, redact_logs

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("text", "expected", "kind"),
    [
        ("write to jane.doe+rag@example.co.uk today", "write to [email redacted] today", "email"),
        ("card 4111 1111 1111 1111 on file", "card [card redacted] on file", "card"),
        ("card 4111-1111-1111-1111.", "card [card redacted].", "card"),
        ("amex 378282246310005", "amex [card redacted]", "card"),
        ("IBAN DE89 3704 0044 0532 0130 00 ok", "IBAN [iban redacted] ok", "iban"),
        ("IBAN GB82WEST12345698765432.", "IBAN [iban redacted].", "iban"),
        ("SSN 123-45-6789 here", "SSN [ssn redacted] here", "ssn"),
        ("call (415) 555-2671 now", "call [phone redacted] now", "phone"),
        ("call 415-555-2671", "call [phone redacted]", "phone"),
        ("call +44 20 7946 0958 now", "call [phone redacted] now", "phone"),
        ("call +49-30-901820", "call [phone redacted]", "phone"),
    ],
)
def test_each_kind_is_redacted_and_counted(text: str, expected: str, kind: str) -> None:
    done = redact(text)
    assert done.text == expected
    assert dict(done.counts) == {kind: 1}


@pytest.mark.parametrize(
    "text",
    [
        "card 4111 1111 1111 1112 fails Luhn",
        "IBAN DE89 3704 0044 0532 0130 01 fails mod-97",
        "released 2026-12-01 as version 1.2.3",
        "SSN-like 000-12-3456 and 666-12-3456 are never issued",
        "a plain count 12345678 and 3.14159 and 1,000,000",
        "user@localhost has no domain",
        "ISBN 978-3-16-148410-0 is a book",
        "[1] [2, 3] citations",
    ],
)
def test_near_misses_are_left_alone(text: str) -> None:
    assert redact(text).text == text
    assert find_pii(text) == []


def test_the_checks() -> None:
    assert luhn_ok("4111111111111111") and not luhn_ok("4111111111111112")
    assert iban_ok("GB82 WEST 1234 5698 7654 32") and not iban_ok("GB82 WEST 1234 5698 7654 33")


def test_several_kinds_in_one_text_are_counted_per_kind() -> None:
    done = redact("a@b.io, c@d.io, 4111111111111111 and 123-45-6789")
    assert done.text == "[email redacted], [email redacted], [card redacted] and [ssn redacted]"
    assert dict(done.counts) == {"email": 2, "card": 1, "ssn": 1}


@pytest.mark.parametrize("split", [3, 10, 14, 20, 27, 33, 40])
def test_an_item_split_across_deltas_is_still_redacted(split: int) -> None:
    text = "Pay with 4111 1111 1111 1111 or mail bob@example.com about it. Thanks [1]."
    pieces = [text[i : i + split] for i in range(0, len(text), split)]
    stream = StreamRedactor()
    out = "".join(stream.feed(p) for p in pieces) + stream.flush()
    assert out == "Pay with [card redacted] or mail [email redacted] about it. Thanks [1]."
    assert dict(stream.counts) == {"card": 1, "email": 1}


def test_the_stream_emits_plain_words_at_once_and_holds_only_near_digits() -> None:
    stream = StreamRedactor()
    assert stream.feed("Tide pools hold ") == "Tide pools hold "
    assert stream.feed("crabs and sta") == "crabs and "  # the unfinished word waits
    assert stream.feed("rfish. Call 415") == ""  # a digit in the tail: the last 48 characters wait
    rest = stream.feed("-555-2671 today.") + stream.flush()
    assert rest == "starfish. Call [phone redacted] today."


def test_logged_records_are_redacted_on_the_handler() -> None:
    class Keep(logging.Handler):
        def __init__(self) -> None:
            super().__init__()
            self.lines: list[str] = []

        def emit(self, record: logging.LogRecord) -> None:
            self.lines.append(record.getMessage())

    owner = logging.getLogger(f"pii-test-{id(test_logged_records_are_redacted_on_the_handler)}")
    keep = Keep()
    owner.addHandler(keep)
    owner.propagate = False
    redact_logs(owner)
    redact_logs(owner)  # once is enough: no second filter
    owner.warning("question from %s: card %s", "ann@example.org", "4111 1111 1111 1111")
    owner.warning("nothing to hide in %d", 42)
    assert keep.lines == ["question from [email redacted]: card [card redacted]", "nothing to hide in 42"]
    assert len(keep.filters) == 1
