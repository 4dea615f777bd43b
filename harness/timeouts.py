"""One source of timeouts and deadlines.

Every wait in the harness polls a predicate against a monotonic deadline and fails with
an error naming what did not happen.  Base values are for KVM; ``scale()`` stretches them
for TCG (and ``KDUMP_HARNESS_TIMEOUT_SCALE`` for slow hosts), as syzkaller does with its
single timeout factor.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import TypeVar

from .errors import DeadlineExceeded

T = TypeVar("T")

#: TCG emulates every instruction; measured here, TCG boots take roughly 3x KVM's.
TCG_FACTOR = 3.0


def _scale() -> float:
    """The ``timeout_scale`` setting (``KDUMP_HARNESS_TIMEOUT_SCALE``)."""
    from .settings import current

    return current().timeout_scale


@dataclass(frozen=True)
class Timeouts:
    """Base timeouts in seconds (KVM); use ``for_accel`` to get the scaled set."""

    boot: float = 20.0            # QEMU start to guest userspace ready
    ssh_connect: float = 10.0
    command: float = 60.0          # one guest command, unless the caller says otherwise
    kdump_load: float = 20.0
    qmp_command: float = 10.0
    settle: float = 30.0           # a swarm's end to the guest showing all of it
    panic: float = 10.0            # trigger to "Kernel panic" on the console
    capture_boot: float = 30.0     # panic to capture-kernel userspace
    dump_write: float = 120.0      # capture userspace to "dump written"
    shutdown: float = 10.0
    snapshot_save: float = 20.0    # a stopped guest's RAM and devices written to a file
    snapshot_restore: float = 5.0  # QEMU start to a restored guest running again
    gauge: float = 10.0            # bench's TCG gauge: its QEMU, start to exit (~0.3 s)
    # One campaign iteration end to end (repro, matrix): a watchdog over the job's own
    # deadlines, for a worker that hangs where no deadline reaches (it is then killed).
    iteration: float = 300.0
    factor: float = 1.0

    @classmethod
    def for_accel(cls, accel: str) -> Timeouts:
        """The base values stretched for ``accel`` ("tcg" or "kvm") and the environment."""
        factor = (TCG_FACTOR if accel == "tcg" else 1.0) * _scale()
        base = cls()
        scaled = {f.name: getattr(base, f.name) * factor for f in fields(cls) if f.name != "factor"}
        return cls(factor=factor, **scaled)


class Deadline:
    """A point on the monotonic clock, with the question of how much time is left."""

    def __init__(self, seconds: float, what: str) -> None:
        self.seconds = seconds
        self.what = what
        self.start = time.monotonic()
        self.end = self.start + seconds

    def remaining(self) -> float:
        return max(0.0, self.end - time.monotonic())

    def expired(self) -> bool:
        return time.monotonic() >= self.end

    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def fail(self, detail: str | None = None) -> DeadlineExceeded:
        msg = f"{self.what} did not happen within {self.seconds:.1f} s"
        return DeadlineExceeded(msg, details=detail)


def poll(
    predicate: Callable[[], T | None],
    *,
    deadline: Deadline,
    interval: float = 0.05,
    health: Callable[[], None] | None = None,
) -> T | None:
    """Call ``predicate`` until it returns a truthy value (returned) or ``deadline``
    passes (``None``: the caller says what is missing).

    ``health`` runs between attempts and raises when waiting longer is pointless: the
    guest's ``check_health`` fails at once on a dead QEMU or a panic, an OOM or a refused
    DIMM on the console, instead of at the deadline.
    """
    while True:
        value = predicate()
        if value:
            return value
        if deadline.expired():
            return None
        if health is not None:
            health()
        time.sleep(min(interval, deadline.remaining()) or interval)


def wait_until(
    predicate: Callable[[], T | None],
    *,
    timeout: float,
    what: str,
    interval: float = 0.05,
    describe: Callable[[], str] | None = None,
    health: Callable[[], None] | None = None,
) -> T:
    """Poll ``predicate`` until it returns a truthy value, or raise naming ``what``.

    ``describe`` is called on failure to say what state things were left in; ``health``
    as for ``poll``.  Every wait in the harness is this one or ``poll`` (the console's
    line waits are ``Console.wait_for``, woken by arriving lines instead of a timer).
    """
    deadline = Deadline(timeout, what)
    value = poll(predicate, deadline=deadline, interval=interval, health=health)
    if value:
        return value
    raise deadline.fail(describe() if describe else None)
