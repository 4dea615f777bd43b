#!/usr/bin/env python3
"""Turn a ``kdump-harness run --mode headers`` directory into a golden vmcore test pair.

    python3 ci/make_golden.py RUN_DIR NAME [--verdict accurate] [--code dimm-missing ...]

Writes tests/data/vmcore/NAME.{core,json,elfcorehdr,dmesg}, trimmed to what the readers
need (the headers and notes, not the first MiB of memory that follows them).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from harness.vmcore import PhdrType, elfcorehdr_extent, open_dump

GOLDEN = Path(__file__).resolve().parent.parent / "tests" / "data" / "vmcore"


def headers_extent(path: Path) -> int:
    dump = open_dump(path)
    end = 64
    for ph in dump.program_headers:
        if ph.type == PhdrType.PT_NOTE:
            end = max(end, ph.offset + ph.filesz)
    end = max(end, dump.elf.phoff + dump.elf.phnum * dump.elf.phentsize)
    return end


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir", type=Path)
    p.add_argument("name")
    p.add_argument("--verdict", default="accurate")
    p.add_argument("--code", action="append", default=[])
    args = p.parse_args()
    run: Path = args.run_dir
    verdict = json.loads((run / "verdict.json").read_text())
    core = (run / "vmcore.headers").read_bytes()
    (GOLDEN / f"{args.name}.core").write_bytes(core[:headers_extent(run / "vmcore.headers")])
    raw = (run / "elfcorehdr.raw").read_bytes()
    (GOLDEN / f"{args.name}.elfcorehdr").write_bytes(raw[:elfcorehdr_extent(raw[:64])])
    dmesg = (run / "capture" / "vmcore-dmesg.txt").read_text(errors="replace")
    # Only the panic and what follows: enough for the panic-message check, kept small.
    start = dmesg.find("Kernel panic")
    (GOLDEN / f"{args.name}.dmesg").write_text(dmesg[max(0, start - 2000):start + 4000])
    spec = {
        "topology": json.loads((run / "topology-observed.json").read_text()),
        "expected": json.loads((run / "topology-expected.json").read_text()),
        "verify": {"panic_window": verdict["capture"]["panic_window"]},
        "expect": {"verdict": args.verdict, "codes": args.code,
                   "cpu_notes": len(open_dump(run / "vmcore.headers").cpu_notes),
                   "osrelease": verdict["kernel_release"]},
        "source": f"kdump-harness run ({verdict['kernel_release']}, {verdict['accel']})",
    }
    (GOLDEN / f"{args.name}.json").write_text(json.dumps(spec, indent=2, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
