"""Benchmark: reading a big dump's headers (target: under 50 ms) and verifying many ranges.

``python -m harness.bench.vmcore [--size-gib 64] [--runs 30] [--ranges 16384]`` (or
``kdump-harness bench vmcore --extra '...'``) writes sparse synthetic dumps in a temporary
directory (seeking, not writing GiBs: they cost a few KiB of disk), then times ``open_dump``
(what ``vmcore inspect`` does) and ``verify`` on each, printing the median and the spread.

The range case builds a dump, a raw header and a topology with ``--ranges`` disjoint System
RAM ranges (twice the kernel's CONFIG_CRASH_MAX_MEMORY_RANGES by default) and times
``verify`` alone (target: under 0.2 s): with 256 DIMMs (QEMU's slot limit) and with a DIMM
per range, so quadratic range arithmetic or per-device scans show up as seconds.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path

from ..topology import AddressRange, MemoryDevice, Topology
from ..vmcore.model import Dump
from ..vmcore.reader import open_dump, parse_elfcorehdr
from ..vmcore.verifier import verify
from ..vmcore.writer import (
    CoreSpec,
    GiB,
    MiB,
    SyntheticCpu,
    build_elf_core,
    build_kdump,
    build_raw_elfcorehdr,
    flatten,
    write_elf_core,
)

_DIMM = 256 * MiB


def bench_spec(size_gib: int, cpus: int) -> tuple[CoreSpec, Topology]:
    """A q35-like guest: 3 GiB below 4 GiB, 1 GiB above, the rest as 256 MiB DIMMs."""
    boot = [AddressRange(MiB, 0xBFFD_F000), AddressRange(4 * GiB, 5 * GiB)]
    crash = AddressRange(0x2F00_0000, 0x3F00_0000)
    low = [AddressRange(MiB, crash.start), AddressRange(crash.end, 0xBFFD_F000), boot[1]]
    dimms = [MemoryDevice(f"dimm{i}", "dimm", 8 * GiB + i * _DIMM, _DIMM)
             for i in range(max(0, (size_gib - 4) * GiB // _DIMM))]
    # One PT_LOAD per DIMM: hot-added memory arrives as separate System RAM resources.
    spec = CoreSpec(cpus=tuple(SyntheticCpu(pid=1000 + i if i == 0 else 0) for i in range(cpus)),
                    ram=tuple(low + [d.range for d in dimms]))
    topology = Topology(source="observed", taken_at=time.time(), kernel_release="6.12.0-test",
                        system_ram=tuple(boot + [d.range for d in dimms]), crash_kernel=(crash,),
                        cpus_possible=tuple(range(cpus)), cpus_present=tuple(range(cpus)),
                        cpus_online=tuple(range(cpus)), memory_devices=tuple(dimms))
    return spec, topology


def range_case(count: int, dimms: int) -> tuple[Dump, Dump, Topology]:
    """A dump, its raw header and a topology with ``count`` disjoint 1 MiB RAM ranges.

    The top ``dimms`` ranges are DIMMs; the dump describes exactly the RAM (accurate).
    """
    ram = tuple(AddressRange(4 * GiB + i * 2 * MiB, 4 * GiB + i * 2 * MiB + MiB)
                for i in range(count))
    devices = tuple(MemoryDevice(f"dimm{i}", "dimm", r.start, r.size)
                    for i, r in enumerate(ram[count - dimms:]))
    spec = CoreSpec(cpus=(SyntheticCpu(pid=1),), ram=ram,
                    text=AddressRange(4 * GiB, 4 * GiB + MiB // 2))
    dump = open_dump(build_elf_core(spec, memory="headers-only"))
    header = parse_elfcorehdr(build_raw_elfcorehdr(spec, possible_cpus=1))
    topology = Topology(source="observed", taken_at=time.time(), kernel_release="6.12.0-test",
                        system_ram=ram, cpus_possible=(0,), cpus_present=(0,),
                        cpus_online=(0,), memory_devices=devices)
    return dump, header, topology


def _bench_ranges(count: int, runs: int) -> None:
    for dimms in (min(256, count), count):
        dump, header, topology = range_case(count, dimms)
        verdict = verify(dump, topology, raw_header=header).verdict
        label = f"verify {count} ranges, {dimms} DIMMs, + header"
        action = partial(verify, dump, topology, raw_header=header)
        print(_row(label, time_runs(action, runs)) + f"   verdict {verdict.value}")


def time_runs(action: Callable[[], object], runs: int) -> list[float]:
    """Wall-clock seconds of ``runs`` calls (the first one included: page cache is warm)."""
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        action()
        times.append(time.perf_counter() - start)
    return times


def _row(label: str, times: Sequence[float]) -> str:
    ms = sorted(t * 1000 for t in times)
    spread = statistics.pstdev(ms) if len(ms) > 1 else 0.0
    return (f"{label:<42} median {statistics.median(ms):7.2f} ms   min {ms[0]:7.2f}   "
            f"max {ms[-1]:7.2f}   stdev {spread:5.2f}   (n={len(ms)})")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.bench.vmcore", description=__doc__)
    parser.add_argument("--size-gib", type=int, default=64, help="guest RAM described (GiB)")
    parser.add_argument("--cpus", type=int, default=8, help="CPU notes in the dump")
    parser.add_argument("--runs", type=int, default=30, help="timed runs per case")
    parser.add_argument("--ranges", type=int, default=16384,
                        help="disjoint RAM ranges for the verify case (0: skip it)")
    args = parser.parse_args(argv)

    spec, topology = bench_spec(args.size_gib, args.cpus)
    with tempfile.TemporaryDirectory(prefix="vmcore-bench-") as tmp:
        elf = Path(tmp) / "vmcore.elf"
        size = write_elf_core(elf, spec, memory="full")
        kdump = Path(tmp) / "vmcore.kdump"
        kdump.write_bytes(build_kdump(spec))
        flat = Path(tmp) / "vmcore.flat"
        flat.write_bytes(flatten(kdump.read_bytes()))
        dump = open_dump(elf)
        print(f"ELF core: {size / GiB:.1f} GiB apparent size "
              f"({elf.stat().st_blocks * 512 // 1024} KiB on disk), "
              f"{len(dump.program_headers)} program headers, {len(dump.cpu_notes)} CPU notes")
        print(f"kdump-compressed headers: {kdump.stat().st_size // 1024} KiB "
              f"(bitmap for {dump.memory_bytes_described / GiB:.0f} GiB); "
              f"flattened: {flat.stat().st_size // 1024} KiB")
        verdict = verify(dump, topology).verdict
        print(f"verify verdict on the synthetic dump: {verdict.value}")
        print(_row("inspect ELF (open_dump)", time_runs(lambda: open_dump(elf), args.runs)))
        print(_row("inspect ELF + verify", time_runs(
            lambda: verify(open_dump(elf), topology), args.runs)))
        print(_row("inspect kdump-compressed", time_runs(lambda: open_dump(kdump), args.runs)))
        print(_row("inspect flattened kdump", time_runs(lambda: open_dump(flat), args.runs)))
        # The most a kernel header can hold: NR_CPUS + CRASH_MAX_MEMORY_RANGES (8192 each).
        big = CoreSpec(ram=tuple(AddressRange(GiB + i * 2 * MiB, GiB + i * 2 * MiB + MiB)
                                 for i in range(8192)))
        raw = build_raw_elfcorehdr(big, possible_cpus=8192)
        print(f"raw elfcorehdr at the kernel's limit: {len(raw) // 1024} KiB, "
              f"{8192 + 1 + 1 + 8192} program headers")
        print(_row("parse raw elfcorehdr (16386 phdrs)",
                   time_runs(lambda: parse_elfcorehdr(raw), max(3, args.runs // 3))))
    if args.ranges:
        _bench_ranges(args.ranges, max(3, args.runs // 3))
    return 0


if __name__ == "__main__":
    sys.exit(main())
