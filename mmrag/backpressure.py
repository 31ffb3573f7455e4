"""Back-pressure bookkeeping shared by the run loop and the source publisher: while a dependency is down the stage
waits with growing jittered delays, readiness red with the reason, the back-pressure gauge up; the first success
turns all of it back."""

from __future__ import annotations

import logging
import random

from mmrag import metrics
from mmrag.settings import BaseServiceSettings
from mmrag.telemetry import Probes

log = logging.getLogger(__name__)


class Backpressure:
    """Counts consecutive outages of one stage and says how long to wait before the next try."""

    def __init__(self, stage: str, settings: BaseServiceSettings, probes: Probes) -> None:
        self.stage = stage
        self.settings = settings
        self.probes = probes
        self.outages = 0  # consecutive tries that met a broken dependency

    def enter(self, cause: Exception) -> float:
        """One more outage: readiness red with ``cause``, metrics up; returns the delay before the next try
        (exponential from MMRAG_RETRY_INITIAL_S up to MMRAG_BACKOFF_MAX_S, jittered down to half)."""
        self.outages += 1
        s = self.settings
        delay = random.uniform(0.5, 1.0) * min(s.backoff_max_s, s.retry_initial_s * 2 ** min(self.outages, 20))
        metrics.BACKPRESSURE.labels(self.stage).set(1)
        metrics.OUTAGES.labels(self.stage).inc()
        self.probes.set_ready(False, f"dependency unavailable, backing off ({self.outages}x): {cause}")
        return delay

    def recovered(self) -> None:
        """A try succeeded: ready again (no-op when there was no outage)."""
        if self.outages:
            log.info("%s: dependency back after %d back-off(s); ready again", self.stage, self.outages)
            self.outages = 0
            metrics.BACKPRESSURE.labels(self.stage).set(0)
            self.probes.set_ready(True)
