"""The backfill's progress: a live rich bar (count, events/s, ETA) on a terminal, a progress line every few seconds
when the output is a log file, so a job's log shows how far it got and how long it has to go."""

from __future__ import annotations

import time

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text


class RateColumn(ProgressColumn):
    def render(self, task: Task) -> Text:
        return Text(f"{task.speed or 0:,.0f} events/s", style="progress.data.speed")


class BackfillProgress:
    """Counts emitted objects against the total listed; renders as a bar or as periodic log lines."""

    def __init__(self, label: str, console: Console | None = None, log_every_s: float = 2.0) -> None:
        self.label = label
        self.console = console or Console(stderr=False)
        self.log_every_s = log_every_s
        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            RateColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            TimeElapsedColumn(),
            console=self.console,
            disable=not self.console.is_terminal,
            speed_estimate_period=10,
        )
        self._task = self._progress.add_task(label, total=None, start=False)
        self._last_line = 0.0

    def start(self, total: int, completed: int) -> None:
        self._progress.update(self._task, total=total, completed=completed)
        self._progress.start_task(self._task)
        self._progress.start()
        self._log_line(force=True)

    def advance(self, count: int) -> None:
        self._progress.advance(self._task, count)
        self._log_line()

    def stop(self) -> None:
        self._log_line(force=True)
        self._progress.stop()

    @property
    def completed(self) -> int:
        return int(self._progress.tasks[0].completed)

    def _log_line(self, force: bool = False) -> None:
        if self.console.is_terminal or (not force and time.monotonic() - self._last_line < self.log_every_s):
            return
        self._last_line = time.monotonic()
        task = self._progress.tasks[0]
        left = task.time_remaining
        eta = "?" if left is None else time.strftime("%H:%M:%S", time.gmtime(left))
        self.console.print(
            f"{self.label}: {task.completed:,.0f}/{task.total or 0:,.0f} objects, "
            f"{task.speed or 0:,.1f} events/s, ETA {eta}",
            highlight=False,
            soft_wrap=True,
        )
