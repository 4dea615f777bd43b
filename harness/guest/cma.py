"""CMA and kexec in the guest: what a kexec load takes from CMA, and whether it gives it back.

Linux 6.17+ places the segments of a normal (not crash) ``kexec_file_load`` image in the
default CMA area when there is one (``cma=SIZE``; commit 07d24902977e, "kexec: enable CMA
based contiguous allocation") and says so with a ``pr_debug``: ``kexec_file: allocated N
DMA pages at 0xPFN`` (the harness boots with dynamic debug on for kexec_file.c).  The crash
image must stay out of CMA, and whatever a load took, its unload -- or its failure -- must
give back.

Two measures of CMA, read together in one SSH round trip (``CmaState``):

* the CMA allocator, per area, from ``/sys/kernel/mm/cma/<name>/`` (``CONFIG_CMA_SYSFS``):
  ``available_pages`` and the alloc/release counters move only through ``cma_alloc`` and
  ``cma_release``.  Exact: the measure a leak is judged by (``allocator_leak``).
* ``CmaTotal``/``CmaFree`` from /proc/meminfo: the free *buddy* pages in CMA pageblocks.
  Ordinary movable allocations (page cache, the processes every SSH command starts) use CMA
  pageblocks too, compaction moves pages into them, and pages that ``cma_release`` frees go
  back through the per-CPU free lists, where some stay, not counted as free.  So CmaFree
  wanders with nothing leaked: on 7.2.13 it stayed 4232 kB (1058 pages) below its baseline
  after the 2nd to 5th of five load/unload cycles, and ``compact_memory`` alone took
  3 MiB off it.
  ``FREE_TOLERANCE_KB`` bounds that and ``settled_state`` waits for it; one kexec image of
  the harness's capture kernel is 16434 pages (64 MiB).
"""

from __future__ import annotations

import itertools
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..timeouts import Deadline, poll
from ..topology import crash_cma_ranges  # topology's own: the verifier needs them

if TYPE_CHECKING:
    from .machine import Guest

#: The area ``cma=SIZE`` makes (``dma_contiguous_default_area``), where kexec_file's
#: ``dma_alloc_from_contiguous(NULL, ...)`` allocates; ``crashkernel=SIZE,cma`` adds areas
#: called ``crashkernel``.
DEFAULT_AREA = "reserved"
CRASH_AREA = "crashkernel"
#: How far CmaFree may sit from its baseline with nothing leaked (see the module docstring).
FREE_TOLERANCE_KB = 8 * 1024
PAGE_KB = 4

KERNEL = "/boot/vmlinuz"
CAPTURE_INITRD = "/boot/capture.cpio"
#: A tmpfs for sparse files: a hole reads as the zero page, so a file far larger than the
#: guest's free memory costs nothing until the kernel copies it (kexec reads the initrd
#: into vmalloc memory before it places any segment).
SCRATCH = "/run/harness/cma-scratch"
NORMAL_UNLOAD = "kexec -s -u"
CRASH_UNLOAD = "kexec -s -p -u"

_AREA_FILES = ("total_pages", "available_pages", "alloc_pages_success", "alloc_pages_fail",
               "release_pages_success")
_SECTION = re.compile(r"^@@(\w+)$", re.MULTILINE)
_MEMINFO = re.compile(r"^(CmaTotal|CmaFree):?\s+(\d+)", re.MULTILINE)
_AREA_LINE = re.compile(r"^([^/\s]+)/(\w+):(\d+)$", re.MULTILINE)
_LOADED = re.compile(r"^(kexec_loaded|kexec_crash_loaded):(\d)$", re.MULTILINE)
_ALLOCATED = re.compile(r"kexec_file: allocated (\d+) DMA pages at 0x([0-9a-fA-F]+)")
_TAGS = itertools.count(1)
#: Written to /dev/kmsg around each command (``run_command``).
MARKER = "kdump-harness: cma"


class CmaLeak(AssertionError):
    """A kexec load or unload left pages in the CMA allocator that it did not give back."""


@dataclass(frozen=True)
class CmaArea:
    """One CMA area's counters (``/sys/kernel/mm/cma/<name>/``), in pages."""

    name: str
    total_pages: int
    available_pages: int
    alloc_pages_success: int
    alloc_pages_fail: int
    release_pages_success: int

    @property
    def allocated_pages(self) -> int:
        return self.total_pages - self.available_pages


@dataclass(frozen=True)
class CmaState:
    """CMA as the guest showed it at one moment, with which kexec images were loaded."""

    total_kb: int
    free_kb: int
    areas: Mapping[str, CmaArea]
    image_loaded: bool = False      # /sys/kernel/kexec_loaded
    crash_loaded: bool = False      # /sys/kernel/kexec_crash_loaded

    def area(self, name: str = DEFAULT_AREA) -> CmaArea:
        try:
            return self.areas[name]
        except KeyError:
            raise ValueError(f"no CMA area {name!r} in /sys/kernel/mm/cma (areas: "
                             f"{', '.join(self.areas) or 'none'})") from None

    def summary(self) -> str:
        areas = "; ".join(f"{a.name} {a.available_pages}/{a.total_pages} pages available "
                          f"({a.alloc_pages_success} allocated, {a.release_pages_success} "
                          "released since boot)" for a in self.areas.values())
        return f"CmaTotal {self.total_kb} kB, CmaFree {self.free_kb} kB; {areas}"


@dataclass(frozen=True)
class CmaAllocation:
    """One ``kexec_file: allocated N DMA pages at 0xPFN`` line."""

    pages: int
    pfn: int


@dataclass(frozen=True)
class KexecRun:
    """One kexec command with CMA just before and just after it and the kernel's log of it."""

    command: str
    status: int
    output: str
    klog: str
    before: CmaState
    after: CmaState

    @property
    def ok(self) -> bool:
        return self.status == 0

    @property
    def allocations(self) -> tuple[CmaAllocation, ...]:
        return parse_allocations(self.klog)

    @property
    def cma_pages(self) -> int:
        """Pages this command took from CMA, by the kernel's own account."""
        return sum(a.pages for a in self.allocations)

    def describe(self) -> str:
        """Everything an assertion message needs."""
        allocations = ", ".join(f"{a.pages}@{a.pfn:#x}" for a in self.allocations) or "none"
        return (f"$ {self.command}\nexit status {self.status}; output: "
                f"{self.output.strip() or '-'}\nCMA allocations logged: {allocations}\n"
                f"before: {self.before.summary()}\nafter:  {self.after.summary()}")


# -- pure: the guest's text -> values -----------------------------------------------------
def _sections(text: str) -> dict[str, str]:
    marks = list(_SECTION.finditer(text))
    bounds = [m.start() for m in marks] + [len(text)]
    return {m.group(1): text[m.end():bounds[i + 1]].strip("\n") for i, m in enumerate(marks)}


def parse_state(text: str) -> CmaState:
    """The output of ``state_command()`` (a ``ValueError`` names what is missing)."""
    meminfo = dict((k, int(v)) for k, v in _MEMINFO.findall(text))
    if set(meminfo) != {"CmaTotal", "CmaFree"}:
        raise ValueError("no CmaTotal/CmaFree in /proc/meminfo: a kernel without CONFIG_CMA")
    fields: dict[str, dict[str, int]] = {}
    for name, key, value in _AREA_LINE.findall(text):
        if key in _AREA_FILES:
            fields.setdefault(name, {})[key] = int(value)
    areas = {}
    for name, values in fields.items():
        missing = [f for f in _AREA_FILES if f not in values]
        if missing:
            raise ValueError(f"CMA area {name}: no {', '.join(missing)} in /sys/kernel/mm/cma")
        areas[name] = CmaArea(name, **values)
    loaded = {k: v == "1" for k, v in _LOADED.findall(text)}
    return CmaState(meminfo["CmaTotal"], meminfo["CmaFree"], areas,
                    image_loaded=loaded.get("kexec_loaded", False),
                    crash_loaded=loaded.get("kexec_crash_loaded", False))


def parse_allocations(klog: str) -> tuple[CmaAllocation, ...]:
    """Every ``kexec_file: allocated N DMA pages at 0xPFN`` in ``klog``, in order."""
    return tuple(CmaAllocation(int(n), int(pfn, 16)) for n, pfn in _ALLOCATED.findall(klog))


def parse_run(command: str, tag: str, text: str) -> KexecRun:
    """The output of ``run_command(command, tag)``.

    The kernel log must run from the begin marker to the end marker: without them (a
    ring buffer that wrapped) "no CMA allocation logged" would prove nothing.
    """
    sec = _sections(text)
    if "end" not in sec:
        raise ValueError(f"the guest's report on {command!r} is truncated (no @@end)")
    lines = sec["klog"].splitlines()
    marked = (len(lines) >= 2 and lines[0].endswith(f"{MARKER} begin {tag}")
              and lines[-1].endswith(f"{MARKER} end {tag}"))
    if not marked:
        raise ValueError(f"the kernel log of {command!r} lacks its markers ({MARKER} begin/end "
                         f"{tag}): did the ring buffer wrap?")
    return KexecRun(command=command, status=int(sec["rc"].strip()), output=sec["output"],
                    klog="\n".join(lines[1:-1]), before=parse_state(sec["before"]),
                    after=parse_state(sec["after"]))


def allocator_leak(baseline: CmaState, now: CmaState) -> str | None:
    """What the CMA allocator holds now that it did not hold at ``baseline``, or None."""
    problems = []
    for name, base in baseline.areas.items():
        cur = now.areas.get(name)
        if cur is None:
            problems.append(f"CMA area {name} has gone")
            continue
        held = cur.allocated_pages - base.allocated_pages
        if held:
            problems.append(
                f"CMA area {name} holds {held:+d} pages ({held * PAGE_KB:+d} KiB) more than "
                f"at the baseline: available {base.available_pages} -> {cur.available_pages}"
                f"; {cur.alloc_pages_success - base.alloc_pages_success} pages allocated and "
                f"{cur.release_pages_success - base.release_pages_success} released since")
    return "; ".join(problems) or None


# -- the guest commands ---------------------------------------------------------------------
def state_command() -> str:
    """One shell command printing ``CmaState``'s sources, with shell builtins only."""
    files = " ".join(_AREA_FILES)
    return ("while read -r k v _; do case $k in CmaTotal:|CmaFree:) echo \"$k $v\";; esac; "
            "done < /proc/meminfo; "
            "for d in /sys/kernel/mm/cma/*/; do [ -d \"$d\" ] || continue; n=${d%/}; "
            f"n=${{n##*/}}; for f in {files}; do read -r v < \"$d$f\" && "
            "echo \"$n/$f:$v\"; done; done; "
            "for f in kexec_loaded kexec_crash_loaded; do read -r v < /sys/kernel/$f && "
            "echo \"$f:$v\"; done")


def run_command(command: str, tag: str) -> str:
    """``command`` between two kernel-log markers, CMA read just before and after it."""
    begin, end = f"{MARKER} begin {tag}", f"{MARKER} end {tag}"
    state = state_command()
    return "; ".join([
        f"echo @@before; {state}",
        f"echo '{begin}' > /dev/kmsg",
        f"out=$( {command} 2>&1 ); rc=$?",
        # kexec_alloc_contig()'s pr_debug has no newline: its record stays unreadable until
        # the next one finalizes it, so the end marker must come before the log is read.
        f"echo '{end}' > /dev/kmsg",
        f"echo @@after; {state}",
        "echo @@rc; echo $rc",
        f"echo @@klog; dmesg | sed -n '/{begin}$/,/{end}$/p'",
        "echo @@output; printf '%s\\n' \"$out\"",
        "echo @@end",
    ])


def normal_load(initrd: str = CAPTURE_INITRD, append: str = "console=ttyS0,115200") -> str:
    """Load a normal (``kexec -e``) image with kexec_file_load; ``-d`` logs its segments."""
    return f"kexec -s -d -l {KERNEL} --initrd={initrd} --append='{append}'"


# -- a running guest ------------------------------------------------------------------------
def read_state(guest: Guest) -> CmaState:
    return parse_state(guest.run(state_command(), check=True).stdout)


def run_kexec(guest: Guest, command: str, *, timeout: float | None = None) -> KexecRun:
    """Run a kexec command (or a script that runs one) and see what it did to CMA."""
    tag = f"{next(_TAGS)}-{secrets.token_hex(3)}"
    result = guest.run(run_command(command, tag), timeout=timeout, check=True)
    return parse_run(command, tag, result.stdout)


def settled_state(guest: Guest, baseline: CmaState, current: CmaState | None = None,
                  tolerance_kb: int = FREE_TOLERANCE_KB) -> CmaState:
    """The first state whose CmaFree is within ``tolerance_kb`` of ``baseline``'s, starting
    with ``current`` (no round trip when it already is), or the last one read when it never
    gets there (``guest.timeouts.settle``): the caller asserts."""
    pending, seen = current, [baseline]

    def close() -> CmaState | None:
        nonlocal pending
        state = pending if pending is not None else read_state(guest)
        pending, seen[0] = None, state
        return state if abs(state.free_kb - baseline.free_kb) <= tolerance_kb else None

    found = poll(close, deadline=Deadline(guest.timeouts.settle, "CmaFree near its baseline"),
                 interval=0.2, health=lambda: guest.check_health("reading CMA", grace=0))
    return found or seen[0]


def sparse_file(guest: Guest, name: str, size: int) -> str:
    """A file of ``size`` zero bytes in ``SCRATCH`` that takes no memory; its path."""
    path = f"{SCRATCH}/{name}"
    guest.run(f"mkdir -p {SCRATCH} && {{ grep -q ' {SCRATCH} tmpfs ' /proc/mounts || "
              f"mount -t tmpfs -o size=64G tmpfs {SCRATCH}; }} && truncate -s {size} {path}",
              check=True)
    return path


def kernel_log(guest: Guest) -> str:
    return guest.run("dmesg", check=True).stdout


__all__ = ["CAPTURE_INITRD", "CRASH_AREA", "CRASH_UNLOAD", "DEFAULT_AREA", "FREE_TOLERANCE_KB",
           "KERNEL", "NORMAL_UNLOAD", "PAGE_KB", "CmaAllocation", "CmaArea", "CmaLeak",
           "CmaState", "KexecRun", "allocator_leak", "crash_cma_ranges", "kernel_log",
           "normal_load", "parse_allocations", "parse_run", "parse_state", "read_state",
           "run_command", "run_kexec", "settled_state", "sparse_file", "state_command"]
