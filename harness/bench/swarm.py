"""Benchmark: how long hot-plug swarms take to settle (under TCG on this project's hosts).

* the reference burst, 16 x 256 MiB DIMMs and 6 vCPUs, on fresh guests: median of
  ``--runs`` (default 5), target under 6 s from the first ``device_add`` to the guest
  showing everything (every block online, every vCPU online, the oracle's diff empty);
* a large swarm: 64 DIMMs and every vCPU slot up to maxcpus 32, settle time reported.

Run it with ``python -m harness.bench.swarm [--profile trixie] [--runs 5] [--json]``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

from ..guest import Guest, GuestConfig
from ..hotplug import SwarmResult, SwarmSpec, build_plan, run_swarm
from ..model import Accel
from ..units import GiB, MiB
from .stats import Summary, summarize

#: The issue's target for the reference burst's settle time (median, TCG).
BURST_TARGET = 6.0


def _swarm_once(image: Any, config: GuestConfig, spec: SwarmSpec,
                keep: Path | None) -> tuple[SwarmResult, float]:
    with tempfile.TemporaryDirectory(prefix="kh-bench-swarm-") as tmp:
        workdir = keep if keep is not None else Path(tmp)
        with Guest(image, config, workdir) as guest:
            boot = guest.times.kdump_ready or 0.0
            result = run_swarm(guest, build_plan(spec))
    return result, boot


def bench_burst(image: Any, runs: int, *, keep: Path | None = None) -> dict[str, Any]:
    """The reference burst on ``runs`` fresh guests."""
    spec = SwarmSpec(dimms=(256 * MiB,) * 16, cpus=6, name="burst")
    settle, qmp, cpus, failures = [], [], [], []
    for i in range(runs):
        result, boot = _swarm_once(image, GuestConfig(accel=Accel.TCG), spec,
                                   keep / f"burst{i}" if keep else None)
        phase = result.phases[0]
        if not result.settled:
            failures.append(result.summary())
            print(f"  burst run {i + 1}: did NOT settle", file=sys.stderr)
            continue
        settle.append(phase.settled)
        qmp.append(phase.qmp_done)
        cpus.append(phase.cpus_onlined)
        print(f"  burst run {i + 1}: settled in {phase.settled:.2f} s (QMP done "
              f"{phase.qmp_done:.2f} s, vCPUs online {phase.cpus_onlined:.2f} s; "
              f"boot {boot:.2f} s)", file=sys.stderr)
    summaries = [summarize("16x256M + 6 vCPU burst: settled", settle),
                 summarize("  ... every _OST reported", qmp),
                 summarize("  ... vCPUs onlined", cpus)]
    return {"summaries": summaries, "failures": failures}


def bench_large(image: Any, *, max_cpus: int = 32, dimms: int = 64,
                keep: Path | None = None) -> dict[str, Any]:
    """64 DIMMs and every vCPU slot up to ``max_cpus`` in one burst.

    2 GiB of boot memory: the struct pages of 16 GiB of hot-added memory (256 MiB) come
    out of boot memory (memmap_on_memory is off by default), next to a 256M crashkernel.
    """
    config = GuestConfig(accel=Accel.TCG, memory=2 * GiB, max_cpus=max_cpus, memory_slots=dimms,
                         max_memory=2 * GiB + dimms * 256 * MiB)
    spec = SwarmSpec(dimms=(256 * MiB,) * dimms, cpus=max_cpus - config.cpus, name="large")
    result, boot = _swarm_once(image, config, spec, keep / "large" if keep else None)
    phase = result.phases[0]
    print(f"  large swarm: {'settled' if result.settled else 'did NOT settle'} in "
          f"{phase.settled or 0:.2f} s (QMP done {phase.qmp_done or 0:.2f} s, vCPUs online "
          f"{phase.cpus_onlined or 0:.2f} s; boot {boot:.2f} s)", file=sys.stderr)
    return {"settled": result.settled, "settle": phase.settled, "qmp_done": phase.qmp_done,
            "cpus_onlined": phase.cpus_onlined, "events": len(spec.dimms) + spec.cpus,
            "klog": result.klog.to_json_dict() if result.klog else None,
            "failures": result.failures}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m harness.bench.swarm", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--profile", default="trixie")
    p.add_argument("--runs", type=int, default=5, help="fresh guests for the burst (default 5)")
    p.add_argument("--no-large", action="store_true", help="skip the 64-DIMM/32-vCPU swarm")
    p.add_argument("--keep", type=Path, help="keep each run's evidence under this directory")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    from ..images import build_image

    image = build_image(args.profile)
    print(f"swarm benchmark: {args.profile} {image.kernel_release}, TCG", file=sys.stderr)
    burst = bench_burst(image, args.runs, keep=args.keep)
    large = None if args.no_large else bench_large(image, keep=args.keep)
    summaries: list[Summary] = burst["summaries"]
    if args.json:
        print(json.dumps({
            "profile": args.profile, "kernel_release": image.kernel_release,
            "burst": {s.name.strip(" ."): {"median": s.median, "samples": s.samples}
                      for s in summaries},
            "burst_target": BURST_TARGET, "burst_failures": burst["failures"],
            "large": large}, indent=2, default=str))
    else:
        print(summaries[0].line(target=BURST_TARGET))
        for s in summaries[1:]:
            print(s.line())
        if large is not None:
            print(f"{'64x256M + vCPUs to 32: settled':34} "
                  f"{large['settle'] or float('nan'):7.3f} s  "
                  f"({large['events']} events; {'settled' if large['settled'] else 'NOT settled'})")
    ok = not burst["failures"] and (large is None or large["settled"])
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
