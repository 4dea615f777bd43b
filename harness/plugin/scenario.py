"""The scenario API: the pipeline as a test author writes it.

    def test_a_dimm_burst_is_accurate(kdump):
        guest = kdump.boot("trixie")                       # a kdump-ready guest
        guest.swarm(dimms="16x256M", add_cpus=2)           # settled, or it raises
        capture = guest.panic("sysrq")                     # the panic and the capture
        assert capture.verify().verdict == "accurate"      # the verifier's report

or the whole main job at once: ``kdump.run(dimms="8x256M", expect="accurate")`` returns
the ``JobResult`` that ``kdump-harness run`` prints.  Every object is the harness's own
(``Guest``, ``SwarmResult``, ``CaptureResult``, ``VerifyReport``, ``JobResult``).

Guests boot from the test's profile, or from your own kernel (``--kh-kernel``, with the
profile's userspace); ``@pytest.mark.kernel(">=6.6")`` skips a test, with the reason, when
the kernel is older.  Each result is recorded in the JUnit XML (``record_property``):
kernel release, accelerator, result, expected, phase times and the evidence directory.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from .. import settings as settings_mod
from ..api import (
    CaptureResult,
    Guest,
    GuestConfig,
    JobResult,
    JobSpec,
    LiveAudit,
    SwarmOptions,
    SwarmResult,
    Topology,
    VerifyReport,
    audit,
    boot_args_for,
    build_image,
    panic_and_capture,
    parse_contention,
    parse_virtio_mem,
    plan_from_options,
    run_job,
    run_swarm,
    snapshot,
    verify_capture,
    virtio_mem_qemu_args,
)
from ..errors import UsageError
from ..model import Trigger, UpdateStrategy, choose
from ..results import parse_result
from ..units import GiB
from .properties import JUDGED_BY_TEST, record_guest, record_lock, record_verdict

_VERSION = re.compile(r"^(\d+)\.(\d+)")
_COMPARE: dict[str, Callable[[tuple[int, int], tuple[int, int]], bool]] = {
    ">=": operator.ge, ">": operator.gt, "<=": operator.le, "<": operator.lt,
    "==": operator.eq}


def kernel_matches(spec: str, release: str) -> bool:
    """``kernel_matches(">=6.6", "6.12.117+deb13-cloud-amd64")``: compare major.minor."""
    m = re.fullmatch(r"\s*(>=|<=|==|>|<)?\s*(\d+)\.(\d+)\s*", spec)
    have = _VERSION.match(release)
    if m is None or have is None:
        raise UsageError(f"kernel({spec!r}): expected e.g. '>=6.6' (release {release!r})")
    op = _COMPARE[m.group(1) or "=="]
    return op((int(have.group(1)), int(have.group(2))), (int(m.group(2)), int(m.group(3))))


@dataclass
class Capture:
    """A panic's outcome and the topology the guest had just before it."""

    result: CaptureResult
    expected: Topology
    observed: Topology
    out: Path
    panic_cpu: int | None = None
    record: Callable[[str, object], None] = lambda name, value: None

    @property
    def captured(self) -> bool:
        return self.result.captured

    def verify(self, expect: str | None = None) -> VerifyReport:
        """The verifier's report (``report.txt`` in the evidence directory); with
        ``expect`` ("accurate", "stale", ...) a different verdict fails the test with the
        whole report.  The verdict (and ``expect``) go into the JUnit XML."""
        if not self.captured:
            raise AssertionError(f"nothing to verify: {self.result.outcome.value}: "
                                 f"{self.result.reason}")
        report = verify_capture(self.result, self.expected, self.observed,
                                panic_cpu=self.panic_cpu, out=self.out)
        self.record("result", report.verdict.value)
        if expect is not None:
            self.record("expected", parse_result(expect, option="expect").value)
            if report.verdict.value != expect:
                raise AssertionError(f"the vmcore is {report.verdict.value}, expected "
                                     f"{expect}\n{report.to_text()}")
        return report


@dataclass
class ScenarioGuest:
    """A booted, kdump-ready guest and the pipeline's next steps on it."""

    guest: Guest
    out: Path
    record: Callable[[str, object], None]
    swarms: list[SwarmResult] = field(default_factory=list)

    def swarm(self, *, dimms: str = "", add_cpus: int = 0, virtio_mem: str | None = None,
              unplug: int = 0, unplug_cpus: int = 0, seed: int | None = None,
              timing: str = "burst", update: str = "auto", contention: tuple[str, ...] = (),
              check: bool = True, **options: Any) -> SwarmResult:
        """A hot-plug swarm spelled as on the command line; settled (``check``) or raises."""
        plan = plan_from_options(dimms=dimms, add_cpus=add_cpus, virtio_mem=virtio_mem,
                                 unplug=unplug, unplug_cpus=unplug_cpus, seed=seed,
                                 timing=timing)
        name = f"swarm{len(self.swarms)}"
        options_ = SwarmOptions(update=choose(UpdateStrategy, update, "update"))
        result = run_swarm(self.guest, plan, options=options_,
                           contention=tuple(parse_contention(c) for c in contention),
                           transcript_path=self.out / f"{name}-transcript.json", **options)
        self.swarms.append(result)
        if result.klog is not None:
            self.record("trylock_failures", result.klog.trylock_failures)
        if check:
            result.check()
        return result

    def snapshot(self) -> tuple[Topology, Topology]:
        """QMP's and the guest's topology now."""
        return snapshot(self.guest)

    def audit(self) -> LiveAudit:
        """The live elfcorehdr, read from guest memory and verified against the guest's
        topology now: what a panic at this moment would capture, without the panic."""
        return audit(self.guest)

    def symbol_range(self, name: str) -> tuple[int, int]:
        """Where kernel function ``name`` lies: its address and the next symbol's, from the
        guest's /proc/kallsyms (read as root; the guests boot with nokaslr, so the dump's
        registers can be matched against it)."""
        if not re.fullmatch(r"\w+", name):
            raise UsageError(f"not a kernel symbol name: {name!r}")
        out = self.guest.run("awk '$3 == \"" + name + "\" && $2 ~ /^[tTwW]$/ "
                             "{ getline next_line; print $1, next_line; exit }' /proc/kallsyms",
                             check=True).stdout.split()
        if len(out) < 2:
            raise UsageError(f"{name} is not in the guest's /proc/kallsyms")
        return int(out[0], 16), int(out[1], 16)

    def panic(self, trigger: str = "sysrq", *, cpus: tuple[int, ...] = (),
              during_reload: bool = False) -> Capture:
        """Snapshot, panic, follow the capture kernel, collect the dump."""
        expected, observed = self.snapshot()
        expected.save(self.out / "topology-expected.json")
        observed.save(self.out / "topology-observed.json")
        result = panic_and_capture(self.guest, trigger=trigger, cpus=cpus, out=self.out,
                                   during_reload=during_reload)
        self.record("capture", result.outcome.value)
        record_lock(self.record, result)
        for name, value in vars(result.times).items():
            if value is not None:
                self.record(f"time.{name}", round(value, 3))
        if not result.captured:
            self.record("result", result.outcome.value)
        panic_cpu = cpus[0] if trigger == "sysrq" and cpus else None
        return Capture(result, expected, observed, self.out, panic_cpu, self.record)


class Scenario:
    """The ``kdump`` fixture: boots guests and runs the main job for one test."""

    def __init__(self, request: pytest.FixtureRequest, image: Callable[..., Any],
                 artifact_dir: Path, accel: str, mode: str, snapshot: bool = False) -> None:
        self.request = request
        self.image = image
        self.out = artifact_dir
        self.accel = accel
        self.mode = mode
        #: Guests start from a snapshot (``--kh-snapshot``; ``kh(snapshot=...)`` per test).
        self.snapshot = snapshot
        self.guests: list[Guest] = []
        self.jobs: list[JobResult] = []
        self.record_property("evidence", str(artifact_dir))
        self.record_property("accel_setting", accel)

    def record_property(self, name: str, value: object) -> None:
        """One JUnit XML property of this test (CI dashboards plot them)."""
        self.request.node.user_properties.append((name, value))

    def _image(self, profile: str, kernel: OwnKernel | Path | None) -> Any:
        image = self.image(profile, kernel=kernel)
        marker = self.request.node.get_closest_marker("kernel")
        if marker is not None and not kernel_matches(marker.args[0], image.kernel_release):
            pytest.skip(f"needs kernel {marker.args[0]}; {profile} runs "
                        f"{image.kernel_release}")
        self.record_property("kernel_release", image.kernel_release)
        return image

    def _config(self, config: dict[str, Any], contention: tuple[str, ...],
                virtio_mem: str | None) -> GuestConfig:
        """The guest a scenario needs: this test's accelerator and capture mode, the boot
        options contention needs, the virtio-mem device a swarm resizes."""
        specs = [parse_contention(c) for c in contention]
        config.setdefault("accel", self.accel)
        config.setdefault("capture_mode", self.mode)
        config.setdefault("snapshot", self.snapshot)
        config["kernel_args"] = (*config.get("kernel_args", ()),
                                 *boot_args_for(specs, config.get("kernel_args", ())))
        if virtio_mem:
            grow, _ = parse_virtio_mem(virtio_mem)
            region = max(GiB, -(-grow // GiB) * GiB)     # as the command line sizes it
            config["qemu_args"] = (*config.get("qemu_args", ()),
                                   *virtio_mem_qemu_args("vmem0", region))
        return GuestConfig(**config)

    def boot(self, profile: str = "trixie", *, kernel: OwnKernel | Path | None = None,
             contention: tuple[str, ...] = (), virtio_mem: str | None = None,
             **config: Any) -> ScenarioGuest:
        """A kdump-ready guest (``config``: GuestConfig fields) from ``profile``; name the
        ``contention`` and ``virtio_mem`` its swarms will use, so it boots ready for them."""
        guest_config = self._config(config, contention, virtio_mem)
        image = self._image(profile, kernel)
        out = self.out if not self.guests else self.out / f"guest{len(self.guests)}"
        guest = Guest(image, guest_config, out)
        self.guests.append(guest)
        try:
            guest.launch()
        except BaseException:
            guest.shutdown()    # a guest that did not boot is stopped at once
            raise
        record_guest(self.record_property, guest)
        return ScenarioGuest(guest, out, self.record_property)

    def run(self, profile: str = "trixie", *, kernel: OwnKernel | Path | None = None,
            dimms: str = "8x256M", add_cpus: int = 2, virtio_mem: str | None = None,
            unplug: int = 0, unplug_cpus: int = 0, seed: int | None = None,
            timing: str = "burst", update: str = "auto", contention: tuple[str, ...] = (),
            trigger: str = "sysrq", cpus: tuple[int, ...] = (), panic_after: int | None = None,
            during_reload: bool = False, expect: str | None = "accurate",
            **config: Any) -> JobResult:
        """The main job, as ``kdump-harness run`` does it; returns its ``JobResult``.

        ``expect=None``: the test judges the result itself (from the kernel's own
        evidence); the job is run as if ``accurate`` were expected, and the JUnit XML says
        ``expected=any``."""
        plan = plan_from_options(dimms=dimms, add_cpus=add_cpus, virtio_mem=virtio_mem,
                                 unplug=unplug, unplug_cpus=unplug_cpus, seed=seed,
                                 timing=timing)
        specs = tuple(parse_contention(c) for c in contention)
        config.setdefault("max_cpus", max(8, config.get("cpus", 2) + add_cpus))
        guest_config = self._config(config, contention, virtio_mem)
        spec = JobSpec(plan=plan,
                       swarm_options=SwarmOptions(update=choose(UpdateStrategy, update,
                                                                "update")),
                       contention=specs, trigger=choose(Trigger, trigger, "trigger"),
                       trigger_cpus=cpus, panic_after=panic_after,
                       during_reload=during_reload,
                       expect=parse_result(expect or "accurate", option="expect"))
        # A second job in one test gets its own evidence directory.
        out = self.out if not self.jobs else self.out / f"run{len(self.jobs)}"
        job = run_job(self._image(profile, kernel), guest_config, spec, out)
        self.jobs.append(job)
        self._record_job(job, judged_by_test=expect is None)
        return job

    def _record_job(self, job: JobResult, *, judged_by_test: bool = False) -> None:
        # The kernel release went in with the image (_image).
        verdict = {k: v for k, v in job.to_json_dict().items() if k != "kernel_release"}
        record_verdict(self.record_property, verdict,
                       expected=JUDGED_BY_TEST if judged_by_test else None)

    def close(self) -> None:
        for guest in self.guests:
            guest.shutdown()


@dataclass(frozen=True)
class OwnKernel:
    """Your own kernel: a bzImage, the ``INSTALL_MOD_PATH`` of its ``make
    modules_install`` and its ``.config`` (found beside a build tree's bzImage when not
    given).  Booted with the profile's userspace."""

    bzimage: Path
    modules: Path | None = None
    config: Path | None = None

    def __post_init__(self) -> None:
        for name in ("bzimage", "modules", "config"):
            path = getattr(self, name)
            if path is not None and not Path(path).exists():
                raise UsageError(f"OwnKernel({name}={str(path)!r}): no such file or directory")


def own_kernel() -> OwnKernel | None:
    """``--kh-kernel``/``--kh-modules``/``--kh-kernel-config`` (``None`` when not given)."""
    current = settings_mod.current()
    if current["kernel"] is None:
        return None
    return OwnKernel(current["kernel"], current["modules"], current["kernel_config"])


def image_for(profile: str, flavour: str = "cloud", *,
              kernel: OwnKernel | Path | None = None) -> Any:
    """The image for ``profile``: your own kernel (an argument, else ``--kh-kernel``) with
    the profile's userspace, or the profile's Debian kernel."""
    mine = OwnKernel(kernel) if isinstance(kernel, Path) else kernel or own_kernel()
    if mine is None:
        return build_image(profile, flavour=flavour)
    return build_image(profile, flavour=flavour, kernel=mine.bzimage,
                       modules_dir=mine.modules, config=mine.config)
