"""The verifier with ``crashkernel=SIZE,cma``: its ranges are left out of the dump like Crash
kernel (x86 prepare_elf_headers(), 6.17+), so a dump without them is accurate.

The layout is sid's 7.2.13 guest's, scaled into the synthetic guest: the CMA range lies just
below Crash kernel (there ``4e000000-5dffffff`` and ``5e000000-6dffffff``).
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from vmcore_guest import CRASH_KERNEL, DIMMS, PANIC_WINDOW, make_spec, make_topology

from harness.topology import AddressRange
from harness.vmcore import Dump, FindingCode, Verdict, open_dump, parse_elfcorehdr, verify
from harness.vmcore.writer import (
    CoreSpec,
    GiB,
    MiB,
    build_elf_core,
    build_kdump,
    build_raw_elfcorehdr,
)

C = FindingCode
CMA = AddressRange(0x2000_0000, CRASH_KERNEL.start)
#: What the kernel describes: System RAM minus [0, 1 MiB), crashkernel CMA and Crash kernel.
DUMP_RAM = (AddressRange(MiB, CMA.start), AddressRange(CRASH_KERNEL.end, 2 * GiB),
            DIMMS[0].range, DIMMS[1].range)

_DUMPS: dict[str, Callable[[CoreSpec], Dump]] = {
    "elf": lambda s: open_dump(build_elf_core(s, memory="headers-only")),
    "kdump": lambda s: open_dump(build_kdump(s)),
    "raw-elfcorehdr": lambda s: parse_elfcorehdr(build_raw_elfcorehdr(s, possible_cpus=4)),
}


@pytest.mark.parametrize("kind", sorted(_DUMPS))
def test_a_dump_without_the_crashkernel_cma_ranges_is_accurate(kind: str) -> None:
    dump = _DUMPS[kind](make_spec(ram=DUMP_RAM))
    report = verify(dump, make_topology(crash_cma=(CMA,)), panic_window=PANIC_WINDOW)
    assert report.verdict == Verdict.ACCURATE, report.to_text()
    match = [f for f in report.findings if f.code is C.MEMORY_MATCH]
    assert match and "minus Crash kernel and crashkernel CMA" in match[0].message


def test_without_the_cma_ranges_the_oracle_would_call_it_stale() -> None:
    """The harness's bug before it read them: the kernel's accurate dump judged stale."""
    dump = _DUMPS["elf"](make_spec(ram=DUMP_RAM))
    report = verify(dump, make_topology(), panic_window=PANIC_WINDOW)
    assert report.verdict == Verdict.STALE
    assert [f.range for f in report.errors] == [CMA]
    assert report.errors[0].code is C.RAM_NOT_IN_DUMP


@pytest.mark.parametrize("kind", sorted(_DUMPS))
def test_a_dump_describing_crashkernel_cma_is_a_mismatch(kind: str) -> None:
    dump = _DUMPS[kind](make_spec(ram=DUMP_RAM + (CMA,)))
    report = verify(dump, make_topology(crash_cma=(CMA,)), panic_window=PANIC_WINDOW)
    assert report.verdict == Verdict.MISMATCH
    [finding] = report.errors
    assert finding.code is C.CRASH_KERNEL_IN_DUMP and finding.range == CMA
    assert "inside the crashkernel CMA reservation" in finding.message


def test_crash_kernel_is_still_named_as_such_beside_cma() -> None:
    dump = _DUMPS["elf"](make_spec(ram=DUMP_RAM + (CRASH_KERNEL,)))
    report = verify(dump, make_topology(crash_cma=(CMA,)), panic_window=PANIC_WINDOW)
    [finding] = report.errors
    assert finding.range == CRASH_KERNEL
    assert "inside the Crash kernel reservation" in finding.message
