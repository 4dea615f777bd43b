"""The live elfcorehdr audit: read the crash header from guest memory, no crash needed.

The kernel rewrites the elfcorehdr in place on every hot-plug event (6.6+), so the host
can read it at any moment with QMP ``pmemsave`` and check it against the live topology.
Its address comes from the kernel's ``Loaded ELF headers at`` line (``kexec -d -s``,
6.8+); otherwise the ``Crash kernel`` reservation is scanned for an ELF core header.
Cheap enough to run after every wave of a swarm.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from .errors import HarnessError, VmcoreFormatError
from .guest import Guest
from .topology import AddressRange, Topology, observe
from .vmcore import (
    VerifyReport,
    audit_elfcorehdr,
    elfcorehdr_extent,
    find_elfcorehdr,
    parse_loaded_elf_headers,
)


@dataclass(frozen=True)
class HeaderLocation:
    addr: int
    source: str       # "kernel log" or "scan"


@dataclass(frozen=True)
class LiveAudit:
    report: VerifyReport
    location: HeaderLocation
    topology: Topology
    seconds: float            # the whole round trip
    read_seconds: float       # reading the header from guest memory alone


def read_phys(guest: Guest, addr: int, size: int) -> bytes:
    """Guest physical memory through QMP ``pmemsave`` (QEMU writes a host file)."""
    with tempfile.NamedTemporaryFile(prefix="kh-pmem-", dir=guest.workdir) as tmp:
        guest.qmp.execute("pmemsave", {"val": addr, "size": size, "filename": tmp.name})
        return Path(tmp.name).read_bytes()


def locate_elfcorehdr(guest: Guest, crash_kernel: tuple[AddressRange, ...]) -> HeaderLocation:
    """Where the current elfcorehdr lives; raises ``HarnessError`` if it cannot be found."""
    log = guest.run("dmesg | grep 'Loaded ELF headers at'").stdout
    loaded = parse_loaded_elf_headers(log)
    if loaded is not None:
        return HeaderLocation(loaded.addr, "kernel log")
    addr = find_elfcorehdr(lambda a, n: read_phys(guest, a, n), crash_kernel)
    if addr is None:
        raise HarnessError("no ELF core header in the crashkernel region: is kdump loaded?")
    return HeaderLocation(addr, "scan")


def read_elfcorehdr(guest: Guest, addr: int) -> bytes:
    """The header's bytes: 64 to learn its extent, then exactly what it needs."""
    head = read_phys(guest, addr, 64)
    return read_phys(guest, addr, elfcorehdr_extent(head))


def audit(guest: Guest, *, topology: Topology | None = None,
          location: HeaderLocation | None = None, retries: int = 3) -> LiveAudit:
    """Read the live elfcorehdr and verify it against the live (observed) topology.

    Pass the ``location`` of an earlier audit to skip finding it again (it only moves
    when kdump is reloaded).  A read torn by a concurrent rewrite is retried.
    """
    started = time.monotonic()
    topology = topology or observe(guest)
    location = location or locate_elfcorehdr(guest, topology.crash_kernel)
    last_error: VmcoreFormatError | None = None
    for _ in range(retries):
        t0 = time.monotonic()
        raw = read_elfcorehdr(guest, location.addr)
        read_seconds = time.monotonic() - t0
        try:
            # The VMCOREINFO note the header points at is read too: OSRELEASE is checked.
            report = audit_elfcorehdr(raw, topology,
                                      read_phys=lambda a, n: read_phys(guest, a, n))
        except VmcoreFormatError as exc:
            last_error = exc
            continue
        return LiveAudit(report, location, topology, time.monotonic() - started, read_seconds)
    assert last_error is not None
    raise last_error
