"""Run a campaign's iterations over ``--jobs`` worker processes.

Each worker is a process of its own (``spawn``: no inherited QMP loops or sockets) that
takes one task at a time from its own queue, so the parent always knows which iteration
a worker holds: a worker that dies, or hangs past the ``iteration`` watchdog of the
timeouts table, is killed (its QEMU dies with it: parent-death signal), its iteration
becomes a harness error and a fresh worker takes its place.  Each line is appended to
``results.jsonl`` the moment it arrives, so an interrupted campaign keeps what it did.
``until_fail`` stops handing out work at the first unexpected result; the iterations
already running finish and are kept.
"""

from __future__ import annotations

import multiprocessing
import queue
import signal
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

from ..errors import UsageError
from ..results import Family
from .iteration import Task, Where, crash_line_for_exception
from .line import RESULTS_FILE, Kind, ResultLine, write_lines
from .progress import CampaignProgress

__all__ = ["CampaignOptions", "CampaignOutcome", "Task", "run_campaign"]

#: ``git bisect run``'s "cannot test this commit": the harness could not reach a result.
EXIT_UNTESTABLE = 125


@dataclass(frozen=True)
class CampaignOptions:
    campaign: str
    results: Path
    jobs: int = 1
    until_fail: bool = False
    keep_evidence: bool = False
    progress: bool = True
    title: str = "iterations"

    def __post_init__(self) -> None:
        if self.jobs < 1:
            raise UsageError(f"--jobs {self.jobs}: needs at least 1")


@dataclass
class CampaignOutcome:
    lines: list[ResultLine] = field(default_factory=list)
    planned: int = 0
    stopped_early: bool = False
    wall: float = 0.0

    @property
    def findings(self) -> list[ResultLine]:
        return [x for x in self.lines if not x.passed and x.family is not Family.HARNESS]

    @property
    def harness_errors(self) -> list[ResultLine]:
        return [x for x in self.lines if not x.passed and x.family is Family.HARNESS]

    @property
    def exit_status(self) -> int:
        """0 all as expected, 1 a kernel (or guest) finding, 125 the harness could not
        test (only harness errors, or nothing ran): ``git bisect run``'s conventions."""
        if self.findings:
            return 1
        if self.harness_errors or len(self.lines) < min(self.planned, 1):
            return EXIT_UNTESTABLE
        return 0


def _worker_main(tasks: Any, results: Any, index: int, where: Where, jobs: int = 1) -> None:
    from .. import settings
    from .audit_loop import AuditGuests, run_audit
    from .iteration import run_crash

    signal.signal(signal.SIGINT, signal.SIG_IGN)     # the parent handles ^C
    # Every worker runs its own guests: TCG threads (tcg_threads=auto) count the others'.
    settings.default_for_process("guests_at_once", str(jobs))
    guests = AuditGuests(where)
    try:
        while (item := tasks.get()) is not None:
            tid, task = item
            try:
                line = (run_audit(task, where, guests) if task.recipe.kind is Kind.AUDIT
                        else run_crash(task, where))
            except UsageError as exc:
                results.put(("usage", index, tid, str(exc)))
                continue
            except Exception as exc:     # a bug of ours: a harness error, evidence kept
                line = crash_line_for_exception(task, where, exc)
            results.put(("done", index, tid, line.to_json()))
    finally:
        guests.close()


@dataclass
class _Slot:
    process: BaseProcess
    tasks: Any
    holding: tuple[int, Task, float] | None = None


class _Pool:
    """The workers, each with its own task queue, and the one queue of answers."""

    def __init__(self, jobs: int, where: Where) -> None:
        self.ctx = multiprocessing.get_context("spawn")
        self.results: Any = self.ctx.Queue()
        self.where = where
        self.jobs = jobs
        self.slots = [self._start(i) for i in range(jobs)]

    def _start(self, index: int) -> _Slot:
        tasks: Any = self.ctx.Queue()
        proc = self.ctx.Process(target=_worker_main, name=f"kh-worker-{index}", daemon=True,
                                args=(tasks, self.results, index, self.where, self.jobs))
        proc.start()
        return _Slot(proc, tasks)

    def give(self, index: int, tid: int, task: Task) -> None:
        slot = self.slots[index]
        slot.holding = (tid, task, time.monotonic())
        slot.tasks.put((tid, task))

    def idle(self) -> list[int]:
        return [i for i, s in enumerate(self.slots) if s.holding is None]

    def busy(self) -> bool:
        return any(s.holding is not None for s in self.slots)

    def replace(self, index: int) -> None:
        old = self.slots[index]
        if old.process.is_alive():
            old.process.kill()
        old.process.join(5)
        self.slots[index] = self._start(index)

    def kill(self) -> None:
        """Every worker at once (their QEMUs die with them: parent-death signal)."""
        for slot in self.slots:
            if slot.process.is_alive():
                slot.process.kill()
            slot.process.join(5)

    def close(self) -> None:
        for slot in self.slots:
            if slot.process.is_alive():
                slot.tasks.put(None)
        deadline = time.monotonic() + 30
        for slot in self.slots:
            slot.process.join(max(0.0, deadline - time.monotonic()))
            if slot.process.is_alive():
                slot.process.kill()
                slot.process.join(5)


def _watchdog_seconds() -> float:
    from .. import settings
    from ..timeouts import Timeouts

    accel = settings.current().accel
    return Timeouts.for_accel("kvm" if accel == "kvm" else "tcg").iteration


def run_campaign(tasks: Sequence[Task], options: CampaignOptions, *,
                 on_line: Callable[[ResultLine], None] | None = None) -> CampaignOutcome:
    """Run ``tasks``; every recipe is validated first (``UsageError`` before anything)."""
    for recipe in {t.recipe for t in tasks}:
        recipe.validate()
    options.results.mkdir(parents=True, exist_ok=True)
    where = Where(options.campaign, options.results.resolve(), options.keep_evidence)
    outcome = CampaignOutcome(planned=len(tasks))
    started = time.monotonic()
    if not tasks:
        return outcome
    pool = _Pool(min(options.jobs, len(tasks)), where)
    try:
        with CampaignProgress(len(tasks), options.title, enabled=options.progress) as progress:
            _drive(pool, deque(enumerate(tasks)), options, where, outcome, progress, on_line)
    except BaseException:
        pool.kill()         # ^C or a bad recipe: no iteration is worth finishing now
        raise
    finally:
        pool.close()
        outcome.wall = time.monotonic() - started
    return outcome


def _drive(pool: _Pool, pending: deque[tuple[int, Task]], options: CampaignOptions,
           where: Where, outcome: CampaignOutcome, progress: CampaignProgress,
           on_line: Callable[[ResultLine], None] | None) -> None:
    watchdog = _watchdog_seconds()
    results_file = where.results / RESULTS_FILE

    def record(line: ResultLine) -> None:
        write_lines(results_file, [line])
        outcome.lines.append(line)
        progress.add(line)
        if on_line is not None:
            on_line(line)
        if options.until_fail and not line.passed and not outcome.stopped_early:
            outcome.stopped_early = True
            progress.note(f"stopping: iteration {line.iteration} of {line.cell} is "
                          f"{line.result.value}, expected {line.expected.value}")
            pending.clear()

    while True:
        for index in pool.idle():
            if pending:
                pool.give(index, *pending.popleft())
        if not pool.busy():
            return
        try:
            kind, index, tid, payload = pool.results.get(timeout=0.5)
        except queue.Empty:
            _check_workers(pool, where, watchdog, record)
            continue
        slot = pool.slots[index]
        if slot.holding is None or slot.holding[0] != tid:
            continue                    # an answer from a worker already replaced
        slot.holding = None
        if kind == "usage":
            raise UsageError(payload)
        record(ResultLine.from_json_dict(_loads(payload)))


def _loads(text: str) -> dict[str, Any]:
    import json

    data: dict[str, Any] = json.loads(text)
    return data


def _check_workers(pool: _Pool, where: Where, watchdog: float,
                   record: Callable[[ResultLine], None]) -> None:
    """A worker that died or overran the watchdog: its iteration is a harness error."""
    for index, slot in enumerate(pool.slots):
        if slot.holding is None:
            continue
        _, task, since = slot.holding
        why = None
        if not slot.process.is_alive():
            why = f"worker process died (exit code {slot.process.exitcode})"
        elif time.monotonic() - since > watchdog:
            why = f"iteration still running after {watchdog:.0f} s (timeouts: iteration)"
        if why is None:
            continue
        slot.holding = None
        pool.replace(index)
        record(crash_line_for_exception(task, where, _WorkerLost(why)))


class _WorkerLost(Exception):
    pass
