#!/usr/bin/env python3
"""The nightly stress matrix: kernels x hot-plug shapes x panic triggers x load syscalls.

    python3 ci/nightly.py [--profiles trixie,sid] [--out nightly-report] [--quick] [--snapshot]

Each cell is one ``kdump-harness run`` (boot, swarm, panic, capture, verify) with its own
evidence directory; the matrix writes ``report.md`` (for people) and ``report.json`` (for
machines) and exits non-zero if any cell's result was not the expected one.  Cells are
frozen dataclasses, not config strings: add a shape or a trigger by adding a value.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from harness import settings
from harness.guest import GuestConfig
from harness.guest.accel import qemu_version
from harness.hotplug import QEMU_SURVIVES_CPU_UNPLUG, SwarmSpec, build_plan
from harness.images import GuestImage, build_image
from harness.job import JobSpec, run_job

MiB = 1 << 20


@dataclass(frozen=True)
class Shape:
    name: str
    swarm: SwarmSpec
    #: The expected result on kernels that update the header themselves (6.6+); 6.1 runs
    #: with udev-like reloads, which rebuild the header from scratch: always accurate.
    expect_crash_hotplug: str = "accurate"
    #: The oldest QEMU that survives the shape (older ones skip the cell and say so).
    min_qemu: tuple[int, int, int] = (0, 0, 0)


SHAPES = (
    Shape("burst-16dimm-6cpu", SwarmSpec(dimms=(256 * MiB,) * 16, cpus=6)),
    # 6.12 and 7.2 rewrite the header at MEM_OFFLINE, before the removed DIMM's resource is
    # released: the last removed range stays described (testcases/test_run.py pins it).
    Shape("unplug-half-dimms", SwarmSpec(dimms=(256 * MiB,) * 8, cpus=4, unplug=4),
          expect_crash_hotplug="stale"),
    # After a vCPU unplug QEMU 7.2 dies ("double free or corruption") by the time the
    # capture kernel boots, whatever the pacing; 10.0 (bookworm-backports) is fine.
    Shape("unplug-vcpus", SwarmSpec(dimms=(256 * MiB,) * 4, cpus=4, unplug_cpus=2),
          min_qemu=QEMU_SURVIVES_CPU_UNPLUG),
    Shape("seeded-shuffle", SwarmSpec(dimms=(128 * MiB, 256 * MiB, 512 * MiB) * 2, cpus=3, seed=7)),
)
TRIGGERS = ("sysrq", "nmi")
KEXEC = ("file", "classic")


@dataclass(frozen=True)
class Cell:
    profile: str
    shape: Shape
    trigger: str
    kexec: str

    @property
    def name(self) -> str:
        return f"{self.profile}-{self.shape.name}-{self.trigger}-{self.kexec}"

    @property
    def expect(self) -> str:
        return "accurate" if self.profile == "bookworm" else self.shape.expect_crash_hotplug


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--profiles", default="bookworm,trixie,sid")
    p.add_argument("--out", type=Path, default=Path("nightly-report"))
    p.add_argument("--quick", action="store_true", help="one shape, sysrq, file loads only")
    p.add_argument("--snapshot", action="store_true",
                   help="restore each cell's guest from a cached snapshot (made once per "
                        "profile and configuration) instead of booting it")
    args = p.parse_args()
    profiles = [x for x in args.profiles.split(",") if x]
    shapes = SHAPES[:1] if args.quick else SHAPES
    triggers = TRIGGERS[:1] if args.quick else TRIGGERS
    kexec = KEXEC[:1] if args.quick else KEXEC
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    images: dict[str, GuestImage] = {}
    started_at = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    for cell in (Cell(*c) for c in itertools.product(profiles, shapes, triggers, kexec)):
        if cell.profile == "bookworm" and cell.kexec == "classic":
            continue  # kexec-tools 2.0.25 has no --hotplug, and 6.1 could not use it
        if qemu_version() < cell.shape.min_qemu:
            print(f"SKIP {cell.name}: QEMU {'.'.join(map(str, qemu_version()))} is older than "
                  f"{'.'.join(map(str, cell.shape.min_qemu))}", flush=True)
            continue
        image = images.setdefault(cell.profile, build_image(cell.profile))
        config = GuestConfig(max_cpus=8, kexec=cell.kexec, accel=settings.current().accel,
                             memhp_default_state="online" if cell.profile == "bookworm"
                             else "online_movable",
                             snapshot=args.snapshot or settings.current()["snapshot"])
        spec = JobSpec(plan=build_plan(cell.shape.swarm), trigger=cell.trigger, expect=cell.expect)
        started = time.monotonic()
        job = run_job(image, config, spec, args.out / cell.name)
        rows.append({"cell": cell.name, "profile": cell.profile, "shape": cell.shape.name,
                     "trigger": cell.trigger, "kexec": cell.kexec, "result": job.result,
                     "expected": job.expected, "passed": job.passed, "accel": job.accel,
                     "kernel_release": job.kernel_release,
                     "seconds": round(time.monotonic() - started, 1),
                     "times": {k: v for k, v in job.times.items() if k in PHASES},
                     "trylock_failures": (job.swarm.klog.trylock_failures
                                          if job.swarm and job.swarm.klog else None),
                     "boot_faults": job.boot_faults, "evidence": str(args.out / cell.name),
                     "reason": job.reason.splitlines()[0] if job.reason else "",
                     "swarm": asdict(cell.shape.swarm)})
        print(f"{'PASS' if job.passed else 'FAIL'} {cell.name}: {job.result} "
              f"({rows[-1]['seconds']} s)", flush=True)
    (args.out / "report.json").write_text(json.dumps(rows, indent=2, default=str) + "\n")
    (args.out / "report.md").write_text(render_markdown(rows, images, started_at))
    print(f"report: {args.out / 'report.md'}")
    return 0 if all(r["passed"] for r in rows) else 1


#: The phases a reader compares between cells (seconds; see harness.job).
PHASES = ("boot_to_kdump_ready", "swarm_settle", "panic_to_capture", "dump_write", "verify")


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def render_markdown(rows: list[dict[str, Any]], images: dict[str, GuestImage],
                    started_at: str) -> str:
    """The report people read: what ran, what passed, and for each failure why and where."""
    passed = sum(r["passed"] for r in rows)
    accels = sorted({r["accel"] for r in rows if r["accel"]}) or ["?"]
    lines = ["# kdump-harness nightly matrix", "",
             f"Started {started_at}; QEMU {'.'.join(map(str, qemu_version()))} "
             f"({', '.join(accels)}). **{passed} of {len(rows)} cells passed.**", "",
             "| profile | kernel | image notes |", "|---|---|---|"]
    for name, image in images.items():
        notes = image.drift_summary() or "as locked"
        lines.append(f"| {name} | {image.kernel_release} | {notes} |")
    lines += ["", "| cell | result | expected | trylock failures | "
              + " | ".join(PHASES) + " | total |",
              "|---|---|---|---|" + "---|" * len(PHASES) + "---|"]
    for r in rows:
        mark = "✔" if r["passed"] else "✘"
        phases = " | ".join(_seconds(r["times"].get(k)) for k in PHASES)
        lines.append(f"| {r['cell']} | {mark} {r['result']} | {r['expected']} | "
                     f"{r['trylock_failures'] if r['trylock_failures'] is not None else '-'} | "
                     f"{phases} | {r['seconds']} |")
    failures = [r for r in rows if not r["passed"]]
    if failures:
        lines += ["", "## Failures", ""]
        lines += [f"- **{r['cell']}**: {r['result']} (expected {r['expected']}): {r['reason']}  "
                  f"\n  evidence: `{r['evidence']}`" for r in failures]
    faults = [(r["cell"], f) for r in rows for f in r["boot_faults"]]
    if faults:
        lines += ["", "## Boots tried again (known emulator faults)", ""]
        lines += [f"- {cell}: {fault}" for cell, fault in faults]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
