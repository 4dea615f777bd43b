"""The crashkernel=SIZE,cma ranges in the observed topology (harness/topology): from
``/sys/kernel/kexec_crash_cma_ranges``, else from the boot log.

The texts are what sid's 7.2.13 guest printed booted with ``cma=256M crashkernel=256M
crashkernel=256M,cma`` (testcases/test_seed003_cma.py), except where a test says otherwise.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from harness.topology import (
    AddressRange,
    Topology,
    crash_cma_ranges,
    observe_command,
    parse_observation,
    parse_range_lines,
)
from harness.topology.observed import CRASH_CMA_SYSFS

MiB = 1 << 20
CMA = AddressRange(0x4E000000, 0x5E000000)
CRASH_KERNEL = AddressRange(0x5E000000, 0x6E000000)
LINUX = ("[    0.000000] Linux version 7.2.13+deb14-cloud-amd64 (debian-kernel@lists.debian.org) "
         "(x86_64-linux-gnu-gcc-16 (Debian 16.2.0-4) 16.2.0, GNU ld (GNU Binutils for Debian) "
         "2.47.50.20261021) #1 SMP PREEMPT_DYNAMIC Debian 7.2.13-1 (2026-10-28)\n")
BOOT_LOG = LINUX + """\
[    0.020499] cma: Reserved 256 MiB at 0x000000006e400000
[    0.021111] crashkernel reserved: 0x000000005e000000 - 0x000000006e000000 (256 MB)
[    0.021191] cma: Reserved 256 MiB at 0x000000004e000000
[    0.021252] crashkernel CMA reserved: 256 MB in 1 ranges
"""
SYSFS = "4e000000-5dffffff\n"
IOMEM = """\
00000000-00000fff : Reserved
00001000-0009fbff : System RAM
0009fc00-000cffff : Reserved
00100000-7fffffff : System RAM
  01000000-0225c92f : Kernel code
  5e000000-6dffffff : Crash kernel
80000000-afffffff : PCI Bus 0000:00"""


def test_the_boot_log_ranges_are_the_reserved_lines_before_the_summary() -> None:
    # The first "Reserved" line is cma=256M's default area, not the crash kernel's.
    assert crash_cma_ranges(BOOT_LOG) == (CMA,)
    two = BOOT_LOG.replace("[    0.021252] crashkernel CMA", "[    0.021252] cma: Reserved "
                           "128 MiB at 0x0000000090000000\n[    0.021252] crashkernel CMA")
    two = two.replace("256 MB in 1 ranges", "384 MB in 2 ranges")
    assert crash_cma_ranges(two) == (CMA, AddressRange(0x90000000, 0x98000000))
    assert crash_cma_ranges(LINUX + BOOT_LOG.splitlines()[1]) == ()


def test_a_reservation_that_fell_short_still_names_what_it_got() -> None:
    # pr_warn() in reserve_crashkernel_cma() (6.17+); this line is powerpc's, from the
    # list (crashkernel=200M,cma before pageblock_order was set): nothing reserved.
    none = "[    0.000000][    T0] crashkernel CMA reservation failed: 200 MB requested, 0 MB " \
           "reserved in 0 ranges\n"
    assert crash_cma_ranges(BOOT_LOG.replace(BOOT_LOG.splitlines()[-1], none)) == ()
    # Half of 512 MB found room: the ranges it got are left out of the dump all the same.
    short = BOOT_LOG.replace("reserved: 256 MB in 1 ranges",
                             "reservation failed: 512 MB requested, 256 MB reserved in 1 ranges")
    assert crash_cma_ranges(short) == (CMA,)


def test_boot_log_ranges_that_do_not_add_up_are_refused() -> None:
    with pytest.raises(ValueError, match="do not add up"):
        crash_cma_ranges(BOOT_LOG.replace("256 MB in 1", "512 MB in 1"))
    with pytest.raises(ValueError, match="only 2 'cma: Reserved' lines"):
        crash_cma_ranges(BOOT_LOG.replace("in 1 ranges", "in 3 ranges"))
    # Larger than requested is fine: cma_declare_contiguous() aligns a size up.
    assert crash_cma_ranges(BOOT_LOG.replace("256 MB in 1", "255 MB in 1")) == (CMA,)


def test_the_sysfs_list_is_inclusive_hex() -> None:
    assert parse_range_lines(SYSFS) == (CMA,)
    assert parse_range_lines(SYSFS + "90000000-97ffffff\n") == (
        CMA, AddressRange(0x90000000, 0x98000000))
    assert parse_range_lines("") == ()
    with pytest.raises(ValueError, match="not a start-end range"):
        parse_range_lines("4e000000\n")


def observation(crash_cma: str) -> str:
    return "\n".join(["@@release", "7.2.13+deb14-cloud-amd64", "@@iomem", IOMEM,
                      crash_cma, "@@end"]) + "\n"


def test_the_observed_topology_counts_them_with_crash_kernel() -> None:
    topo = parse_observation(observation("@@crash_cma\n" + SYSFS), taken_at=0)
    assert topo.crash_kernel == (CRASH_KERNEL,) and topo.crash_cma == (CMA,)
    assert topo.crash_reserved == (AddressRange(CMA.start, CRASH_KERNEL.end),)
    assert Topology.from_json_dict(topo.to_json_dict()) == topo
    assert topo.to_json_dict()["crash_cma"] == [{"start": "0x4e000000", "end": "0x5e000000"}]
    plain = parse_observation(observation("@@crash_cma"), taken_at=0)
    assert plain.crash_cma == () and plain.crash_reserved == (CRASH_KERNEL,)
    assert Topology.from_json_dict({"source": "observed", "taken_at": 0}).crash_cma == ()


def test_without_sysfs_the_boot_log_is_read_and_a_lost_one_refused() -> None:
    from_log = parse_observation(observation("@@crash_cma\n@@crash_cma_log\n" + BOOT_LOG),
                                 taken_at=0)
    assert from_log.crash_cma == (CMA,)
    # A kernel that ignores ",cma" (before 6.17) logs no summary, but its log is whole.
    older = parse_observation(observation("@@crash_cma\n@@crash_cma_log\n" + LINUX), taken_at=0)
    assert older.crash_cma == ()
    # The ring buffer wrapped: which memory the dump leaves out is unknown, so no topology.
    with pytest.raises(ValueError, match="ring buffer wrapped"):
        parse_observation(observation("@@crash_cma\n@@crash_cma_log"), taken_at=0)


def run_observe(tmp_path: Path, *, sysfs: str | None, cmdline: str, klog: str) -> Topology:
    """``observe_command`` run by this host's sh with the guest's files swapped for ours
    (what it reads of this host's /proc and /sys besides is not looked at)."""
    (tmp_path / "cmdline").write_text(cmdline + "\n")
    (tmp_path / "klog").write_text(klog)
    command = observe_command(crash_hotplug=False).replace("/proc/cmdline",
                                                           str(tmp_path / "cmdline"))
    command = command.replace("dmesg |", f"cat {tmp_path / 'klog'} |")
    if sysfs is not None:
        (tmp_path / "ranges").write_text(sysfs)
        command = command.replace(CRASH_CMA_SYSFS, str(tmp_path / "ranges"))
    else:
        command = command.replace(CRASH_CMA_SYSFS, str(tmp_path / "absent"))
    done = subprocess.run(["sh", "-c", command], capture_output=True, text=True, check=True)
    return parse_observation(done.stdout, taken_at=0)


def test_the_guest_command_reads_sysfs_or_else_the_log_when_asked(tmp_path: Path) -> None:
    cmdline = "console=ttyS0,115200 crashkernel=256M cma=256M crashkernel=256M,cma"
    two = SYSFS + "90000000-97ffffff\n"
    assert run_observe(tmp_path, sysfs=two, cmdline=cmdline, klog="").crash_cma == (
        CMA, AddressRange(0x90000000, 0x98000000))
    assert run_observe(tmp_path, sysfs="", cmdline=cmdline, klog=BOOT_LOG).crash_cma == ()
    assert run_observe(tmp_path, sysfs=None, cmdline=cmdline, klog=BOOT_LOG).crash_cma == (CMA,)
    # No ",cma" on the command line: the log is not read at all.
    assert run_observe(tmp_path, sysfs=None, cmdline="crashkernel=256M",
                       klog="garbage").crash_cma == ()
