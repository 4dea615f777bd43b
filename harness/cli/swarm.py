"""``kdump-harness swarm``: boot, run a hot-plug swarm, report the settled topology.

Two forms share one command::

    kdump-harness swarm --dimms 16x256M --add-cpus 6 [...]   run a swarm (the default)
    kdump-harness swarm replay TRANSCRIPT.json [...]       run a recorded swarm again

``--boot-cpus`` is the number of vCPUs at boot and ``--add-cpus`` the number to hot-add,
in every command (``--cpus``, which meant one in some commands and the other in others,
still works with a deprecation warning).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import UsageError
from ..model import UPDATE_HELP, Accel, ContentionKind, UpdateStrategy, values

if TYPE_CHECKING:    # the parser is built without loading the guest machinery
    from ..api import GuestConfig, ReplayResult, SwarmPlan, SwarmResult, Topology
from .common import (
    Deprecated,
    add_guest_options,
    add_image_options,
    build_image_from_args,
    guest_config,
    print_json,
    run_dir,
)

DESCRIPTION = """\
Boot a guest, hot-plug DIMMs, virtio-mem and vCPUs in a swarm, wait until the guest shows
all of it (settle), and print the settled topology, its diff against QEMU's view, the
kernel's crash hot-plug log counts and the timings. Phase 0 adds everything; phase 1
(when --unplug/--unplug-cpus/a virtio-mem shrink ask for it) removes. The run directory
gets transcript.json (replayable), topology-expected.json, topology-observed.json,
diff.json, swarm.json and klog.txt. Exit status: 0 settled and matching, 1 a finding,
2 usage, 3 harness error.

To run a recorded swarm again on a fresh guest: kdump-harness swarm replay TRANSCRIPT.json
(options for the replay go after TRANSCRIPT.json)."""

CONTENTION_HELP = (
    "contention during the swarm, repeatable: KIND[:cpu=N,offset=S,count=N,sync=lock|none] "
    f"with KIND one of {', '.join(values(ContentionKind))}; reload = a kdump reload pinned to the "
    "ACPI-IRQ CPU, the swarm starting once the guest reports that kexec_file_load holds the "
    "kexec lock (sync=none: OFFSET seconds after it starts; reproduces the trylock "
    "failure; the guest boots with preempt=full), udev = a udev-like handler reloading "
    "kdump when crash_hotplug does not read 1, readers = crash_hotplug readers")


def add_swarm_options(p: argparse.ArgumentParser, *, dimms: str, add_cpus: int) -> None:
    """The swarm option group (shared by ``swarm`` and ``run``, with their own defaults).

    The old ``--cpus`` hot-added here (and counted boot vCPUs elsewhere): it still works,
    deprecated, meaning ``--add-cpus`` (``conflict_handler="resolve"`` replaces the shared
    options' deprecated ``--cpus``).
    """
    g = p.add_argument_group("swarm")
    g.add_argument("--add-cpus", dest="add_cpus", type=int, default=add_cpus,
                   metavar="N", help=f"vCPUs to hot-add (default {add_cpus}); needs "
                                     "--maxcpus >= --boot-cpus + N")
    g.add_argument("--cpus", dest="add_cpus", type=int, action=Deprecated, new="--add-cpus",
                   help=argparse.SUPPRESS)
    g.add_argument("--dimms", default=dimms, metavar="LIST",
                   help="DIMMs to hot-add: COUNTxSIZE[,COUNTxSIZE...], e.g. 16x256M "
                        "(sizes must be multiples of the guest's memory block, 128M; "
                        f"default {dimms or 'none'}; '' for none)")
    g.add_argument("--virtio-mem", metavar="SIZE[:SHRINK]",
                   help="add a virtio-mem device at boot, grow it to SIZE in phase 0 and "
                        "shrink it to SHRINK in phase 1, e.g. 1G:256M")
    g.add_argument("--virtio-mem-max", metavar="SIZE",
                   help="the virtio-mem device's region (default: SIZE rounded up to 1G)")
    g.add_argument("--unplug", type=int, default=0, metavar="N",
                   help="DIMMs to unplug in phase 1 (default 0)")
    g.add_argument("--unplug-cpus", type=int, default=0, metavar="N",
                   help="hot-added vCPUs to unplug in phase 1 (default 0)")
    g.add_argument("--leave-offline", action="store_true",
                   help="do not online hot-added vCPUs (udev would)")
    g.add_argument("--seed", type=int,
                   help="shuffle each phase and pick what to unplug from this seed")
    g.add_argument("--random", action="store_true",
                   help="with --seed: a random plan (counts, sizes, order, removals, timing) "
                        "within --dimms' count and --add-cpus")
    g.add_argument("--timing", default="burst", metavar="T",
                   help="burst (back to back, default), paced:SECONDS or waves:SIZE:SECONDS")
    g.add_argument("--contention", action="append", default=[], metavar="SPEC",
                   help=CONTENTION_HELP)
    g.add_argument("--update", default="auto", choices=values(UpdateStrategy), help=UPDATE_HELP)
    g.add_argument("--settle-timeout", type=float, metavar="SECONDS",
                   help="deadline for each phase to settle (default: the scaled settle timeout)")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("swarm", help="hot-plug DIMMs, virtio-mem and vCPUs in a swarm; "
                                     "'swarm replay T.json' runs a transcript again",
                       description=DESCRIPTION,
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       # The old --cpus hot-added here: it replaces the shared options'
                       # deprecated --cpus (the boot count elsewhere).
                       conflict_handler="resolve")
    add_image_options(p)
    add_guest_options(p)
    add_swarm_options(p, dimms="", add_cpus=0)
    p.set_defaults(func=cmd_swarm, swarm_command=None)

    rsub = p.add_subparsers(dest="swarm_command", metavar="[replay]")
    r = rsub.add_parser("replay", help="run a recorded swarm again on a fresh guest",
                        description="Boot a guest configured as the transcript records, run "
                                    "its plan again (vCPUs pinned to the recorded slots) and "
                                    "compare the actions. Exit status 0 when the replay did "
                                    "the same thing and settled.")
    r.add_argument("transcript", type=Path, help="transcript.json of an earlier swarm run")
    add_image_options(r)
    r.set_defaults(profile=None)   # default: the transcript's profile
    r.add_argument("--timing", default="plan", choices=("plan", "recorded"),
                   help="plan: the plan's delays; recorded: the gaps measured in the original")
    r.add_argument("--accel", default=None, choices=values(Accel),
                   help="default: KDUMP_HARNESS_ACCEL, else auto")
    r.add_argument("--out", type=Path, help="run directory (default ./runs/swarm-replay-<time>)")
    r.add_argument("--json", action="store_true", help="machine-readable output")
    r.set_defaults(func=cmd_swarm)


# -- running ----------------------------------------------------------------------------

def plan_from_args(args: argparse.Namespace) -> SwarmPlan:
    """The plan the options describe (also used by tests and the benchmark)."""
    from ..api import plan_from_options

    return plan_from_options(dimms=args.dimms, add_cpus=args.add_cpus,
                             virtio_mem=args.virtio_mem, unplug=args.unplug,
                             unplug_cpus=args.unplug_cpus, leave_offline=args.leave_offline,
                             seed=args.seed, timing=args.timing, random=args.random)


def swarm_guest_config(args: argparse.Namespace, **overrides: Any) -> GuestConfig:
    """The guest a swarm needs: room for the hot-added vCPUs, the virtio-mem device."""
    from ..api import boot_args_for, parse_contention, virtio_mem_qemu_args

    if args.cpus + args.add_cpus > args.maxcpus:
        raise UsageError(f"{args.cpus} boot + {args.add_cpus} hot-added vCPUs exceed "
                         f"--maxcpus {args.maxcpus}")
    region = _virtio_mem_region(args)
    qemu_args = virtio_mem_qemu_args("vmem0", region) if region else ()
    # Reload contention needs a preemptible kexec_file_load (contention.py says why).
    contention = [parse_contention(c) for c in args.contention]
    return guest_config(args, qemu_args=qemu_args,
                        extra_kernel_args=boot_args_for(contention, args.append), **overrides)


def _virtio_mem_region(args: argparse.Namespace) -> int | None:
    from ..api import parse_virtio_mem
    from ..units import parse_size

    if not args.virtio_mem:
        return None
    grow, _ = parse_virtio_mem(args.virtio_mem)
    if args.virtio_mem_max:
        region = parse_size(args.virtio_mem_max)
        if region < grow:
            raise UsageError("--virtio-mem-max is smaller than the virtio-mem size")
        return region
    gib = 1 << 30
    return max(gib, (grow + gib - 1) // gib * gib)


def cmd_swarm(args: argparse.Namespace) -> int:
    from ..api import (
        Guest,
        SwarmOptions,
        check_memory_budget,
        fit_for_plan,
        parse_contention,
        run_swarm,
    )

    if args.swarm_command == "replay":
        return cmd_replay(args)
    plan = plan_from_args(args)
    config = fit_for_plan(swarm_guest_config(args), plan)
    check_memory_budget(plan, config)      # refused before the image build, not after a boot
    contention = [parse_contention(c) for c in args.contention]
    options = SwarmOptions(update=args.update, settle_timeout=args.settle_timeout)
    image = build_image_from_args(args)
    out = run_dir(args, "swarm")
    with Guest(image, config, out) as guest:
        if not args.json:
            print(f"guest booted: {image.profile} {image.kernel_release} ({guest.accel.name}) "
                  f"in {guest.times.kdump_ready or 0:.2f} s; {plan.summary()}", file=sys.stderr)
        result = run_swarm(guest, plan, options=options, contention=contention,
                           transcript_path=out / "transcript.json")
    save_artifacts(result, out)
    report = result_report(result, out)
    if args.json:
        print_json(report)
    else:
        print_result(result, out)
    return 0 if result.settled else 1


def cmd_replay(args: argparse.Namespace) -> int:
    from ..api import Guest, SwarmTranscript, fit_for_plan, guest_config_from_transcript, replay

    transcript = SwarmTranscript.load(args.transcript)
    args.profile = args.profile or transcript.guest.get("profile") or "trixie"
    image = build_image_from_args(args)
    from ..settings import current

    config = fit_for_plan(guest_config_from_transcript(transcript, accel=current().accel),
                          transcript.plan)
    out = run_dir(args, "swarm-replay")
    with Guest(image, config, out) as guest:
        rr = replay(guest, transcript, timing=args.timing,
                    transcript_path=out / "transcript.json")
    save_artifacts(rr.result, out)
    if args.json:
        print_json(result_report(rr.result, out) | {"replay_of": str(args.transcript),
                                                     "same_actions": rr.same_actions,
                                                     "differences": rr.differences})
    else:
        print_result(rr.result, out)
        print_replay(rr, args.transcript)
    return 0 if rr.same_actions and rr.result.settled else 1


# -- output -----------------------------------------------------------------------------

def save_artifacts(result: SwarmResult, out: Path) -> None:
    """topology-expected.json, topology-observed.json, diff.json, swarm.json and klog.txt."""
    if result.expected is not None:
        result.expected.save(out / "topology-expected.json")
    if result.observed is not None:
        result.observed.save(out / "topology-observed.json")
    if result.diff is not None:
        (out / "diff.json").write_text(json.dumps(result.diff.to_json_dict(), indent=2) + "\n")
    (out / "swarm.json").write_text(json.dumps(result.to_json_dict(), indent=2,
                                               default=str) + "\n")
    if result.klog_marker is not None and result.klog_marker.text:
        (out / "klog.txt").write_text(result.klog_marker.text + "\n")


def topology_lines(topo: Topology) -> list[str]:
    from ..api import format_cpu_list
    from ..units import size_option

    ram = ", ".join(str(r) for r in topo.system_ram)
    total = sum(r.size for r in topo.system_ram)
    return [
        f"  kernel            {topo.kernel_release}",
        f"  System RAM        {total / (1 << 20):.1f} MiB in {len(topo.system_ram)} ranges: {ram}",
        f"  Crash kernel      {', '.join(str(r) for r in topo.crash_kernel) or '-'}",
        *([f"  crashkernel CMA   {', '.join(str(r) for r in topo.crash_cma)}"]
          if topo.crash_cma else []),
        (f"  CPUs              online {format_cpu_list(topo.cpus_online)}, present "
         f"{format_cpu_list(topo.cpus_present)}, possible {format_cpu_list(topo.cpus_possible)}"),
        (f"  memory blocks     {len(topo.memory_blocks_online)} online, "
         f"{len(topo.memory_blocks_offline)} offline "
         f"({size_option(topo.memory_block_size or 0)} each)"),
        f"  crash_hotplug     cpu={topo.crash_hotplug_cpu} memory={topo.crash_hotplug_memory}",
    ]


def print_result(result: SwarmResult, out: Path) -> None:
    print(result.summary())
    if result.observed is not None:
        print("settled topology (guest):")
        print("\n".join(topology_lines(result.observed)))
    if result.latencies:
        values = sorted(result.latencies.values())
        print(f"QMP latencies: {len(values)} ops, median {values[len(values) // 2]:.3f} s, "
              f"max {values[-1]:.3f} s")
    print(f"evidence: {out}")


def print_replay(rr: ReplayResult, original: Path) -> None:
    if rr.same_actions:
        print(f"replay of {original}: the same {len(rr.result.plan.events)} actions")
    else:
        print(f"replay of {original}: the actions DIFFER")
        for line in rr.differences:
            print(f"  {line}")


def result_report(result: SwarmResult, out: Path) -> dict[str, Any]:
    report = result.to_json_dict()
    report["run_dir"] = str(out)
    report["observed"] = result.observed.to_json_dict() if result.observed else None
    report["expected"] = result.expected.to_json_dict() if result.expected else None
    return report
