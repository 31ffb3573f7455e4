"""Is a generated answer supported by its sources, sentence by sentence, and which source supports each sentence;
and the extractive answer: the source sentences that answer the question best, or none ("not found").

A sentence of the answer is supported when one source sentence says the same (cosine of their MiniLM vectors at
least ``support_min``) and every number or identifier in it appears in that source. An answer is supported when
each of its sentences with content is, none repeats another (or loops on a phrase of any length), and the sentences
that support it answer the question (cosine with the question at least ``answer_min``). The citation of each
sentence is its supporting source, chosen here, not the model's ``[n]`` markers. The thresholds are calibrated by
``bench.answers`` on the project's question set (docs/architecture.md "Answers").
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from query_service.sources import CITATION, Source
from query_service.text_terms import terms

Embed = Callable[[list[str]], np.ndarray]  # unit vectors, one row a text

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[^a-z])")
_SPACE_BEFORE_MARK = re.compile(r"\s+([.,;:!?])")
_MARKER = re.compile(r"^\s*(?:#+|[-*•]|\d+[.)])\s+")
_FACT = re.compile(r"[\w./:-]*\d[\w./:-]*")
MIN_TERMS = 2  # a sentence with fewer content words ("Yes.", "In short:") neither supports nor refutes
MIN_QUOTE_WORDS = 4  # shorter lines (a heading, a short bullet) are not quoted as an answer
LOOP_NGRAM = 4  # a phrase of this many words or more ...
LOOP_TIMES = 3  # ... this many times in one answer is a loop
LEXICAL_SLACK = 0.15  # a sentence this much under support_min is supported when ...
LEXICAL_MIN = 0.6  # ... this share of its content words is in the source


def split_sentences(text: str) -> list[str]:
    """Sentences of prose: split at sentence ends, blank lines, headings and list items, not at a line break inside
    a sentence (a chunk wrapped at 80 columns); markers of headings and bullets stripped, a citation's space too."""
    blocks: list[list[str]] = [[]]
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or _MARKER.match(stripped):
            blocks.append([])  # a blank line ends a paragraph; a heading or an item starts a block
        if stripped:
            blocks[-1].append(stripped)
        if stripped.startswith("#"):
            blocks.append([])  # a heading stands alone
    found = []
    for block in blocks:
        for part in _SENTENCE_END.split(" ".join(block)):
            sentence = _SPACE_BEFORE_MARK.sub(r"\1", " ".join(_MARKER.sub("", part).split()))
            if sentence:
                found.append(sentence)
    return found


def facts(text: str) -> set[str]:
    """Numbers and identifiers with a digit ("42", "4417", "F-2307", "v2.1"), lower-cased, trailing dots cut."""
    return {token.lower().rstrip(".,:/-") for token in _FACT.findall(text)} - {""}


def _neighbours(text: str) -> dict[str, set[str]]:
    """Each fact of ``text`` (facts()) with the words right before and after it, lower-cased, a plural "s" cut."""
    words = [w.rstrip(".,;:!?)").lower() for w in text.split()]
    found: dict[str, set[str]] = {}
    for i, word in enumerate(words):
        if word and _FACT.fullmatch(word.rstrip(".,:/-")):
            around = {words[j].removesuffix("s") for j in (i - 1, i + 1) if 0 <= j < len(words)}
            found.setdefault(word.rstrip(".,:/-"), set()).update(w for w in around if w)
    return found


def misplaced_facts(sentence: str, source_text: str) -> set[str]:
    """Facts the sentence puts beside other words than its source does ("12 lighthouses" from "every 12 seconds"):
    a number must be about the same thing. A fact alone in the sentence (no word beside it) passes."""
    said, source = _neighbours(sentence), _neighbours(source_text)
    return {fact for fact, around in said.items() if around and fact in source and not around & source[fact]}


def repetition(sentences: Sequence[str]) -> str | None:
    """Why ``sentences`` repeat themselves, or None: a sentence said twice, or a phrase of LOOP_NGRAM words or more
    LOOP_TIMES times (a loop of any length; a 1-4 word loop is grounding.degenerate's)."""
    seen: set[str] = set()
    for sentence in sentences:
        key = " ".join(re.findall(r"\w+", sentence.lower()))
        if key in seen and len(terms(sentence)) >= MIN_TERMS:
            return f"repeats the sentence {sentence[:80]!r}"
        seen.add(key)
    words = re.findall(r"\w+", " ".join(sentences).lower())
    grams = Counter(tuple(words[i : i + LOOP_NGRAM]) for i in range(len(words) - LOOP_NGRAM + 1))
    looped = [g for g, n in grams.items() if n >= LOOP_TIMES]
    return f"repeats {' '.join(looped[0])!r} {grams[looped[0]]} times" if looped else None


ANSWER_TYPE_BONUS = 0.15
_TYPES = (  # what a question asks for, from its first words: a classic answer-type rule of extractive QA
    ("time", re.compile(r"^\s*(when|what time|what year|which year|what day|what date|how long ago)\b", re.I)),
    ("money", re.compile(r"\b(cost|costs|charge|charges|price|fee|how much does|how much is)\b", re.I)),
    ("number", re.compile(r"^\s*(how (many|much|tall|long|high|far|old|often|big|large|heavy)|at what)\b", re.I)),
    ("name", re.compile(r"^\s*(who|whom|whose)\b|\b(called|named|the name of)\b", re.I)),
)
_HAS = {
    "time": re.compile(
        r"\b(\d{1,2}:\d{2}|1[5-9]\d\d|20\d\d|monday|tuesday|wednesday|thursday|friday|saturday|sunday|"
        r"january|february|march|april|may|june|july|august|september|october|november|december|morning|evening)\b",
        re.I,
    ),
    "money": re.compile(r"[$€£]|\b\d+(\.\d+)?\s*(euros?|pounds?|dollars?|cents?|usd|eur|gbp)\b", re.I),
    "number": re.compile(r"\d|\b(one|two|three|four|five|six|seven|eight|nine|ten|twelve|dozen|hundred)\b", re.I),
}


_HOW_MANY = re.compile(r"\bhow many (\w+)", re.I)  # "how many lighthouses": a count of that thing, not any number


def answer_type(question: str) -> str | None:
    """What ``question`` asks for: time, money, number or name; None when its words do not say."""
    return next((kind for kind, pattern in _TYPES if pattern.search(question)), None)


def type_fit(kind: str | None, question: str, sentence: str) -> int:
    """+1 when ``sentence`` holds an answer of ``kind``, -1 when it holds none, 0 without a kind. A name is a
    capitalized word the question does not have (not the sentence's first word); "how many X" wants a number with X
    beside it ("12 seconds" does not count lighthouses)."""
    if kind is None:
        return 0
    if kind == "name":
        asked = {w.lower() for w in re.findall(r"\w+", question)}
        names = [w for w in re.findall(r"(?<!^)(?<![.!?]\s)\b[A-Z][a-z]+", sentence) if w.lower() not in asked]
        return 1 if names else -1
    if kind == "number" and (counted := _HOW_MANY.search(question)):
        thing = counted.group(1).lower()[:5]  # "lighthouses" -> "light": a plural or another ending still meets it
        beside = re.findall(r"\b\d[\d.,]*\s+(\w+)(?:\s+(\w+))?", sentence.lower())  # the two words after
        return 1 if any(word.startswith(thing) for pair in beside for word in pair) else -1
    return 1 if _HAS[kind].search(sentence) else -1


@dataclass(frozen=True)
class SourceSentence:
    number: int  # the source's number
    text: str


@dataclass(frozen=True)
class Verdict:
    """Each answer sentence with the number of the source supporting it (0: none); ``problem`` None when the whole
    answer is supported."""

    sentences: list[tuple[str, int]]
    problem: str | None

    @property
    def supported(self) -> bool:
        return self.problem is None

    def cited(self) -> str:
        """The answer with the system's citations: each supported sentence followed by its source's number."""
        return " ".join(f"{text} [{number}]" if number else text for text, number in self.sentences)

    @property
    def numbers(self) -> list[int]:
        return list(dict.fromkeys(n for _, n in self.sentences if n))


class SupportChecker:
    """``embed``: unit sentence vectors (the query service's MiniLM); thresholds as the module says."""

    def __init__(self, embed: Embed, support_min: float, answer_min: float) -> None:
        self.embed = embed
        self.support_min = support_min
        self.answer_min = answer_min

    def source_sentences(self, sources: Sequence[Source]) -> list[SourceSentence]:
        """The sentences of each source's best chunks (its text when it has no chunk text: an image's OCR)."""
        found = []
        for source in sources:
            text = source.best.text if source.modality == "text" and source.best.text.strip() else source.text
            for sentence in split_sentences(text):
                if len(terms(sentence)) >= MIN_TERMS:
                    found.append(SourceSentence(source.number, sentence))
        return found

    def check(self, question: str, answer: str, sources: Sequence[Source]) -> Verdict:
        """The answer's sentences, each with its supporting source, and why the answer is not supported (None)."""
        own = [s for s in split_sentences(CITATION.sub("", answer)) if s.strip(" .")]
        if not own:
            return Verdict([], "empty answer")
        looped = repetition(own)
        if looped:
            return Verdict([(s, 0) for s in own], looped)
        pool = self.source_sentences(sources)
        content = [s for s in own if len(terms(s)) >= MIN_TERMS]
        if not pool or not content:
            return Verdict([(s, 0) for s in own], "no sentence of it can be held against a source")
        vectors = self.embed([*content, *(p.text for p in pool)])
        answer_vecs, pool_vecs = vectors[: len(content)], vectors[len(content) :]
        similarity = answer_vecs @ pool_vecs.T
        answers_it = self.answer_scores(question, pool, pool_vecs)
        by_source = {s.number: f"{s.best.text}\n{s.text}".lower() for s in sources}
        support: dict[str, int] = {}
        problem = None
        relevance = float("-inf")
        for row, sentence in enumerate(content):
            best = int(np.argmax(similarity[row]))
            source = pool[best]
            source_text = by_source.get(source.number, "")
            missing = facts(sentence) - facts(source_text) or misplaced_facts(sentence, source_text)
            if not self._says(sentence, float(similarity[row, best]), source_text):
                problem = problem or f"no source says {sentence[:80]!r} (closest {similarity[row, best]:.2f})"
                continue
            if missing:
                problem = problem or f"{', '.join(sorted(missing))} in {sentence[:60]!r}: not so in its source"
                continue
            support[sentence] = source.number
            relevance = max(relevance, float(answers_it[best]))
        if problem is None and relevance < self.answer_min:
            problem = f"its sources do not answer the question (relevance {relevance:.2f})"
        wanted = answer_type(question)
        if problem is None and wanted and all(type_fit(wanted, question, s) < 0 for s in content):
            problem = f"it does not say what the question asks for (a {wanted})"
        return Verdict([(s, support.get(s, 0)) for s in own], problem)

    def _says(self, sentence: str, similarity: float, source_text: str) -> bool:
        """A source says the sentence: close in meaning, or nearly so with most of its words in that source (a
        paraphrase that merges two source sentences scores lower against each than a copy)."""
        if similarity >= self.support_min:
            return True
        wanted = terms(sentence)
        covered = len(wanted & terms(source_text)) / len(wanted) if wanted else 0.0
        return similarity >= self.support_min - LEXICAL_SLACK and covered >= LEXICAL_MIN

    def answer_scores(
        self, question: str, pool: Sequence[SourceSentence], pool_vecs: np.ndarray | None = None
    ) -> np.ndarray:
        """How well each sentence answers ``question``: its cosine with it (or that of it with the sentence before
        it, which names what "it" is), plus ANSWER_TYPE_BONUS when it holds what the question asks for (a number
        for "how many", a time for "when", a new name for "who": answer_type), minus it when it lacks that.
        ``pool_vecs``: the pool's vectors when the caller has them already."""
        windows = [
            f"{pool[i - 1].text} {p.text}" if i and pool[i - 1].number == p.number else p.text
            for i, p in enumerate(pool)
        ]
        if pool_vecs is None:
            pool_vecs = self.embed([p.text for p in pool])
        vectors = self.embed([question, *windows])
        alone, joined = pool_vecs @ vectors[0], vectors[1:] @ vectors[0]
        wanted = answer_type(question)
        typed = np.array([type_fit(wanted, question, p.text) for p in pool]) * ANSWER_TYPE_BONUS
        return np.asarray(np.maximum(alone, joined) + typed)

    def extract(self, question: str, sources: Sequence[Source], max_sentences: int = 2, margin: float = 0.08) -> str:
        """The source sentences that answer ``question`` best (answer_scores at least ``answer_min``, within
        ``margin`` of the best), in source order, each cited; '' when none does ("not found")."""
        pool = [p for p in self.source_sentences(sources) if len(p.text.split()) >= MIN_QUOTE_WORDS]
        if not pool:
            return ""
        scores = self.answer_scores(question, pool)
        best = float(scores.max())
        if best < self.answer_min:
            return ""
        ranked = sorted(range(len(pool)), key=lambda i: -scores[i])
        picked = sorted(i for i in ranked[:max_sentences] if scores[i] >= max(self.answer_min, best - margin))
        return " ".join(f"{pool[i].text} [{pool[i].number}]" for i in picked)
