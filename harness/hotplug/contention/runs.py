"""What each contention source did: its reloads, udev events and readers, read back from
the logs its scripts wrote in the guest."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any

from .spec import ContentionSpec

_RELOAD_LINE = re.compile(r"reload (\d+) start=([\d.]+) end=([\d.]+) rc=(\d+)")
_UDEV_LINE = re.compile(
    r"^([\d.]+) (\w+) (\w+) (\S+) crash_hotplug=(\S+)(?: reload rc=(\d+)| (coalesced))?")


@dataclass
class ContentionRun:
    """What one contention source did (guest times are uptime seconds)."""

    spec: ContentionSpec
    cpu: int | None
    started_at: float | None = None         # host seconds from the swarm's first event
    reloads: list[dict[str, float]] = field(default_factory=list)
    events: int = 0                         # udev: uevents handled
    zero_reads: int = 0                     # udev: crash_hotplug read something other than 1
    coalesced: int = 0                      # udev: reload requests absorbed by a queued one
    reads: int = 0                          # readers: total reads
    via: str = ""                           # udev: "helper" or "uevent"
    #: sync=lock: host seconds from the start to the guest reporting the lock held
    #: (None: it never did, and the swarm went ahead once the reload ended or timed out).
    lock_seen_after: float | None = None
    #: Something that makes this run weaker than it could be (not an error).
    note: str | None = None
    error: str | None = None

    def to_json_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["spec"] = self.spec.to_json_dict()
        return d

    def summary(self) -> str:
        text = f"{self.spec.kind} on cpu {self.cpu if self.cpu is not None else 'any'}"
        if self.started_at is not None:
            text += f", started {self.started_at:+.2f} s"
        if self.spec.kind == "reload" or self.reloads:
            failed = sum(1 for r in self.reloads if r.get("rc"))
            text += f", {len(self.reloads)} reloads ({failed} failed)"
        if self.spec.synced:
            text += (f", lock held {self.lock_seen_after:.2f} s after start"
                     if self.lock_seen_after is not None else ", lock never seen held")
        if self.spec.kind == "udev":
            text += (f" via {self.via or '?'}, {self.events} events, {self.zero_reads} not-1 "
                     f"reads, {self.coalesced} coalesced")
        if self.spec.kind == "readers":
            text += f", {self.reads} reads"
        if self.note:
            text += f"; note: {self.note}"
        if self.error:
            text += f"; error: {self.error}"
        return text


def parse_reload_log(text: str) -> list[dict[str, float]]:
    return [{"n": int(m.group(1)), "start": float(m.group(2)), "end": float(m.group(3)),
             "rc": int(m.group(4))} for m in _RELOAD_LINE.finditer(text)]


def parse_udev_log(text: str) -> tuple[int, int, int, list[dict[str, float]]]:
    """``(events, reads other than 1, coalesced requests, reloads)`` from the handler's log."""
    events = zero = coalesced = 0
    reloads: list[dict[str, float]] = []
    for line in text.splitlines():
        m = _UDEV_LINE.match(line.strip())
        if not m:
            continue
        events += 1
        if m.group(5) != "1":
            zero += 1
        if m.group(6) is not None:
            reloads.append({"at": float(m.group(1)), "rc": int(m.group(6))})
        if m.group(7):
            coalesced += 1
    return events, zero, coalesced, reloads
