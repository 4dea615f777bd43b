"""The main job: boot, swarm, snapshot, panic, capture, collect, verify.

One run leaves all of its evidence in one directory: both kernels' console logs, the
QMP transcript, the QEMU command line, the topology snapshots, the swarm transcript, the
dump (or ``vmcore.missing`` saying why there is none), the raw elfcorehdr and
``verdict.json``.  The job's result is *expected* or not: ``expect="accurate"`` for a
real check, ``expect="stale"`` for a negative control (a 6.1 guest whose header nobody
updates), or a capture outcome such as ``kdump_did_not_occur``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .contention import ContentionSpec
from .crash import CaptureResult, Outcome, panic_and_capture
from .errors import (
    BootFailure,
    GuestError,
    HarnessError,
    HotplugNotHonoured,
    KdumpLoadError,
    KernelUnsuitable,
    UsageError,
    VmcoreFormatError,
)
from .machine import Guest, GuestConfig
from .swarm import SwarmOptions, SwarmPlan, SwarmResult, run_swarm
from .topology import Topology, snapshot
from .vmcore import VerifyReport, open_dump, parse_elfcorehdr, verify

VERDICTS = ("accurate", "stale", "incomplete", "mismatch", "invalid")
OUTCOMES = tuple(o.value for o in Outcome if o is not Outcome.CAPTURED)
#: Results for guest failures before the panic (each a distinct, documented result).
_GUEST_ERROR_RESULTS: dict[type[GuestError], str] = {
    BootFailure: "boot_failure",
    KdumpLoadError: "kdump_load_failed",
    HotplugNotHonoured: "hotplug_not_honoured",
    KernelUnsuitable: "kernel_unsuitable",
}
EXPECTATIONS = VERDICTS + OUTCOMES + tuple(_GUEST_ERROR_RESULTS.values())


@dataclass(frozen=True)
class JobSpec:
    """What one run of the main job does after the guest is up."""

    plan: SwarmPlan
    swarm_options: SwarmOptions = field(default_factory=SwarmOptions)
    contention: tuple[ContentionSpec, ...] = ()
    trigger: str = "sysrq"
    trigger_cpus: tuple[int, ...] = ()
    panic_after: int | None = None      # panic after this many swarm events (mid-swarm)
    during_reload: bool = False         # panic while a kdump reload is in flight
    expect: str = "accurate"

    def validate(self) -> None:
        if self.expect not in EXPECTATIONS:
            raise UsageError(f"--expect must be one of {', '.join(EXPECTATIONS)}, "
                             f"not {self.expect!r}")
        if self.panic_after is not None and self.panic_after < 0:
            raise UsageError("--panic-after must be >= 0")


@dataclass
class JobResult:
    """Everything the job learned; ``result`` is the verdict or the capture outcome."""

    result: str
    expected: str
    reason: str
    capture: CaptureResult | None = None
    swarm: SwarmResult | None = None
    report: VerifyReport | None = None
    times: dict[str, float | None] = field(default_factory=dict)
    run_dir: Path | None = None
    accel: str = ""
    kernel_release: str = ""
    #: package -> (locked, used) when the image could not follow the lock file.
    lock_drift: dict[str, tuple[str | None, str | None]] = field(default_factory=dict)
    #: Boot attempts that a known emulator fault ended before the one that ran.
    boot_faults: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return self.result == self.expected

    def to_json_dict(self) -> dict[str, Any]:
        return {
            "result": self.result, "expected": self.expected, "passed": self.passed,
            "reason": self.reason, "accel": self.accel, "kernel_release": self.kernel_release,
            "lock_drift": {n: list(v) for n, v in self.lock_drift.items()},
            "boot_faults": self.boot_faults,
            "times": self.times, "run_dir": str(self.run_dir),
            "capture": self.capture.to_json_dict() if self.capture else None,
            "swarm": self.swarm.to_json_dict() if self.swarm else None,
            "verify": self.report.to_json_dict() if self.report else None,
        }


def run_job(image: Any, config: GuestConfig, spec: JobSpec, out: Path) -> JobResult:
    """Run the whole cycle in ``out`` and write ``verdict.json`` (always)."""
    spec.validate()
    started = time.monotonic()
    job = JobResult(result="harness_error", expected=spec.expect, reason="not started",
                    run_dir=out, kernel_release=getattr(image, "kernel_release", ""),
                    lock_drift=dict(getattr(image, "lock_drift", {})))
    try:
        with Guest(image, config, out) as guest:
            job.accel = guest.accel.name
            job.boot_faults = list(guest.boot_faults)
            job.times.update(boot_to_userspace=guest.times.userspace,
                             kdump_load=guest.times.guest_kdump_load,
                             boot_to_kdump_ready=guest.times.kdump_ready)
            observed = _swarm_and_snapshot(guest, spec, out, job)
            job.capture = panic_and_capture(guest, trigger=spec.trigger,
                                            cpus=spec.trigger_cpus, out=out,
                                            during_reload=spec.during_reload)
        _times_from_capture(job)
        if job.capture.captured:
            _verify(job, observed, out)
        else:
            job.result = job.capture.outcome.value
            job.reason = job.capture.reason
    except VmcoreFormatError as exc:
        # The capture kernel wrote something the readers reject: a finding about the dump.
        job.result = "invalid"
        job.reason = str(exc)
    except GuestError as exc:
        job.result = _GUEST_ERROR_RESULTS.get(type(exc), "guest_error")
        job.reason = str(exc)
    except HarnessError as exc:
        job.result = "harness_error"
        job.reason = str(exc)
    finally:
        job.times["total"] = time.monotonic() - started
        (out / "verdict.json").write_text(json.dumps(job.to_json_dict(), indent=2,
                                                     default=str) + "\n")
    return job


def _swarm_and_snapshot(guest: Guest, spec: JobSpec, out: Path, job: JobResult) -> Topology:
    t0 = time.monotonic()
    if spec.plan.events:
        job.swarm = run_swarm(guest, spec.plan, options=spec.swarm_options,
                              stop_after_events=spec.panic_after,
                              contention=spec.contention, transcript_path=out / "transcript.json")
        settle = job.swarm.settle_times
        job.times["swarm_settle"] = max(settle) if settle else None
        if not job.swarm.stopped_early and not job.swarm.settled:
            # Checked against a topology the guest never reached, the dump would prove
            # nothing: say what did not settle instead of verifying.
            job.swarm.check()
    job.times["swarm_total"] = time.monotonic() - t0
    expected, observed = snapshot(guest)
    expected.save(out / "topology-expected.json")
    observed.save(out / "topology-at-panic.json")
    return observed.with_changes(memory_devices=expected.memory_devices,
                                 cpu_slots=expected.cpu_slots)


def _times_from_capture(job: JobResult) -> None:
    assert job.capture is not None
    t = job.capture.times
    job.times.update(panic=t.panic, panic_to_capture=t.capture_userspace,
                     dump_write=t.dump_written, collect=t.collected)


def _verify(job: JobResult, observed: Topology, out: Path) -> None:
    assert job.capture is not None
    t0 = time.monotonic()
    files = job.capture.files
    dump = open_dump(Path(files["vmcore"]))
    raw = None
    if "raw_elfcorehdr" in files:
        raw = parse_elfcorehdr(Path(files["raw_elfcorehdr"]).read_bytes(),
                               name=files["raw_elfcorehdr"])
    dmesg = (Path(files["vmcore_dmesg"]).read_text(errors="replace")
             if "vmcore_dmesg" in files else None)
    report = verify(dump, observed, panic_window=job.capture.panic_window, raw_header=raw,
                    dmesg=dmesg)
    job.times["verify"] = time.monotonic() - t0
    job.report = report
    job.result = report.verdict.value
    job.reason = f"the vmcore is {report.verdict.value}"
    (out / "report.txt").write_text(report.to_text() + "\n")


def format_times(times: dict[str, float | None], order: Sequence[str] = (
        "boot_to_userspace", "kdump_load", "boot_to_kdump_ready", "swarm_settle", "panic",
        "panic_to_capture", "dump_write", "collect", "verify", "total")) -> str:
    lines = []
    for key in order:
        value = times.get(key)
        lines.append(f"  {key.replace('_', ' '):24} {'-' if value is None else f'{value:7.2f} s'}")
    return "\n".join(lines)
