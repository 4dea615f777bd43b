"""The guest's boot protocol: the ``HARNESS:`` lines its /init prints, waited for in order.

``userspace`` (init runs), ``ready`` (its SSH server listens), ``kdump-loaded`` (the
capture kernel's load ended, with kexec's exit status and the syscall used); then one SSH
round trip reads kexec's output and the readiness report.  A failed load is a guest
result in kexec's own words (``kdump_sizing``).
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import asdict
from typing import TYPE_CHECKING

from ..errors import KdumpLoadError
from ..signatures import EMULATOR_FAULTS
from .config import Readiness
from .kdump_sizing import explain_load_failure, reserved_size

if TYPE_CHECKING:
    from .machine import Guest

_USERSPACE = re.compile(r"HARNESS: userspace uptime=(\d+\.\d+)\s*$", re.M)
_READY = re.compile(r"HARNESS: ready uptime=(\d+\.\d+)\s*$", re.M)
_KDUMP_LOADED = re.compile(
    r"HARNESS: kdump-loaded rc=(\d+) syscall=([^\n]*?) uptime=(\d+\.\d+)\s*$", re.M)


def wait_booted(guest: Guest) -> None:
    """Wait for userspace, SSH and the kdump load; record times and readiness."""
    t = guest.timeouts

    def since() -> float:
        return time.monotonic() - guest.launched_at

    user = guest.console.wait_for(_USERSPACE, timeout=t.boot, what="guest userspace",
                                  during_boot=True)
    guest.times.userspace = user.at - guest.launched_at
    guest.times.guest_uptime_userspace = float(user.groups[0] or 0)
    guest.console.wait_for(_READY, timeout=t.boot, what="the guest's SSH server",
                           during_boot=True)
    guest.ssh.connect(timeout=t.ssh_connect)
    guest.times.ssh_ready = since()
    if guest.config.kexec != "none" and guest.config.wait_kdump:
        loaded = guest.console.wait_for(_KDUMP_LOADED, timeout=t.kdump_load,
                                        what="loading the capture kernel", during_boot=True)
        guest.times.kdump_loaded = loaded.at - guest.launched_at
        rc = int(loaded.groups[0] or 1)
        # One round trip for both: each SSH command costs ~0.1 s under TCG.
        out = guest.run("cat /run/harness/kdump-load.log; echo ==readiness==; "
                        "/harness/readiness").stdout
        guest.kdump_output, _, report = out.partition("==readiness==\n")
        guest.readiness = Readiness.parse(report)
        if guest.times.guest_uptime_userspace is not None:
            guest.times.guest_kdump_load = (float(loaded.groups[2] or 0)
                                            - guest.times.guest_uptime_userspace)
        if rc != 0 or not guest.readiness.kdump_loaded:
            raise KdumpLoadError(_kdump_failure_reason(guest, rc), details=guest.kdump_output)
    else:
        guest.readiness = guest.read_readiness()
    guest.times.kdump_ready = since()
    guest.booted_mark = guest.console.mark()
    write_readiness(guest)


def write_readiness(guest: Guest) -> None:
    """``readiness.json``: what the guest reported once ready, and how it got there."""
    record = {"readiness": guest.readiness.values, "times": guest.times.as_dict(),
              "accel": asdict(guest.accel), "tcg_threads": asdict(guest.host_fit.tcg_threads),
              "boot_faults": guest.boot_faults,
              "boot_kernel": str(guest.boot_kernel)}
    if guest.restored_from is not None:
        record |= {"restored_from": str(guest.restored_from),
                   "clock_offset": round(guest.clock_offset, 3)}
    (guest.workdir / "readiness.json").write_text(json.dumps(record, indent=2) + "\n")


def _kdump_failure_reason(guest: Guest, rc: int) -> str:
    """kexec's own words, the reservation and what loading would need."""
    return explain_load_failure(
        rc, guest.kdump_output, crashkernel=guest.config.crashkernel,
        reserved=reserved_size(guest.readiness.get("crashkernel")),
        kernel=guest.image.kernel_path,
        initrd=getattr(guest.image, "capture_initrd_path", None))


def emulator_fault(guest: Guest) -> str | None:
    """The known emulator fault that ended this boot, if any (TCG only)."""
    if guest.accel.name != "tcg" or not hasattr(guest, "console"):
        return None
    text = guest.console.text()
    for name, pattern in EMULATOR_FAULTS.items():
        hit = pattern.search(text)
        if hit:
            rip = re.search(r"RIP: \S+:(\S+)", text[hit.start():])
            return f"{name}" + (f" at {rip.group(1)}" if rip else "")
    return None
