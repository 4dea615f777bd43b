"""Hot-plug swarms: DIMMs, vCPUs and virtio-mem through QMP, in bursts, paces and waves.

In pipeline order::

    plan        SwarmPlan / SwarmEvent / Timing; build_plan(SwarmSpec), random_plan, and
                the option parsers (parse_dimms, parse_virtio_mem, parse_timing)
    checks      check_memory_budget (before boot), preflight (before the first event)
    devices     the QMP commands of each device kind and the events that answer them
    tracker     QEMU's answers, per device operation (a refusal is reported at once)
    onlining    what udev would do in the guest: online vCPUs, load virtio-mem
    runner      run_swarm: send (sender), settle (settle), keep kdump current (update);
                state holds what those parts share
    contention  what contends for the kexec lock meanwhile (reloads, udev, readers)
    klog        the kernel's crash hot-plug lines during the swarm
    report      SwarmOptions, the between-events hook, PhaseReport, SwarmResult
    transcript  transcript.json (pointing into qmp.jsonl); replay runs one again
"""

from __future__ import annotations

from .checks import QEMU_SURVIVES_CPU_UNPLUG, check_memory_budget, fit_for_plan, hotplug_total
from .contention import ContentionInjector, ContentionSpec, boot_args_for, parse_contention
from .devices import virtio_mem_qemu_args
from .klog import KlogCounts
from .plan import (
    Action,
    SwarmEvent,
    SwarmPlan,
    SwarmSpec,
    Timing,
    build_plan,
    parse_dimms,
    parse_timing,
    parse_virtio_mem,
    plan_from_options,
    random_plan,
)
from .replay import ReplayResult, compare_actions, replay, replay_plan
from .report import (
    Hook,
    HookAction,
    PhaseReport,
    SwarmOptions,
    SwarmProgress,
    SwarmResult,
    stop_after,
)
from .runner import run_swarm
from .transcript import SwarmTranscript, guest_config_from_transcript
from .update import resolve_update

__all__ = [
    "QEMU_SURVIVES_CPU_UNPLUG",
    "Action",
    "ContentionInjector",
    "ContentionSpec",
    "Hook",
    "HookAction",
    "KlogCounts",
    "PhaseReport",
    "ReplayResult",
    "SwarmEvent",
    "SwarmOptions",
    "SwarmPlan",
    "SwarmProgress",
    "SwarmResult",
    "SwarmSpec",
    "SwarmTranscript",
    "Timing",
    "boot_args_for",
    "build_plan",
    "check_memory_budget",
    "compare_actions",
    "fit_for_plan",
    "guest_config_from_transcript",
    "hotplug_total",
    "parse_contention",
    "parse_dimms",
    "parse_timing",
    "parse_virtio_mem",
    "plan_from_options",
    "random_plan",
    "replay",
    "replay_plan",
    "resolve_update",
    "run_swarm",
    "stop_after",
    "virtio_mem_qemu_args",
]
