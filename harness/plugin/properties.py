"""JUnit XML properties (``record_property``): what CI dashboards plot, per test.

Every guest test carries ``kernel_release``, ``accel`` and ``evidence``; a test that
reached a result carries ``result``, ``expected``, ``family`` and ``time.<phase>``; a
panic carries the kexec lock holder the kernel's log names (``lock_holder``,
``lock_caught``).  The ``kdump`` fixture records them itself; ``make_guest`` records its
guests; a test that runs the command line records its ``verdict.json`` with
``record_verdict``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest

from ..api import CaptureResult, Guest

Record = Callable[[str, object], None]

#: ``expected`` of a test that judges the result itself (from the kernel's own evidence).
JUDGED_BY_TEST = "any"


def recorder(node: pytest.Item) -> Record:
    """``record(name, value)`` appending to ``node``'s JUnit properties."""
    def record(name: str, value: object) -> None:
        node.user_properties.append((name, value))
    return record


def record_lock(record: Record, capture: CaptureResult) -> None:
    """The kexec lock holder the kernel's log names at the panic."""
    lock = capture.lock_at_panic
    if lock is not None:
        record("lock_holder", lock.holder.value)
        if lock.caught_holder is not None:
            record("lock_caught", lock.caught_in)


def record_guest(record: Record, guest: Guest) -> None:
    """A booted guest: its kernel, the accelerator that ran it, its boot time."""
    record("kernel_release", guest.image.kernel_release)
    record("accel", guest.accel.name)
    record("time.boot_to_kdump_ready", guest.times.kdump_ready)
    if guest.restored_from is not None:
        record("snapshot", guest.restored_from.name)
        record("time.restore", guest.times.restore)


def record_verdict(record: Record, verdict: Mapping[str, Any], *,
                   expected: str | None = None) -> None:
    """A ``verdict.json`` (``JobResult.to_json_dict``): written by ``kdump-harness run``,
    or a ``kdump.run`` scenario's job.  ``expected`` replaces the verdict's own (a test
    that judges the result itself records ``JUDGED_BY_TEST``)."""
    for name in ("kernel_release", "accel", "result", "expected", "family"):
        value = expected if name == "expected" and expected is not None else verdict.get(name)
        if value is not None:
            record(name, value)
    for phase, seconds in (verdict.get("times") or {}).items():
        if seconds is not None:
            record(f"time.{phase}", round(float(seconds), 3))
    if verdict.get("snapshot"):
        record("snapshot", Path(verdict["snapshot"]).name)
    klog = (verdict.get("swarm") or {}).get("klog") or {}
    if "trylock_failures" in klog:
        record("trylock_failures", klog["trylock_failures"])
    lock = (verdict.get("capture") or {}).get("lock_at_panic") or {}
    if lock.get("holder"):
        record("lock_holder", str(lock["holder"]))
        if lock.get("caught_holder") is not None:
            record("lock_caught", lock["caught_in"])


__all__ = ["JUDGED_BY_TEST", "Record", "record_guest", "record_lock", "record_verdict",
           "recorder"]
