"""``kdump-harness run``: the main job, end to end, with a readable report."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from ..results import EXPECTATIONS
from .common import (
    add_guest_options,
    add_image_options,
    add_panic_options,
    build_image_from_args,
    print_json,
    run_dir,
)
from .swarm import add_swarm_options, plan_from_args, swarm_guest_config

if TYPE_CHECKING:    # the parser is built without loading the guest machinery
    from ..api import GuestConfig, JobResult, JobSpec

DESCRIPTION = """\
One whole cycle: boot a kdump-ready guest, run a hot-plug swarm, snapshot the topology,
panic, capture the vmcore, collect it and verify it against the topology.  Prints the
verifier's report and the phase times.  Exit status 0 only when the result is the expected
one (--expect, default accurate), 1 another result, 2 bad usage (refused before anything
starts), 3 a harness failure (QEMU, QMP, SSH or the host: says nothing about the kernel).

With no options: trixie, 8 x 256M DIMMs and 2 vCPUs hot-added in a burst, sysrq, headers."""


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("run", help="the main job: boot, swarm, panic, capture, verify",
                       description=DESCRIPTION,
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       conflict_handler="resolve")
    add_run_options(p)
    p.set_defaults(func=cmd_run)


def add_run_options(p: argparse.ArgumentParser) -> None:
    """Every option of ``run`` (``repro`` takes them all: they are its recipe)."""
    add_image_options(p)
    add_guest_options(p)
    add_swarm_options(p, dimms="8x256M", add_cpus=2)
    c = add_panic_options(p)
    c.add_argument("--panic-after", type=int, metavar="K",
                   help="panic after K swarm events instead of after the swarm settles")
    c.add_argument("--expect", default="accurate", choices=EXPECTATIONS,
                   help="the result that counts as success (stale: a negative control)")


def job_inputs(args: argparse.Namespace) -> tuple[GuestConfig, JobSpec]:
    """The guest and the job the ``run`` options describe, validated (``UsageError``
    before anything starts); ``repro`` and ``matrix`` build each iteration with it."""
    from ..api import JobSpec, SwarmOptions, parse_contention

    plan = plan_from_args(args)
    config = swarm_guest_config(args, capture_mode=args.mode)
    spec = JobSpec(plan=plan, swarm_options=SwarmOptions(update=args.update,
                                                         settle_timeout=args.settle_timeout),
                   contention=tuple(parse_contention(c) for c in args.contention),
                   trigger=args.trigger, trigger_cpus=tuple(args.cpu),
                   panic_after=args.panic_after, during_reload=args.during_reload,
                   expect=args.expect)
    spec.validate(config)      # everything refusable is refused before the image build
    return config, spec


def cmd_run(args: argparse.Namespace) -> int:
    from ..api import run_job

    config, spec = job_inputs(args)
    image = build_image_from_args(args)
    out = run_dir(args, "run")
    if not args.json:
        print(f"kdump-harness run: {image.profile} {image.kernel_release}; "
              f"{spec.plan.summary()}; {args.trigger} panic, {args.mode} capture; "
              f"evidence in {out}", file=sys.stderr)
    job = run_job(image, config, spec, out)
    if args.json:
        print_json(job.to_json_dict())
    else:
        print_job(job)
    return int(job.exit_status)


def print_job(job: JobResult) -> None:
    from ..api import format_drift, format_times

    print(f"== kdump-harness run: {job.kernel_release} under {job.accel or '?'}")
    if job.tcg_threads:
        print(f"TCG threads {job.tcg_threads.mode}: {job.tcg_threads.reason}")
    for fault in job.boot_faults:
        print(f"note: {fault}")
    if job.lock_drift:
        print(f"note: {len(job.lock_drift)} packages differ from packages.lock.json (the archive "
              f"dropped the pinned versions): {format_drift(job.lock_drift)}")
    if job.swarm is not None:
        print(job.swarm.summary())
    if job.capture is not None:
        print(f"capture: {job.capture.outcome.value}: {job.capture.reason}")
    if job.report is not None:
        print(job.report.to_text())
    print("phase times:")
    print(format_times(job.times))
    status = "PASS" if job.passed else "FAIL"
    print(f"{status}: result {job.result}, expected {job.expected}: {job.reason.splitlines()[0]}")
    print(f"evidence: {job.run_dir}")
