"""What QEMU says the guest did with each device operation, from its event stream.

``HotplugTracker`` turns ``ACPI_DEVICE_OST`` (a plug taken or refused),
``DEVICE_DELETED`` (an unplug finished) and ``MEMORY_DEVICE_SIZE_CHANGE`` (virtio-mem
resized) into per-device ``DeviceOp`` state; a refusal is reported at once, never waited
out as a timeout.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .devices import (
    DELETED_EVENT,
    OST_EVENT,
    SIZE_CHANGE_EVENT,
    OstVerdict,
    describe_ost,
    ost_verdict,
)


class OpKind(enum.Enum):
    """The kind of device operation the tracker follows."""

    PLUG = "plug"
    UNPLUG = "unplug"
    RESIZE = "resize"


@dataclass
class DeviceOp:
    """One device operation in flight and how it ended (times: host monotonic)."""

    device: str
    kind: OpKind
    sent_at: float
    target_size: int | None = None        # RESIZE: the requested size
    done_at: float | None = None
    refused: str | None = None            # the guest's _OST failure, in words
    last_size: int | None = None          # RESIZE: the latest size QEMU reported
    events: list[dict[str, Any]] = field(default_factory=list)

    @property
    def finished(self) -> bool:
        return self.done_at is not None or self.refused is not None

    def latency(self) -> float | None:
        return None if self.done_at is None else self.done_at - self.sent_at

    def describe(self) -> str:
        if self.refused:
            return f"{self.device} {self.kind.value}: refused by the guest ({self.refused})"
        if self.done_at is not None:
            return f"{self.device} {self.kind.value}: done in {self.latency():.3f} s"
        waiting = {OpKind.PLUG: f"no successful {OST_EVENT}",
                   OpKind.UNPLUG: f"no {DELETED_EVENT}",
                   OpKind.RESIZE: f"size {self.last_size if self.last_size is not None else '?'}"
                                  f" of {self.target_size}"}[self.kind]
        return f"{self.device} {self.kind.value}: {waiting}"


class HotplugTracker:
    """Per-device state built from the QMP event stream (feed it every event)."""

    def __init__(self) -> None:
        self.ops: dict[str, DeviceOp] = {}
        self.history: list[DeviceOp] = []

    def sent(self, device: str, kind: OpKind, *, target_size: int | None = None,
             at: float | None = None, already_done: bool = False) -> DeviceOp:
        op = DeviceOp(device, kind, at if at is not None else time.monotonic(), target_size)
        if already_done:
            op.done_at = op.sent_at
        self.ops[device] = op
        self.history.append(op)
        return op

    def feed(self, event: Mapping[str, Any], at: float | None = None) -> DeviceOp | None:
        """Apply one QMP event; returns the operation it concerned, if any."""
        now = at if at is not None else time.monotonic()
        name, data = event.get("event"), event.get("data", {})
        if name == OST_EVENT:
            info = data.get("info", {})
            op = self.ops.get(str(info.get("device", "")))
            if op is None or op.finished or op.kind is OpKind.RESIZE:
                return op
            op.events.append(dict(event))
            source, status = int(info.get("source", 0)), int(info.get("status", 0))
            verdict = ost_verdict(source, status)
            if verdict is OstVerdict.FAILURE:
                op.refused = describe_ost(source, status)
            elif verdict is OstVerdict.SUCCESS and op.kind is OpKind.PLUG:
                op.done_at = now
            return op
        if name == DELETED_EVENT:
            op = self.ops.get(str(data.get("device", "")))
            if op is not None and op.kind is OpKind.UNPLUG and not op.finished:
                op.events.append(dict(event))
                op.done_at = now
            return op
        if name == SIZE_CHANGE_EVENT:
            op = self.ops.get(str(data.get("id", "")))
            if op is not None and op.kind is OpKind.RESIZE and not op.finished:
                op.events.append(dict(event))
                op.last_size = int(data.get("size", -1))
                if op.last_size == op.target_size:
                    op.done_at = now
            return op
        return None

    def pending(self, devices: Iterable[str] | None = None) -> list[DeviceOp]:
        wanted = set(devices) if devices is not None else None
        return [op for op in self.ops.values()
                if not op.finished and (wanted is None or op.device in wanted)]

    def refused(self) -> list[DeviceOp]:
        return [op for op in self.history if op.refused]
