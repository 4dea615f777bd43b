"""What udev would do in the guest: online hot-added vCPUs, load the virtio-mem driver,
and read the guest's memory block size."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from ..errors import GuestCommandError, HarnessError, HotplugNotHonoured

if TYPE_CHECKING:
    from ..guest import Guest


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
