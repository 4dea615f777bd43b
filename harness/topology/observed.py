"""The observed snapshot: what the guest itself shows, read with one shell command.

``observe_command`` is the command the guest runs; ``parse_observation`` turns its output
into an ``observed`` ``Topology`` (``/proc/iomem``, the CPU masks in sysfs, memory block
states, the CPUs' ACPI objects, the crashkernel CMA ranges and the crash_hotplug sysfs
files).  Pure: ``live.observe`` runs the command on a guest.
"""

from __future__ import annotations

import re

from .kernel_formats import (
    GUEST_CLOCK_COMMAND,
    crash_cma_ranges,
    crash_kernel_ranges,
    parse_cpu_list,
    parse_guest_clock,
    parse_iomem,
    parse_range_lines,
    system_ram_ranges,
)
from .model import Topology
from .ranges import AddressRange

#: Section markers in the output of ``observe_command``; each is followed by its content.
_SECTION = re.compile(r"^@@(\w+)$", re.MULTILINE)
#: The kernel's own list of crashkernel=SIZE,cma ranges (7.2.13 has it; no lock taken).
CRASH_CMA_SYSFS = "/sys/kernel/kexec_crash_cma_ranges"
#: Without that file, the boot log's lines (``kernel_formats.crash_cma_ranges``), read only
#: when the command line asks for crashkernel CMA; "Linux version" shows the log is whole.
_CRASH_CMA_LOG = ("dmesg | grep -e 'cma: Reserved' -e 'crashkernel CMA' "
                  "-e '] Linux version '")


def observe_command(*, crash_hotplug: bool = True) -> str:
    """The one guest shell command that prints every observed section.

    One SSH round trip instead of a dozen, and only shell builtins (``read``, ``printf``,
    globs): under TCG every fork+exec costs 10-20 ms, an SSH round trip ~70 ms.
    ``crash_hotplug=False`` skips the ``crash_hotplug`` files: reading them takes the
    crash hot-plug mutex and the kexec lock (KNOWLEDGE.md), so settle polling must not
    read them while a swarm is running or it would perturb what it measures.  The one
    exception: a guest booted with ``crashkernel=,cma`` whose kernel lacks
    ``CRASH_CMA_SYSFS`` has its boot log read (``dmesg``).
    """
    s = "/sys/devices/system"
    # r FILE: print a one-line file; each: print FILE:LINE for every file of a glob.
    parts = [
        "r() { IFS= read -r v < \"$1\" && printf '%s\\n' \"$v\"; } 2>/dev/null",
        ("each() { for f in \"$@\"; do IFS= read -r v < \"$f\" && printf '%s:%s\\n' "
         "\"$f\" \"$v\"; done 2>/dev/null; }"),
        "echo @@release; r /proc/sys/kernel/osrelease",
        "echo @@iomem; while IFS= read -r l; do printf '%s\\n' \"$l\"; done < /proc/iomem",
        f"echo @@cpus_possible; r {s}/cpu/possible",
        f"echo @@cpus_present; r {s}/cpu/present",
        f"echo @@cpus_online; r {s}/cpu/online",
        f"echo @@block_size; r {s}/memory/block_size_bytes",
        f"echo @@blocks; each {s}/memory/memory*/state",
        f"echo @@cpu_firmware_ids; each {s}/cpu/cpu*/firmware_node/path",
        (f"echo @@crash_cma; if [ -e {CRASH_CMA_SYSFS} ]; then while IFS= read -r v; do "
         f"printf '%s\\n' \"$v\"; done < {CRASH_CMA_SYSFS}; else read -r v < /proc/cmdline; "
         f"case \" $v \" in *,cma\\ *) echo @@crash_cma_log; {_CRASH_CMA_LOG};; esac; fi"),
    ]
    if crash_hotplug:
        # The guest's wall clock, for CRASHTIME: its offset from the host's drifts under
        # TCG (and a restored guest's starts at the snapshot's), so it is read here, the
        # last thing before a panic.  Not in settle polls (adjtimex, where the shell has
        # no $EPOCHREALTIME, is one fork more).
        parts += [f"echo @@clock; {GUEST_CLOCK_COMMAND}"]
        parts += [
            f"echo @@crash_hotplug_cpu; r {s}/cpu/crash_hotplug",
            f"echo @@crash_hotplug_memory; r {s}/memory/crash_hotplug",
        ]
    parts.append("echo @@end")
    return "; ".join(parts)


def _sections(text: str) -> dict[str, str]:
    marks = list(_SECTION.finditer(text))
    out: dict[str, str] = {}
    for i, m in enumerate(marks):
        end = marks[i + 1].start() if i + 1 < len(marks) else len(text)
        out[m.group(1)] = text[m.end():end].strip("\n")
    return out


_BLOCK_STATE = re.compile(r"/memory(\d+)/state:(\S+)")
_CPU_ACPI = re.compile(r"/cpu(\d+)/firmware_node/path:\S*\.C([0-9A-Fa-f]+)\s*$", re.MULTILINE)


def _optional_int(text: str | None) -> int | None:
    text = (text or "").strip()
    return int(text) if text.isdigit() else None


def _crash_cma(sec: dict[str, str]) -> tuple[AddressRange, ...]:
    """The crashkernel CMA ranges: sysfs's list, else the boot log's lines."""
    log = sec.get("crash_cma_log")
    if log is None:
        return parse_range_lines(sec.get("crash_cma", ""))
    ranges = crash_cma_ranges(log)
    if not ranges and "crashkernel CMA" not in log and "] Linux version " not in log:
        # Without the ranges every dump would look stale: no verdict is better than that.
        raise ValueError("the command line asks for crashkernel=,cma but the kernel log has "
                         "lost its boot lines (the ring buffer wrapped): which memory the "
                         "dump must leave out is unknown")
    return ranges


def parse_observation(text: str, *, taken_at: float) -> Topology:
    """Build the observed ``Topology`` from the output of ``observe_command``."""
    sec = _sections(text)
    if "end" not in sec:
        raise ValueError("the guest's topology report is truncated (no @@end marker)")
    entries = parse_iomem(sec.get("iomem", ""))
    online: list[int] = []
    offline: list[int] = []
    for m in _BLOCK_STATE.finditer(sec.get("blocks", "")):
        (online if m.group(2) == "online" else offline).append(int(m.group(1)))
    block_size_text = sec.get("block_size", "").strip()
    ids = sorted((int(m.group(1)), int(m.group(2), 16))
                  for m in _CPU_ACPI.finditer(sec.get("cpu_firmware_ids", "")))
    return Topology(
        source="observed",
        taken_at=taken_at,
        kernel_release=sec.get("release", "").strip() or None,
        system_ram=system_ram_ranges(entries),
        crash_kernel=crash_kernel_ranges(entries),
        crash_cma=_crash_cma(sec),
        guest_clock=parse_guest_clock(sec.get("clock", "")),
        cpus_possible=parse_cpu_list(sec.get("cpus_possible", "")),
        cpus_present=parse_cpu_list(sec.get("cpus_present", "")),
        cpus_online=parse_cpu_list(sec.get("cpus_online", "")),
        # block_size_bytes is hexadecimal without a 0x prefix ("8000000" = 128 MiB).
        memory_block_size=int(block_size_text, 16) if block_size_text else None,
        memory_blocks_online=tuple(sorted(online)),
        memory_blocks_offline=tuple(sorted(offline)),
        crash_hotplug_cpu=_optional_int(sec.get("crash_hotplug_cpu")),
        crash_hotplug_memory=_optional_int(sec.get("crash_hotplug_memory")),
        cpu_firmware_ids=tuple(ids),
    )
