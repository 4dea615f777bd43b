"""The injector: starts each source at its time around the swarm, waits (for ``sync=lock``)
until the guest reports the kexec lock held, then stops them all and collects their logs."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from ...errors import HarnessError, UsageError
from ...guest.console import LineBuffer
from ...timeouts import Deadline, poll
from .runs import ContentionRun, parse_reload_log, parse_udev_log
from .scripts import install_command, irq_cpu, start_command
from .spec import ACPI_IRQ, DIR, LOCKED_MARK, PREEMPT_FULL, RELOADING, ContentionSpec

if TYPE_CHECKING:
    import paramiko

    from ...guest import Guest

class ContentionInjector:
    """Starts contention sources at their offsets from a swarm and collects what they did.

    ``prepare()`` installs the scripts and resolves the ACPI-IRQ CPU; ``lead`` says how
    long before the swarm's first event the earliest source starts; ``schedule(t0)``
    arms timers; ``stop()`` ends the sources (waiting, bounded, for reloads in flight)
    and returns one ``ContentionRun`` each.  A swarm stopped early by a hook leaves the
    injector running: whoever panics the guest decides whether to call ``stop()``.
    """

    def __init__(self, guest: Guest, specs: Sequence[ContentionSpec], *,
                 kexec_mode: str | None = None) -> None:
        self.guest = guest
        self.specs = tuple(specs)
        mode = kexec_mode or (guest.kdump_mode if guest.config.kexec != "none" else "none")
        if any(s.kind in ("reload", "udev") for s in self.specs) and mode not in ("file",
                                                                                  "classic"):
            raise UsageError(f"reload contention needs a kdump load mode (file or classic), "
                             f"not {mode!r}")
        self.kexec_mode = mode
        self.runs = [ContentionRun(s, s.cpu) for s in self.specs]
        self._timers: list[threading.Timer] = []
        self._channels: list[tuple[ContentionRun, paramiko.Channel]] = []
        self._lock = threading.Lock()
        self._t0: float | None = None
        self._started: dict[int, float] = {}     # id(run) -> host monotonic start
        self.acpi_cpu: int | None = None
        self.prepared = False
        self.stopped = False

    @property
    def lead(self) -> float:
        """Seconds before the swarm's first event that the earliest timed source starts."""
        return max([0.0] + [-s.offset for s in self.specs if not s.synced])

    @property
    def synced(self) -> bool:
        """Whether the swarm must ``wait_synced()`` before its first event."""
        return any(s.synced for s in self.specs)

    @property
    def sync_delay(self) -> float:
        """Seconds from the lock being seen held to the swarm's first event."""
        return max([0.0] + [max(s.offset, 0.0) for s in self.specs if s.synced])

    def prepare(self) -> None:
        """Install the guest scripts and resolve the CPUs to pin to (one SSH command each)."""
        cmdline = self.guest.run(f"{install_command()}\ncat /proc/cmdline", check=True).stdout
        if PREEMPT_FULL not in cmdline.split():
            for run in self.runs:
                if run.spec.kind in RELOADING:
                    run.note = (f"the guest was not booted with {PREEMPT_FULL}: hot-plug "
                                "work stalls on RCU while kexec_file_load computes its "
                                "digest, so only part of the lock window counts")
        if any(s.kind == "reload" and s.cpu is None for s in self.specs):
            out = self.guest.run(f"cat /proc/irq/{ACPI_IRQ}/effective_affinity_list "
                                 f"2>/dev/null; echo @@; cat /proc/interrupts", check=True).stdout
            effective, _, interrupts = out.partition("@@")
            self.acpi_cpu = irq_cpu(interrupts, ACPI_IRQ, effective)
            for run in self.runs:
                if run.spec.kind == "reload" and run.spec.cpu is None:
                    run.cpu = self.acpi_cpu
        self.prepared = True

    def schedule(self, t0: float) -> None:
        """Start each source at ``t0 + offset`` (host monotonic); late ones start at once."""
        if not self.prepared:
            self.prepare()
        self._t0 = t0
        for run in self.runs:
            at = time.monotonic() if run.spec.synced else t0 + run.spec.offset
            delay = max(0.0, at - time.monotonic())
            timer = threading.Timer(delay, self._start, args=(run,))
            timer.daemon = True
            self._timers.append(timer)
            timer.start()

    def _start(self, run: ContentionRun) -> None:
        if self.stopped:
            return
        command = start_command(run.spec, run.cpu, self.kexec_mode, self.runs.index(run))
        try:
            chan = self.guest.ssh.start(command, timeout=self.guest.timeouts.command)
        except Exception as exc:
            run.error = f"could not start: {exc}"
            return
        started = time.monotonic()
        with self._lock:
            self._channels.append((run, chan))
            self._started[id(run)] = started
        if self._t0 is not None:
            run.started_at = started - self._t0

    def _channel(self, run: ContentionRun) -> paramiko.Channel | None:
        with self._lock:
            return next((c for r, c in self._channels if r is run), None)

    def wait_synced(self, timeout: float) -> None:
        """Block until each ``sync=lock`` reload reports the kexec lock held (bounded).

        A reload that ends, or a deadline that passes, without the report is noted in its
        ``error`` and the swarm goes ahead: on kernels before 6.8, or with ``kexec_load``,
        nothing is logged from inside the syscall (use ``sync=none`` there).
        """
        deadline = Deadline(timeout, "the reload reporting the kexec lock held")
        for run in (r for r in self.runs if r.spec.synced):
            lines = LineBuffer()
            poll(lambda: self._lock_reported(run, lines),  # noqa: B023 - used at once
                 deadline=deadline, interval=0.005)
            if run.lock_seen_after is None:
                run.error = run.error or (
                    "the reload never reported holding the kexec lock (sync=lock needs "
                    "kexec_file_load on Linux 6.8+, whose kexec -d logs from inside the "
                    "syscall; use sync=none otherwise); the swarm went ahead without it")

    def _lock_reported(self, run: ContentionRun, lines: LineBuffer) -> bool:
        """Whether ``run`` reported the lock held, or can no longer (it ended, it failed).

        The mark counts only as a whole line: a piece of it proves nothing.
        """
        chan = self._channel(run)
        if run.error is not None:
            return True
        if chan is None:
            return False                  # its timer has not fired yet
        while chan.recv_ready():
            got = lines.feed(chan.recv(4096).decode("utf-8", "replace"))
            if LOCKED_MARK in (line.strip() for line in got):
                run.lock_seen_after = time.monotonic() - self._started[id(run)]
                return True
        return bool(chan.exit_status_ready())

    def rebase(self, t0: float) -> None:
        """The swarm really started at ``t0``: express start times relative to it."""
        self._t0 = t0
        with self._lock:
            for run, _ in self._channels:
                run.started_at = self._started[id(run)] - t0

    def stop(self, timeout: float | None = None) -> list[ContentionRun]:
        """End every source and collect its log; waits at most ``timeout`` for reloads."""
        if self.stopped:
            return self.runs
        self.stopped = True
        for timer in self._timers:
            timer.cancel()
        limit = timeout if timeout is not None else self.guest.timeouts.command
        deadline = Deadline(limit, "the contention sources ending")
        try:
            self.guest.run(f"touch {DIR}/stop", timeout=limit)
            if any(r.spec.kind == "udev" for r in self.runs):
                self._drain_udev(deadline)
            self.guest.run(f"sh {DIR}/udev-stop.sh", timeout=limit)
            # Reloads (and udev handlers' reloads) in flight finish on their own; a
            # half-done reload would leave kdump unloaded for whatever comes next.
            if not poll(self._all_ended, deadline=deadline, interval=0.1):
                for run in self.runs:
                    run.error = run.error or f"still running after {limit:.0f} s"
            self._collect()
        except HarnessError as exc:
            for run in self.runs:
                run.error = run.error or f"could not collect: {exc.message}"
        finally:
            for _, chan in self._channels:
                chan.close()
        return self.runs

    def _all_ended(self) -> bool:
        busy = [r for r, c in self._channels if r.spec.kind == "reload"
                and not c.exit_status_ready()]
        handlers = self.guest.run(f"ls {DIR} | grep -c '^running' || true").stdout
        return not busy and handlers.strip() in ("", "0")

    def _drain_udev(self, deadline: Deadline, quiet: float = 1.0) -> None:
        """Let the handlers catch up with queued uevents, as udev would, before stopping.

        Under TCG each handler takes ~0.1 s, so a swarm leaves a backlog in the netlink
        socket; done means no handler running and no new log line for ``quiet`` seconds.
        """
        seen: list[tuple[str, float]] = [("", time.monotonic())]

        def quiet_now() -> bool:
            state = self.guest.run(f"ls {DIR} | grep -c '^running'; "
                                   f"wc -l < {DIR}/udev.log 2>/dev/null || echo 0").stdout
            running = state.split()[0] if state.split() else "0"
            if state != seen[0][0] or running != "0":
                seen[0] = (state, time.monotonic())
                return False
            return time.monotonic() - seen[0][1] >= quiet

        poll(quiet_now, deadline=deadline, interval=0.1)

    def _collect(self) -> None:
        out = self.guest.run(
            f"cd {DIR}; for f in reload-*.log udev.log udev.via reader.*.count; do "
            f"[ -f $f ] && {{ echo \"@@$f\"; cat $f; }}; done; true").stdout
        files: dict[str, str] = {}
        for chunk in out.split("@@")[1:]:
            name, _, body = chunk.partition("\n")
            files[name.strip()] = body
        events, zero, coalesced, udev_reloads = parse_udev_log(files.get("udev.log", ""))
        for tag, run in enumerate(self.runs):
            if run.spec.kind == "reload":
                run.reloads = parse_reload_log(files.get(f"reload-{tag}.log", ""))
            elif run.spec.kind == "udev":
                run.events, run.zero_reads, run.reloads = events, zero, udev_reloads
                run.coalesced = coalesced
                run.via = files.get("udev.via", "").strip()
            else:
                run.reads = sum(int(v.strip() or 0) for k, v in files.items()
                                if k.startswith(f"reader.{tag}-"))
