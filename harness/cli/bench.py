"""``kdump-harness bench``: phase timings, median and spread over several runs.

Targets come from the issues and are printed beside each number; benchmarks never fail a
test run, they report.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:    # the parser is built without loading the guest machinery
    from ..api import ImageLike
    from ..bench.stats import Summary


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("bench", help="benchmark the phases (median and spread of N runs)",
                       description="Benchmarks: boot (boot to userspace, kdump load, boot to "
                                   "kdump-ready), crash (panic to capture, dump written), run "
                                   "(the whole default job), audit (live elfcorehdr round "
                                   "trip), images (build from a warm package cache), vmcore "
                                   "(header inspection of a multi-GiB dump), swarm (hot-plug "
                                   "settle times), restore (a snapshot's guest to kdump-ready), "
                                   "streams (verified cycles per hour of parallel `run` "
                                   "streams, cold and --snapshot).")
    p.add_argument("what", choices=("boot", "crash", "run", "audit", "images", "vmcore", "swarm",
                                    "restore", "streams", "profile"))
    p.add_argument("--profile", default="trixie")
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--mode", default="headers", help="capture mode for 'crash' and 'profile'")
    p.add_argument("--trigger", default="sysrq", help="panic trigger for 'crash' and 'profile'")
    p.add_argument("--memory", default="1G", help="guest memory (crash elf: 1536M)")
    p.add_argument("--snapshot", action="store_true",
                   help="'run', 'crash' and 'profile': guests restored from a snapshot")
    p.add_argument("--streams", type=int, default=2,
                   help="'streams': parallel streams (each runs --runs cycles)")
    p.add_argument("--keep", type=Path, metavar="DIR",
                   help="boot, crash, run, restore, profile: keep every run's evidence in DIR (by "
                        "default only a run that failed or took 1.5x the median or more "
                        "keeps it, in a temporary directory the report names)")
    p.add_argument("--extra", default="", metavar="'OPTIONS'",
                   help="options passed on to the images/vmcore/swarm benchmarks, quoted")
    p.set_defaults(func=cmd_bench)


def cmd_bench(args: argparse.Namespace) -> int:
    if args.what == "images":
        from ..bench.images import main as images_main
        return images_main(["--profile", args.profile, "--runs", str(args.runs),
                            *shlex.split(args.extra)])
    if args.what == "vmcore":
        from ..bench.vmcore import main as vmcore_main
        return vmcore_main(shlex.split(args.extra))
    if args.what == "swarm":
        from ..bench.swarm import main as swarm_main
        return swarm_main(["--profile", args.profile, "--runs", str(args.runs),
                           *shlex.split(args.extra)])

    if args.what == "streams":
        return _bench_streams(args)
    from ..api import GuestConfig, build_image
    from ..bench.guest import bench_boot, bench_crash
    from ..bench.host_load import gauge_line
    from ..bench.snapshot import bench_restore
    from ..guest.accel import qemu_binary
    from ..units import parse_size

    image = build_image(args.profile)
    memory = parse_size(args.memory)

    def report(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    print(f"bench {args.what}: {image.profile} {image.kernel_release}, {args.runs} runs, "
          f"{args.memory} guest", flush=True)
    print(gauge_line(qemu_binary()), flush=True)
    keep = args.keep
    if args.what == "boot":
        rows = bench_boot(image, args.runs, GuestConfig(memory=memory), report, keep)
        targets = {"boot to kdump-ready": 4.5}
    elif args.what == "restore":
        rows = bench_restore(image, args.runs, GuestConfig(memory=memory), report, keep)
        targets = {"restore to kdump-ready": 0.3}
    elif args.what == "crash":
        config = GuestConfig(memory=memory, capture_mode=args.mode, snapshot=args.snapshot)
        rows = bench_crash(image, args.runs, config, args.trigger, report, keep)
        targets = {"panic to capture userspace": 3.0, "dump written (headers)": 1.0,
                   "dump written (elf)": 15.0}
    elif args.what == "profile":
        return _bench_profile(image, args, memory, report)
    elif args.what == "audit":
        rows = _bench_audit(image, args.runs, report)
        targets = {"live audit round trip": 0.3}
    else:
        rows = _bench_run(image, args.runs, report, snapshot=args.snapshot, keep=keep)
        targets = {"run: boot to verdict": 6.0 if args.snapshot else 15.0}
    for row in rows:
        print(row.line(target=targets.get(row.name)))
    return 0


def _bench_profile(image: ImageLike, args: argparse.Namespace, memory: int,
                   report: Callable[[str], None]) -> int:
    from ..api import GuestConfig
    from ..bench.rip_sampler import INTERVAL, bench_profile

    print(f"instruction pointers sampled every {INTERVAL * 1000:g} ms over QMP (phase "
          "boundaries within one interval)", flush=True)
    config = GuestConfig(memory=memory, capture_mode=args.mode, snapshot=args.snapshot)
    result = bench_profile(image, args.runs, config, args.trigger, report, args.keep)
    for row in result.rows:
        print(row.line())
    if result.functions:
        print(f"capture kernel, most sampled functions ({result.samples} samples, all runs):")
        for name, share in result.functions:
            print(f"  {share * 100:5.1f} %  {name}")
    else:
        print("capture kernel functions: no symbols (the guest's /proc/kallsyms shows no "
              "addresses) or no samples")
    return 0 if result.rows else 1


def _bench_audit(image: ImageLike, runs: int,
                 report: Callable[[str], None]) -> list[Summary]:
    from ..api import Guest, GuestConfig, audit
    from ..bench.stats import summarize

    rounds: list[float] = []
    reads: list[float] = []
    with (tempfile.TemporaryDirectory(prefix="kh-bench-") as tmp,
          Guest(image, GuestConfig(), Path(tmp)) as g):
        location = audit(g).location
        for _ in range(max(runs, 5) * 4):
            a = audit(g, location=location)
            rounds.append(a.seconds)
            reads.append(a.read_seconds)
    return [summarize("live audit round trip", rounds), summarize("header read (pmemsave)", reads)]


def _bench_streams(args: argparse.Namespace) -> int:
    """Cold streams, then restored ones (after one untimed run makes the snapshot)."""
    from ..bench.host_load import gauge_line
    from ..bench.snapshot import bench_streams
    from ..guest.accel import qemu_binary

    def report(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    profile = ["--profile", args.profile]
    print(f"bench streams: {args.streams} parallel streams of {args.runs} `run` each, "
          f"{args.profile}", flush=True)
    print(gauge_line(qemu_binary()), flush=True)
    cold = bench_streams("cold run", profile, args.runs, args.streams, report)
    bench_streams("(making the snapshot)", [*profile, "--snapshot"], 1, 1, report)
    warm = bench_streams("run --snapshot", [*profile, "--snapshot"], args.runs,
                         args.streams, report)
    print(cold.line())
    print(cold.cpu_line())
    print(warm.line() + f"  target >= 1000: {'met' if warm.per_hour >= 1000 else 'MISSED'}")
    print(warm.cpu_line())
    return 0


def _bench_run(image: ImageLike, runs: int, report: Callable[[str], None], *,
               snapshot: bool = False, keep: Path | None = None) -> list[Summary]:
    from ..api import GuestConfig, JobSpec, SwarmSpec, build_plan, run_job
    from ..bench.run_evidence import BenchEvidence
    from ..bench.stats import summarize

    totals: list[float] = []
    phases: dict[str, list[float | None]] = {}
    spec = JobSpec(plan=build_plan(SwarmSpec(dimms=(256 << 20,) * 8, cpus=2)))
    if snapshot:    # made once, untimed: the runs measure restores
        with tempfile.TemporaryDirectory(prefix="kh-bench-") as tmp:
            run_job(image, GuestConfig(snapshot=True), spec, Path(tmp))
    with BenchEvidence("run", report, keep) as evidence:
        for i in range(1, runs + 1):
            with evidence.run(i) as run:
                started = time.monotonic()
                job = run_job(image, GuestConfig(snapshot=snapshot), spec, run.workdir)
                totals.append(time.monotonic() - started)
                if job.result in ("accurate", "stale"):
                    run.value = totals[-1]
                for k, v in job.times.items():
                    phases.setdefault(k, []).append(v)
                report(f"  run {i}: {job.result} in {totals[-1]:.2f} s")
    return [summarize("run: boot to verdict", totals)] + [
        summarize(f"  {k}", v) for k, v in phases.items() if k != "total"]
