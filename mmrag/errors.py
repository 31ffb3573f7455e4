"""The two error classes the runner acts on: retry with backoff, or send to the DLQ at once."""

from __future__ import annotations


class StageError(Exception):
    """An error that names the object, the stage and what to do about it."""

    def __init__(self, stage: str, subject: str, problem: str, fix: str) -> None:
        self.stage = stage
        self.subject = subject
        self.problem = problem
        self.fix = fix
        super().__init__(f"[{stage}] {subject}: {problem} -> {fix}")


class RetryableError(StageError):
    """Transient: a timeout, a broker or store hiccup, memory pressure. Retried with jittered backoff, bounded."""


class PermanentError(StageError):
    """The input itself is bad (corrupt file, bad schema): retrying cannot help, so it goes to the DLQ at once."""
