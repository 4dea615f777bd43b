"""Progress of a long step, on standard error: a live bar on a terminal, plain lines in CI.

On a terminal, rich draws the bar with the iterations done, the results so far, the rate
per hour and the ETA.  Elsewhere (a CI log, a pipe) a live bar is noise, so each finished
iteration is one plain line instead.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterator
from types import TracebackType

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from .line import ResultLine


def stderr_console() -> Console:
    return Console(stderr=True, highlight=False, soft_wrap=True)


class CampaignProgress:
    """Counts results as lines arrive and shows them (``enabled=False``: silent)."""

    def __init__(self, total: int, title: str, *, enabled: bool = True) -> None:
        self.total, self.title, self.enabled = total, title, enabled
        self.console = stderr_console()
        self.counts: Counter[str] = Counter()
        self.done = 0
        self.started = time.monotonic()
        self.live = enabled and self.console.is_terminal
        self.bar = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                            MofNCompleteColumn(), TextColumn("{task.fields[rate]}"),
                            TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
                            console=self.console, transient=False)
        self.task: TaskID | None = None

    def __enter__(self) -> CampaignProgress:
        if self.live:
            self.bar.start()
            self.task = self.bar.add_task(self._description(), total=self.total, rate="")
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self.live:
            self.bar.stop()

    def _description(self) -> str:
        counts = " ".join(f"{k} {v}" for k, v in sorted(self.counts.items()))
        return f"{self.title}: {counts}" if counts else self.title

    def rate_per_hour(self) -> float:
        elapsed = time.monotonic() - self.started
        return self.done * 3600.0 / elapsed if elapsed > 0 else 0.0

    def add(self, line: ResultLine) -> None:
        self.done += 1
        self.counts[line.result.value] += 1
        if not self.enabled:
            return
        if self.live and self.task is not None:
            self.bar.update(self.task, advance=1, description=self._description(),
                            rate=f"{self.rate_per_hour():.0f}/h")
            return
        mark = "ok " if line.passed else "BAD"
        total = line.times.get("total")
        seconds = f" {total:.1f} s" if total is not None else ""
        seed = f" seed {line.seed}" if line.seed is not None else ""
        self.console.print(f"[{self.done}/{self.total}] {mark} {line.cell} #{line.iteration}"
                           f"{seed}: {line.result.value} (expected {line.expected.value})"
                           f"{seconds}", markup=False)

    def note(self, text: str) -> None:
        if self.enabled:
            self.console.print(text, markup=False)


class _StatusHandler(logging.Handler):
    """Shows the newest log message of a long step in its status line."""

    def __init__(self, update: Callable[[str], None]) -> None:
        super().__init__(logging.INFO)
        self.update = update

    def emit(self, record: logging.LogRecord) -> None:
        self.update(record.getMessage())


#: A step shorter than this says nothing when it ends (a cached image is not news).
QUIET_UNDER = 2.0


@contextlib.contextmanager
def long_step(what: str, *, loggers: tuple[str, ...] = ("harness.images",),
              enabled: bool = True) -> Iterator[None]:
    """Show a step that may take long: on a terminal a spinner with the elapsed time and
    the step's newest log message (image builds log each download), elsewhere each log
    message as a line; either way "done in N s" at the end when it took a while.  So a
    first run never sits silent for tens of seconds, and a cached image stays quiet."""
    if not enabled:
        yield
        return
    console = stderr_console()
    started = time.monotonic()
    said = [False]
    with contextlib.ExitStack() as stack:
        if console.is_terminal:
            status = stack.enter_context(console.status(what))

            def update(message: str) -> None:
                status.update(f"{what} ({time.monotonic() - started:.0f} s): {message}")
        else:
            def update(message: str) -> None:
                said[0] = True
                console.print(f"{what}: {message}", markup=False)

        stack.enter_context(_logging_to(update, loggers))
        yield
    elapsed = time.monotonic() - started
    if said[0] or elapsed >= QUIET_UNDER:
        console.print(f"{what}: done in {elapsed:.1f} s", markup=False)


@contextlib.contextmanager
def _logging_to(update: Callable[[str], None], loggers: tuple[str, ...]) -> Iterator[None]:
    """INFO messages of ``loggers`` go to ``update`` for the duration."""
    handler = _StatusHandler(update)
    targets = [logging.getLogger(name) for name in loggers]
    levels = [t.level for t in targets]
    for t in targets:
        t.addHandler(handler)
        if t.level == logging.NOTSET or t.level > logging.INFO:
            t.setLevel(logging.INFO)
    try:
        yield
    finally:
        for t, level in zip(targets, levels, strict=True):
            t.removeHandler(handler)
            t.setLevel(level)
