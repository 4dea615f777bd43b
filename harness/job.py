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
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .crash import CaptureResult, check_trigger, panic_and_capture
from .errors import DumpUnreadable, EvidenceError, HarnessError, UsageError, VmcoreFormatError
from .guest import Guest, GuestConfig, GuestState
from .guest.tcg_threads import TcgThreadsChoice
from .hotplug import (
    ContentionSpec,
    SwarmOptions,
    SwarmPlan,
    SwarmResult,
    check_memory_budget,
    fit_for_plan,
    run_swarm,
)
from .model import Trigger, choose
from .results import EXPECTATIONS, ExitStatus, Result, classify, exit_status, parse_result
from .topology import Topology, snapshot
from .vmcore import Dump, VerifyReport, open_dump, parse_elfcorehdr, verify

__all__ = ["EXPECTATIONS", "JobResult", "JobSpec", "format_times", "run_job", "verify_capture"]


@dataclass(frozen=True)
class JobSpec:
    """What one run of the main job does after the guest is up."""

    plan: SwarmPlan
    swarm_options: SwarmOptions = field(default_factory=SwarmOptions)
    contention: tuple[ContentionSpec, ...] = ()
    trigger: Trigger = Trigger.SYSRQ
    trigger_cpus: tuple[int, ...] = ()
    panic_after: int | None = None      # panic after this many swarm events (mid-swarm)
    during_reload: bool = False         # panic while a kdump reload is in flight
    expect: Result = Result.ACCURATE

    def __post_init__(self) -> None:
        object.__setattr__(self, "trigger", choose(Trigger, self.trigger, "--trigger"))
        if not isinstance(self.expect, Result):
            object.__setattr__(self, "expect", parse_result(str(self.expect)))
        if self.expect is Result.HARNESS_ERROR:
            raise UsageError("--expect harness_error: a harness error is never expected")

    def validate(self, config: GuestConfig | None = None) -> None:
        """Refuse what cannot work, before anything starts (``UsageError``)."""
        if self.panic_after is not None and self.panic_after < 0:
            raise UsageError("--panic-after must be >= 0")
        check_trigger(self.trigger, self.trigger_cpus,
                      max_cpus=config.max_cpus if config is not None else None)
        if config is not None:
            check_memory_budget(self.plan, config)


@dataclass
class JobResult:
    """Everything the job learned; ``result`` is the verdict or the capture outcome."""

    result: Result
    expected: Result
    reason: str
    capture: CaptureResult | None = None
    swarm: SwarmResult | None = None
    report: VerifyReport | None = None
    times: dict[str, float | None] = field(default_factory=dict)
    run_dir: Path | None = None
    accel: str = ""
    #: Under TCG: "multi" or "single" (``guest.tcg_threads``), and why; None under KVM.
    tcg_threads: TcgThreadsChoice | None = None
    kernel_release: str = ""
    #: package -> (locked, used) when the image could not follow the lock file.
    lock_drift: dict[str, tuple[str | None, str | None]] = field(default_factory=dict)
    #: Boot attempts that a known emulator fault ended before the one that ran.
    boot_faults: list[str] = field(default_factory=list)
    #: The snapshot the guest was restored from (``GuestConfig.snapshot``), else None.
    snapshot: str | None = None

    @property
    def passed(self) -> bool:
        return self.result == self.expected

    @property
    def exit_status(self) -> ExitStatus:
        """0 as expected, 1 another kernel or guest result, 3 a harness error."""
        return exit_status(self.result, self.expected)

    def to_json_dict(self) -> dict[str, Any]:
        return {
            "result": self.result.value, "expected": self.expected.value,
            "family": self.result.family.value, "passed": self.passed,
            "reason": self.reason, "accel": self.accel,
            "tcg_threads": asdict(self.tcg_threads) if self.tcg_threads else None,
            "kernel_release": self.kernel_release,
            "lock_drift": {n: list(v) for n, v in self.lock_drift.items()},
            "boot_faults": self.boot_faults, "snapshot": self.snapshot,
            "times": self.times, "run_dir": str(self.run_dir),
            "capture": self.capture.to_json_dict() if self.capture else None,
            "swarm": self.swarm.to_json_dict() if self.swarm else None,
            "verify": self.report.to_json_dict() if self.report else None,
        }


def run_job(image: Any, config: GuestConfig, spec: JobSpec, out: Path) -> JobResult:
    """Run the whole cycle in ``out`` and write ``verdict.json`` (always).

    Bad usage raises ``UsageError`` before anything starts; every other way the run can
    end is a ``Result`` (``harness.results.CLASSIFICATION`` maps exceptions to results).
    """
    spec.validate(config)
    started = time.monotonic()
    job = JobResult(result=Result.HARNESS_ERROR, expected=spec.expect, reason="not started",
                    run_dir=out, kernel_release=getattr(image, "kernel_release", ""),
                    lock_drift=dict(getattr(image, "lock_drift", {})))
    guest = Guest(image, fit_for_plan(config, spec.plan), out)
    try:
        with guest:
            _boot_facts(job, guest)
            expected, observed = _swarm_and_snapshot(guest, spec, out, job)
            job.capture = panic_and_capture(guest, trigger=spec.trigger,
                                            cpus=spec.trigger_cpus, out=out,
                                            during_reload=spec.during_reload)
        _times_from_capture(job)
        if job.capture.captured:
            _verify(job, expected, observed, out, spec)
        else:
            job.result = Result(job.capture.outcome.value)
            job.reason = job.capture.reason
    except UsageError:
        raise
    except HarnessError as exc:
        job.result = classify(exc)
        job.reason = str(exc)
    finally:
        if job.capture is None:
            _boot_facts(job, guest)     # a boot that failed still says how far it got
        job.times["total"] = time.monotonic() - started
        (out / "verdict.json").write_text(json.dumps(job.to_json_dict(), indent=2,
                                                     default=str) + "\n")
    return job


def _boot_facts(job: JobResult, guest: Guest) -> None:
    job.accel = guest.accel.name if guest.state is not GuestState.NEW else ""
    threads = guest.host_fit.tcg_threads
    if job.accel == "tcg" and threads.mode is not None:
        job.tcg_threads = threads
    job.boot_faults = list(guest.boot_faults)
    job.times.update(boot_to_userspace=guest.times.userspace,
                     kdump_load=guest.times.guest_kdump_load, restore=guest.times.restore,
                     boot_to_kdump_ready=guest.times.kdump_ready)
    if guest.restored_from is not None:
        job.snapshot = str(guest.restored_from)


def _swarm_and_snapshot(guest: Guest, spec: JobSpec, out: Path,
                        job: JobResult) -> tuple[Topology, Topology]:
    """Run the swarm (if any) and return QMP's and the guest's topology just before the
    panic (saved as topology-expected.json and topology-observed.json): the swarm's own
    final pair when it settled, else a fresh one (no swarm, or one stopped early)."""
    t0 = time.monotonic()
    if spec.plan.events:
        job.swarm = run_swarm(guest, spec.plan, options=spec.swarm_options,
                              stop_after_events=spec.panic_after,
                              contention=spec.contention, transcript_path=out / "transcript.json")
        marker = job.swarm.klog_marker
        if marker is not None and marker.text:
            (out / "klog.txt").write_text(marker.text + "\n")   # the kernel's own account
        settle = job.swarm.settle_times
        job.times["swarm_settle"] = max(settle) if settle else None
        if not job.swarm.stopped_early and not job.swarm.settled:
            # Checked against a topology the guest never reached, the dump would prove
            # nothing: say what did not settle instead of verifying.
            job.swarm.check()
    job.times["swarm_total"] = time.monotonic() - t0
    swarm = job.swarm
    if (swarm is not None and swarm.settled and swarm.expected is not None
            and swarm.observed is not None):
        # The swarm's final snapshots came after its last event and after any contention
        # stopped; only its kernel-log read followed.  Another pair would cost a guest
        # command (~0.1 s of a restored guest under TCG) to see the same machine.
        expected, observed = swarm.expected, swarm.observed
    else:
        expected, observed = snapshot(guest)
    expected.save(out / "topology-expected.json")
    observed.save(out / "topology-observed.json")
    return expected, observed


def _times_from_capture(job: JobResult) -> None:
    assert job.capture is not None
    t = job.capture.times
    job.times.update(panic=t.panic, panic_to_capture=t.capture_userspace,
                     dump_write=t.dump_written, collect=t.collected)


def _verify(job: JobResult, expected: Topology, observed: Topology, out: Path,
            spec: JobSpec) -> None:
    assert job.capture is not None
    t0 = time.monotonic()
    # With one CPU named for a sysrq panic, its note must show that panic (not idle).
    panic_cpu = (spec.trigger_cpus[0] if spec.trigger == "sysrq" and spec.trigger_cpus
                 else None)
    report = verify_capture(job.capture, expected, observed, panic_cpu=panic_cpu, out=out)
    job.times["verify"] = time.monotonic() - t0
    job.report = report
    job.result = Result(report.verdict.value)
    job.reason = f"the vmcore is {report.verdict.value}"


def verify_capture(capture: CaptureResult, expected: Topology, observed: Topology, *,
                   panic_cpu: int | None = None, out: Path | None = None) -> VerifyReport:
    """The verifier's report on a captured dump: against the guest's topology just before
    the panic, with QMP's view naming the DIMMs, the raw elfcorehdr read from guest memory
    and the dump's own log; ``report.txt`` in ``out`` (every finding).

    Raises ``DumpUnreadable`` (the capture kernel wrote a dump the readers reject:
    ``invalid``) and ``EvidenceError`` (the raw header the harness read is unusable).
    """
    files = capture.files
    raw = _raw_header(capture)
    try:
        dump = open_dump(Path(files["vmcore"]))
    except VmcoreFormatError as exc:
        # The capture kernel wrote something the readers reject: a finding about the dump.
        raise DumpUnreadable(f"the vmcore cannot be read: {exc}") from exc
    dmesg = (Path(files["vmcore_dmesg"]).read_text(errors="replace")
             if "vmcore_dmesg" in files else None)
    # QMP's view names the DIMMs and is cross-checked with the guest's System RAM.
    report = verify(dump, observed, expected=expected, panic_window=capture.panic_window,
                    raw_header=raw, dmesg=dmesg, panic_cpu=panic_cpu)
    if out is not None:
        (out / "report.txt").write_text(report.to_text(verbose=True) + "\n")
    return report


def _raw_header(capture: CaptureResult) -> Dump | None:
    """The first kernel's elfcorehdr read from guest memory, or why it is unusable.

    The harness read it: a header that is missing or does not parse is the harness's
    problem (``EvidenceError``, a harness error), never a verdict about the dump.
    """
    if capture.raw_header_problem:
        raise EvidenceError(capture.raw_header_problem)
    path = capture.files.get("raw_elfcorehdr")
    if path is None:
        return None
    where = f" at {capture.elfcorehdr_addr:#x}" if capture.elfcorehdr_addr is not None else ""
    try:
        return parse_elfcorehdr(Path(path).read_bytes(), name=path)
    except (VmcoreFormatError, OSError) as exc:
        raise EvidenceError(f"the raw elfcorehdr read from guest memory{where} does not "
                            f"parse: {exc}", details=f"evidence: {path}") from exc


def format_times(times: dict[str, float | None], order: Sequence[str] = (
        "boot_to_userspace", "kdump_load", "restore", "boot_to_kdump_ready", "swarm_settle",
        "panic", "panic_to_capture", "dump_write", "collect", "verify", "total")) -> str:
    lines = []
    for key in order:
        value = times.get(key)
        if key == "restore" and value is None:
            continue        # a cold boot
        lines.append(f"  {key.replace('_', ' '):24} {'-' if value is None else f'{value:7.2f} s'}")
    return "\n".join(lines)
