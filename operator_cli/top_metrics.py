"""What `mmrag top` shows, computed from two scrapes of each service's /metrics (and its /readyz): per service
readiness, messages/s, lag, freshness p99, failures and dead letters, restarts; for the whole deployment Search and
Ask latency and the share of degraded Asks. Rates and quantiles are over the interval between the two scrapes;
when nothing happened in it, quantiles fall back to everything since the services started (flagged ``lifetime``)."""

from __future__ import annotations

import math
import urllib.request
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


@dataclass(frozen=True)
class Target:
    """One service to watch: its name and probe base URL (``http://host:port``)."""

    name: str
    url: str
    restarts: int | None = None  # known for the local stack (its supervisor counts them)


@dataclass
class Scrape:
    """One service's metrics at one moment (``samples`` empty when it did not answer)."""

    target: Target
    at: float
    samples: Samples = field(default_factory=dict)
    ready: bool = False
    detail: str = ""


def scrape(target: Target, at: float, timeout_s: float = 2.0) -> Scrape:
    """Reads /metrics and /readyz of ``target``; a service that does not answer is not ready, with the reason."""
    seen = Scrape(target, at)
    try:
        with urllib.request.urlopen(target.url + "/metrics", timeout=timeout_s) as reply:
            seen.samples = parse(reply.read().decode())
        with urllib.request.urlopen(target.url + "/readyz", timeout=timeout_s) as reply:
            seen.ready = reply.status == 200
    except OSError as exc:  # HTTPError (503 = not ready) is an OSError too
        seen.detail = str(getattr(exc, "reason", exc))
    return seen


def parse(text: str) -> Samples:
    """Prometheus text format -> {(sample name, sorted labels): value}."""
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def total(samples: Samples, name: str, **match: str) -> float:
    """Sum of every sample ``name`` whose labels include ``match``."""
    return sum(v for (n, labels), v in samples.items() if n == name and set(match.items()) <= set(labels))


def buckets(samples: Samples, name: str) -> dict[float, float]:
    """Cumulative counts per upper bound of histogram ``name``, summed over its label sets."""
    found: dict[float, float] = {}
    for (n, labels), value in samples.items():
        if n == f"{name}_bucket":
            le = float(dict(labels)["le"])
            found[le] = found.get(le, 0.0) + value
    return found


def quantile(q: float, cumulative: Mapping[float, float]) -> float | None:
    """``histogram_quantile`` over cumulative bucket counts (linear within a bucket); None without observations."""
    bounds = sorted(cumulative)
    if not bounds or cumulative[bounds[-1]] <= 0:
        return None
    rank = q * cumulative[bounds[-1]]
    lower, below = 0.0, 0.0
    for bound in bounds:
        count = cumulative[bound]
        if count >= rank:
            if math.isinf(bound):
                return lower
            return lower + (bound - lower) * ((rank - below) / (count - below) if count > below else 1.0)
        lower, below = bound, count
    return lower


def _window(before: Samples, now: Samples, name: str) -> tuple[dict[float, float], bool]:
    """Bucket counts observed between two scrapes, or all of them (``lifetime`` True) when none were."""
    after, earlier = buckets(now, name), buckets(before, name)
    delta = {le: count - earlier.get(le, 0.0) for le, count in after.items()}
    if delta and max(delta.values()) > 0:
        return delta, False
    return after, True


def service_row(before: Scrape, now: Scrape) -> dict[str, object]:
    """One service's line of `mmrag top`."""
    s0, s1 = before.samples, now.samples
    dt = max(now.at - before.at, 1e-3)
    processed = "mmrag_messages_processed_total"
    fresh, lifetime = _window(s0, s1, "mmrag_freshness_seconds")
    p99 = quantile(0.99, fresh)
    return {
        "service": now.target.name,
        "ready": now.ready,
        "detail": "" if now.ready else now.detail,
        "restarts": now.target.restarts,
        "messages_per_s": round((total(s1, processed) - total(s0, processed)) / dt, 2) if s0 and s1 else None,
        "lag": int(total(s1, "mmrag_consumer_lag")) if _has(s1, "mmrag_consumer_lag") else None,
        "freshness_p99_s": None if p99 is None else round(p99, 3),
        "freshness_lifetime": lifetime if p99 is not None else None,
        "failed_total": int(total(s1, "mmrag_messages_failed_total")),
        "dlq_total": int(total(s1, "mmrag_dlq_total")),
        "backpressure": bool(total(s1, "mmrag_backpressure")),
    }


def _has(samples: Samples, name: str) -> bool:
    return any(n == name for n, _ in samples)


def query_summary(before: Iterable[Scrape], now: Iterable[Scrape]) -> dict[str, object]:
    """Search and Ask over every service: latency quantiles (ms), degraded share, the LLM breaker."""
    s0, s1 = _merged(before), _merged(now)
    out: dict[str, object] = {}
    for key, name in (("search", "mmrag_search_seconds"), ("ask", "mmrag_ask_seconds")):
        window, lifetime = _window(s0, s1, name)
        for q in (0.5, 0.99):
            value = quantile(q, window)
            out[f"{key}_p{int(q * 100)}_ms"] = None if value is None else round(value * 1000, 1)
        out[f"{key}_lifetime"] = lifetime
    first, _ = _window(s0, s1, "mmrag_ask_first_token_seconds")
    value = quantile(0.5, first)
    out["ask_first_token_p50_ms"] = None if value is None else round(value * 1000, 1)
    asks = total(s1, "mmrag_ask_seconds_count")
    out["asks_total"] = int(asks)
    out["ask_degraded_share"] = round(total(s1, "mmrag_ask_degraded_total") / asks, 3) if asks else None
    states = [v for (n, _), v in s1.items() if n == "mmrag_llm_breaker_state"]
    out["llm_breaker"] = {0: "closed", 1: "half-open", 2: "open"}.get(int(max(states))) if states else None
    return out


def _merged(scrapes: Iterable[Scrape]) -> Samples:
    merged: Samples = {}
    for seen in scrapes:  # one label set per service, so two services' series never collide
        for (name, labels), value in seen.samples.items():
            merged[(name, (*labels, ("_target", seen.target.name)))] = value
    return merged
