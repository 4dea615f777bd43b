"""The harness's API, in pipeline order: what the faces (the command line, the pytest
plugin, ci/ scripts) and your own scripts use.

    image    = build_image("trixie")                                   # images
    with Guest(image, GuestConfig(), Path("run")) as guest:            # guest
        swarm = run_swarm(guest, build_plan(SwarmSpec(dimms=(256 * MiB,) * 8)))  # hotplug
        expected, observed = snapshot(guest)                           # topology
        capture = panic_and_capture(guest, trigger="sysrq")            # crash
    report = verify(open_dump(capture.files["vmcore"]), observed, expected=expected)

or the whole cycle at once: ``run_job(image, GuestConfig(), JobSpec(plan=...), out)``.

Importing this module loads every layer; the command line imports it inside the command
that needs it, so that ``--help`` and ``vmcore inspect`` start fast.
"""

from __future__ import annotations

from .crash import (
    CaptureResult,
    LockEvidence,
    LockHolder,
    Outcome,
    check_trigger,
    panic_and_capture,
)
from .guest import Guest, GuestConfig, ImageLike
from .hotplug import (
    QEMU_SURVIVES_CPU_UNPLUG,
    ReplayResult,
    SwarmOptions,
    SwarmPlan,
    SwarmResult,
    SwarmSpec,
    SwarmTranscript,
    boot_args_for,
    build_plan,
    check_memory_budget,
    fit_for_plan,
    guest_config_from_transcript,
    parse_contention,
    parse_dimms,
    parse_timing,
    parse_virtio_mem,
    plan_from_options,
    random_plan,
    replay,
    run_swarm,
    virtio_mem_qemu_args,
)
from .images import GuestImage, build_image, image_path, list_images
from .images.builder import format_drift
from .job import JobResult, JobSpec, format_times, run_job, verify_capture
from .live_audit import LiveAudit, audit
from .topology import Topology, format_cpu_list, snapshot
from .vmcore import Dump, VerifyReport, describe_dump, open_dump, verify

__all__ = [
    "QEMU_SURVIVES_CPU_UNPLUG", "CaptureResult", "Dump", "Guest", "GuestConfig", "GuestImage",
    "ImageLike", "JobResult", "JobSpec", "LiveAudit", "LockEvidence", "LockHolder",
    "Outcome", "ReplayResult", "SwarmOptions",
    "SwarmPlan", "SwarmResult", "SwarmSpec", "SwarmTranscript", "Topology", "VerifyReport",
    "audit", "boot_args_for", "build_image", "build_plan", "check_memory_budget",
    "check_trigger", "describe_dump", "fit_for_plan", "format_cpu_list", "format_drift",
    "format_times", "guest_config_from_transcript", "image_path", "list_images", "open_dump",
    "panic_and_capture", "parse_contention", "parse_dimms", "parse_timing",
    "parse_virtio_mem", "plan_from_options", "random_plan", "replay", "run_job",
    "run_swarm", "snapshot", "verify", "verify_capture", "virtio_mem_qemu_args",
]
