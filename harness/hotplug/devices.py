"""Hot-plug devices: DIMMs, virtio-mem and vCPUs through QMP, and the guest's answers.

QEMU's ``device_add`` returns long before the guest has done anything, and it returns
success even when the guest then drops the device (KNOWLEDGE.md: the TCG lapic quirk).
So every operation here has two halves: the QMP commands (pure argument builders plus
thin senders) and the evidence that the guest took it:

* ``ACPI_DEVICE_OST``: the guest's ``_OST`` report for a DIMM or vCPU slot; a failure
  status is a clear refusal, reported at once and never waited out as a timeout;
* ``DEVICE_DELETED``: the end of an unplug (the guest ejected the device);
* ``MEMORY_DEVICE_SIZE_CHANGE``: virtio-mem plugged or unplugged memory.

``HotplugTracker`` turns that event stream into per-device state; the swarm runner
(``harness.hotplug.runner``) feeds it and checks the guest's own view with the topology oracle.
"""

from __future__ import annotations

import enum
import re
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..errors import GuestCommandError, HarnessError, HotplugNotHonoured, QmpError, UsageError
from ..units import size_option

if TYPE_CHECKING:
    from ..guest import Guest
    from ..guest.qmp import Qmp

OST_EVENT = "ACPI_DEVICE_OST"
DELETED_EVENT = "DEVICE_DELETED"
SIZE_CHANGE_EVENT = "MEMORY_DEVICE_SIZE_CHANGE"
#: Every QMP event a hot-plug operation can end with (listen for these before acting).
HOTPLUG_EVENTS = (OST_EVENT, DELETED_EVENT, SIZE_CHANGE_EVENT)

#: The memory backend behind a device gets the device's id plus this suffix.
BACKEND_SUFFIX = "-mem"


class OstSource(enum.IntEnum):
    """``_OST`` source event codes (ACPI 6.5, 6.3.5; Linux include/acpi/actypes.h)."""

    DEVICE_CHECK = 0x1          # QEMU notifies insertion with Device Check
    EJECT_REQUEST = 0x3
    OSPM_EJECT = 0x103
    OSPM_INSERTION = 0x200


class OstStatus(enum.IntEnum):
    """``_OST`` status codes as Linux reports them (include/acpi/acpi_bus.h)."""

    SUCCESS = 0x0
    NON_SPECIFIC_FAILURE = 0x1
    UNRECOGNIZED_NOTIFY = 0x2
    # For ejection requests (source 0x3 / 0x103):
    EJECT_NOT_SUPPORTED = 0x80
    DEVICE_IN_USE = 0x81
    DEVICE_BUSY = 0x82
    EJECT_DEPENDENCY_BUSY = 0x83
    EJECT_IN_PROGRESS = 0x84


_INSERT_IN_PROGRESS = 0x80   # for source 0x200 the same number means "in progress"


class OstVerdict(enum.Enum):
    """How one ``_OST`` report ends an operation."""

    SUCCESS = "success"
    IN_PROGRESS = "in-progress"
    FAILURE = "failure"


def ost_verdict(source: int, status: int) -> OstVerdict:
    """Classify one ``_OST`` report: done, still going, or refused."""
    if status == OstStatus.SUCCESS:
        return OstVerdict.SUCCESS
    if source in (OstSource.EJECT_REQUEST, OstSource.OSPM_EJECT) and \
            status == OstStatus.EJECT_IN_PROGRESS:
        return OstVerdict.IN_PROGRESS
    if source == OstSource.OSPM_INSERTION and status == _INSERT_IN_PROGRESS:
        return OstVerdict.IN_PROGRESS
    return OstVerdict.FAILURE


def describe_ost(source: int, status: int) -> str:
    """``_OST`` codes in words, for error messages."""
    try:
        src = OstSource(source).name.lower().replace("_", " ")
    except ValueError:
        src = f"source {source:#x}"
    try:
        st = OstStatus(status).name.lower().replace("_", " ")
    except ValueError:
        st = f"status {status:#x}"
    if source == OstSource.OSPM_INSERTION and status == _INSERT_IN_PROGRESS:
        st = "insertion in progress"
    return f"{src}: {st} ({status:#x})"


# == Pure argument builders =============================================================

def backend_id(device_id: str) -> str:
    return device_id + BACKEND_SUFFIX


def validate_memory_size(size: int, block_size: int, what: str) -> None:
    """Refuse sizes the guest could only half use: memory comes online per block."""
    if size <= 0:
        raise UsageError(f"{what}: size must be positive, not {size}")
    if size % block_size:
        raise UsageError(f"{what}: {size_option(size)} is not a multiple of the guest's "
                         f"memory block size {size_option(block_size)}")


def dimm_backend_args(device_id: str, size: int) -> dict[str, Any]:
    """``object-add`` arguments for a DIMM's RAM backend."""
    return {"qom-type": "memory-backend-ram", "id": backend_id(device_id), "size": size}


def dimm_device_args(device_id: str) -> dict[str, Any]:
    """``device_add`` arguments for a ``pc-dimm`` on the backend of the same name."""
    return {"driver": "pc-dimm", "id": device_id, "memdev": backend_id(device_id)}


def cpu_device_args(device_id: str, driver: str, props: Mapping[str, int]) -> dict[str, Any]:
    """``device_add`` arguments for a vCPU in the slot ``props`` (from query-hotpluggable-cpus)."""
    return {"driver": driver, "id": device_id, **dict(props)}


def virtio_mem_resize_args(device_id: str, size: int) -> dict[str, Any]:
    """``qom-set`` arguments that ask the guest to grow or shrink a virtio-mem device."""
    return {"path": f"/machine/peripheral/{device_id}", "property": "requested-size",
            "value": size}


def virtio_mem_qemu_args(device_id: str, max_size: int, *, requested: int = 0) -> tuple[str, ...]:
    """QEMU arguments for a virtio-mem device present from boot (``GuestConfig.qemu_args``).

    The device is cold-plugged: q35's root bus cannot take a hot-plugged PCI device, and
    the interesting part, the guest plugging and unplugging memory blocks as
    ``requested-size`` changes, is the same either way.  Its region counts against maxmem.
    """
    device = (f"virtio-mem-pci,id={device_id},memdev={backend_id(device_id)},"
              f"requested-size={requested}")
    return ("-object", f"memory-backend-ram,id={backend_id(device_id)},size={max_size}",
            "-device", device)


@dataclass(frozen=True)
class FreeCpuSlot:
    """An empty vCPU slot: the driver type and the topology ids ``device_add`` needs."""

    driver: str
    props: tuple[tuple[str, int], ...]

    @property
    def props_dict(self) -> dict[str, int]:
        return dict(self.props)

    def label(self) -> str:
        return ",".join(f"{k}={v}" for k, v in self.props)


def free_cpu_slots(hotpluggable: Sequence[Mapping[str, Any]]) -> list[FreeCpuSlot]:
    """Empty slots from ``query-hotpluggable-cpus``, lowest socket/core/thread first."""
    slots = []
    for item in hotpluggable:
        if item.get("qom-path"):
            continue
        props = tuple(sorted((str(k), int(v)) for k, v in item.get("props", {}).items()))
        slots.append(FreeCpuSlot(str(item["type"]), props))
    order = ("socket-id", "die-id", "cluster-id", "core-id", "thread-id")
    slots.sort(key=lambda s: tuple(s.props_dict.get(k, 0) for k in order))
    return slots


def peripheral_path(device_id: str) -> str:
    """The QOM path of a device created with ``device_add id=...``."""
    return f"/machine/peripheral/{device_id}"


def cpu_indexes(cpus_fast: Iterable[Mapping[str, Any]]) -> dict[str, int]:
    """``{device id: cpu-index}`` for hot-added vCPUs, from ``query-cpus-fast``."""
    prefix = "/machine/peripheral/"
    return {str(c["qom-path"])[len(prefix):]: int(c["cpu-index"]) for c in cpus_fast
            if str(c.get("qom-path", "")).startswith(prefix)}


# == Thin QMP senders ====================================================================

def plug_dimm(qmp: Qmp, device_id: str, size: int) -> None:
    """Create the backend and the ``pc-dimm``; undo the backend if QEMU refuses the DIMM."""
    qmp.execute("object-add", dimm_backend_args(device_id, size))
    try:
        qmp.execute("device_add", dimm_device_args(device_id))
    except QmpError:
        qmp.execute("object-del", {"id": backend_id(device_id)})
        raise


def plug_cpu(qmp: Qmp, device_id: str, slot: FreeCpuSlot) -> None:
    qmp.execute("device_add", cpu_device_args(device_id, slot.driver, slot.props_dict))


def unplug(qmp: Qmp, device_id: str) -> None:
    """Ask the guest to eject ``device_id`` (completion is ``DEVICE_DELETED``)."""
    qmp.execute("device_del", {"id": device_id})


def drop_backend(qmp: Qmp, device_id: str) -> None:
    """Free a removed DIMM's RAM backend (QEMU keeps it until told)."""
    qmp.execute("object-del", {"id": backend_id(device_id)})


def resize_virtio_mem(qmp: Qmp, device_id: str, size: int) -> None:
    qmp.execute("qom-set", virtio_mem_resize_args(device_id, size))


# == Tracking what the guest did ========================================================

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


# == Guest-side helpers =================================================================

def memory_block_size(guest: Guest) -> int:
    """The guest's memory block size in bytes (sysfs prints it in hex)."""
    text = guest.readiness.get("block_size").strip()
    if not text:
        text = guest.run("cat /sys/devices/system/memory/block_size_bytes", check=True).stdout
    return int(text.strip(), 16)


#: The module group (``/etc/harness/modules/<group>``) that carries the virtio-mem driver.
VIRTIO_MEM_GROUP = "mem"


def ensure_virtio_mem_driver(guest: Guest) -> None:
    """Load the virtio-mem driver (a module in Debian kernels) and check it bound.

    The image builder lists module groups in ``/etc/harness/modules``; a missing group
    means the driver is built in.
    """
    driver = "/sys/bus/virtio/drivers/virtio_mem"
    cmd = (f"[ -d {driver} ] || {{ . /harness/lib.sh; load_modules {VIRTIO_MEM_GROUP}; }}; "
           f"[ -d {driver} ] && echo loaded || "
           f"{{ echo missing; ls /etc/harness/modules; tail -5 /run/harness/modules.log; }}")
    out = guest.run(cmd).stdout
    if not out.startswith("loaded"):
        raise HotplugNotHonoured("the guest has no virtio-mem driver: no virtio_mem module "
                                 f"group loaded it ({VIRTIO_MEM_GROUP!r})", details=out)


def online_cpus_command(cpus: Iterable[int]) -> str:
    """Online guest CPUs the way udev's rule does: write 1 to ``cpuN/online``."""
    items = " ".join(str(c) for c in sorted(set(cpus)))
    # Report each failure by name; carry on with the others, as udev workers would.
    return (f"rc=0; for n in {items}; do echo 1 > /sys/devices/system/cpu/cpu$n/online "
            f"|| {{ echo \"cpu$n: onlining failed\" >&2; rc=1; }}; done; exit $rc")


def online_cpus(guest: Guest, cpus: Iterable[int]) -> float:
    """Online ``cpus`` (guest numbers); returns the seconds it took.  Fails naming each CPU."""
    wanted = sorted(set(cpus))
    if not wanted:
        return 0.0
    started = time.monotonic()
    try:
        guest.run(online_cpus_command(wanted), check=True)
    except GuestCommandError as exc:
        raise HotplugNotHonoured(f"the guest would not online CPUs {wanted}",
                                 details=exc.output) from exc
    return time.monotonic() - started


def acpi_cpu_name(cpu_index: int) -> str:
    """QEMU's ACPI object name for a vCPU slot (hw/acpi/cpu.c: ``CPU_NAME_FMT "C%.03X"``)."""
    return f"C{cpu_index:03X}"


def online_by_index_command(cpu_indexes: Iterable[int]) -> str:
    """Online the guest CPUs behind QEMU ``cpu_indexes``, found by their ACPI object name.

    The guest numbers hot-added CPUs itself; the ACPI path (``\\_SB.CPUS.C002``) names the
    QEMU slot, so this needs no round trip to learn the numbers first.  Prints
    ``online N PATH``, ``already N PATH`` or ``failed N PATH`` per CPU.
    """
    names = "|".join(acpi_cpu_name(i) for i in sorted(set(cpu_indexes)))
    return ("rc=0; for p in $(grep -lE '\\.(" + names + ")$' "
            "/sys/devices/system/cpu/cpu[0-9]*/firmware_node/path 2>/dev/null); do "
            "d=${p%/firmware_node/path}; n=${d##*/cpu}; "
            "if [ \"$(cat $d/online)\" = 1 ]; then echo \"already $n $(cat $p)\"; "
            "elif echo 1 > $d/online; then echo \"online $n $(cat $p)\"; "
            "else echo \"failed $n $(cat $p)\"; rc=1; fi; done; exit $rc")


_ONLINE_LINE = re.compile(r"^(online|already|failed) (\d+) \S*\.C([0-9A-Fa-f]+)$", re.MULTILINE)


class CpuOnliner:
    """Onlines hot-added vCPUs as their ``_OST`` arrives, in a worker thread, like udev.

    udev onlines each CPU from its own uevent while the rest of a swarm is still being
    processed; waiting for the whole swarm first would serialise what a real system
    overlaps.  Work queued while a batch runs goes into the next batch.
    """

    def __init__(self, guest: Guest) -> None:
        self.guest = guest
        self.onlined: dict[int, int] = {}        # QEMU cpu-index -> guest CPU number
        self.failed: dict[int, str] = {}
        self.batches: list[dict[str, Any]] = []  # {"indexes", "started", "seconds", "output"}
        self.seconds = 0.0
        self._queue: list[int] = []
        self._busy = False
        self._closed = False
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None

    def submit(self, cpu_index: int) -> None:
        with self._cond:
            self._queue.append(cpu_index)
            if self._thread is None:
                self._thread = threading.Thread(target=self._work, name="cpu-onliner",
                                                daemon=True)
                self._thread.start()
            self._cond.notify_all()

    def wait_idle(self, timeout: float) -> bool:
        """True once everything submitted has been tried; False when ``timeout`` passed."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._queue or self._busy:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, 0.1))
        return True

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=self.guest.timeouts.command)

    def _work(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._closed:
                    self._cond.wait()
                if not self._queue:
                    return
                batch, self._queue = sorted(set(self._queue)), []
                self._busy = True
            started = time.monotonic()
            record: dict[str, Any] = {"indexes": batch, "started": started}
            try:
                result = self.guest.run(online_by_index_command(batch))
                record["output"] = result.stdout + result.stderr
                for m in _ONLINE_LINE.finditer(result.stdout):
                    index = int(m.group(3), 16)
                    if m.group(1) == "failed":
                        self.failed[index] = f"writing cpu{m.group(2)}/online failed"
                    else:
                        self.onlined[index] = int(m.group(2))
                for index in batch:
                    if index not in self.onlined and index not in self.failed:
                        self.failed[index] = (f"no guest CPU has the ACPI object "
                                              f"{acpi_cpu_name(index)}")
            except HarnessError as exc:   # a worker thread: record, the settle reports it
                record["error"] = exc.message
                for index in batch:
                    self.failed[index] = exc.message
            finally:
                record["seconds"] = time.monotonic() - started
                with self._cond:
                    self.seconds += record["seconds"]
                    self.batches.append(record)
                    self._busy = False
                    self._cond.notify_all()
