"""One campaign iteration, run inside a worker process: a crash cycle or an audited swarm.

A crash iteration is ``kdump-harness run`` with the recipe's options and the iteration's
seed.  An audit iteration runs the recipe's swarm on a guest that lives across iterations
(``AuditGuest``), reads the live elfcorehdr and verifies it against the live topology,
then unplugs what the swarm left plugged so the next swarm starts from the boot topology.
Whatever happens, the iteration ends in one ``ResultLine``; only a bad recipe raises.
"""

from __future__ import annotations

import argparse
import functools
import json
import shutil
import socket
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import HarnessError, UsageError
from ..results import Result, classify
from ..vmcore import VerifyReport
from ..vmcore.findings import Area, Severity
from .line import ResultLine, Staleness
from .recipe import Recipe

MiB = 1 << 20


@dataclass(frozen=True)
class Task:
    recipe: Recipe
    iteration: int
    seed: int | None


@dataclass(frozen=True)
class Where:
    """Where a campaign keeps things: its id, results directory and evidence policy."""

    campaign: str
    results: Path
    keep_evidence: bool = False

    def evidence_dir(self, task: Task) -> Path:
        seed = f"-seed{task.seed}" if task.seed is not None else ""
        return self.results / "evidence" / task.recipe.name / f"{task.iteration:05d}{seed}"


def staleness(report: VerifyReport | None) -> Staleness:
    """How far the header is off: RAM (MiB), DIMMs and CPUs named by error findings (the
    dump's own findings; the raw header's when the dump has none)."""
    if report is None:
        return Staleness()
    errors = [f for f in report.findings if f.severity is Severity.ERROR]
    own = [f for f in errors if not f.in_header] or errors
    # RAM the header lacks (memory area) and ranges it describes that are not RAM any
    # more (dump area: dump-range-not-ram, the last removed DIMM on 6.12/7.2).
    ranges = {f.range for f in own
              if f.area in (Area.MEMORY, Area.DUMP) and f.range is not None}
    dimms = {f.device for f in own if f.area is Area.DIMM and f.device}
    cpus = {f.cpu for f in own if f.area is Area.CPU and f.cpu is not None}
    return Staleness(mib=round(sum(r.size for r in ranges) / MiB, 1), dimms=len(dimms),
                     cpus=len(cpus))


def dimensions(ns: argparse.Namespace, recipe: Recipe) -> dict[str, str]:
    """The cell's configuration for the report: the recipe's own, then what the options say."""
    found = {"profile": "own-kernel" if ns.kernel else ns.profile, "trigger": ns.trigger,
             "kexec": ns.kexec, "mode": ns.mode, "update": ns.update or "auto",
             "contention": ",".join(ns.contention) or "none",
             "snapshot": "on" if ns.snapshot else "off"}
    return {**found, **recipe.dimensions}


class LineMaker:
    """Builds the iteration's line; the evidence directory is dropped when it passed
    unless the campaign keeps all evidence."""

    def __init__(self, task: Task, where: Where, ns: argparse.Namespace | None) -> None:
        self.task, self.where, self.ns = task, where, ns
        self.started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        self.t0 = time.monotonic()

    def make(self, result: Result, expected: Result, reason: str, **fields: Any) -> ResultLine:
        task, ns = self.task, self.ns
        out = self.where.evidence_dir(task)
        keep = result is not expected or self.where.keep_evidence
        if not keep:
            shutil.rmtree(out, ignore_errors=True)
        times = dict(fields.pop("times", {}))
        times.setdefault("total", time.monotonic() - self.t0)
        fields.setdefault("kernel_release", "")    # unknown when no guest got that far
        return ResultLine(
            campaign=self.where.campaign, cell=task.recipe.name, iteration=task.iteration,
            kind=task.recipe.kind, result=result, expected=expected,
            profile="own-kernel" if ns is not None and ns.kernel else
            (ns.profile if ns is not None else ""),
            seed=task.seed, reason=(reason.splitlines() or [""])[0], started=self.started,
            host=socket.gethostname(), qemu=_qemu_version(), times=times,
            config=dimensions(ns, task.recipe) if ns is not None else task.recipe.dimensions,
            evidence=(str(out.relative_to(self.where.results))
                      if keep and out.exists() else None),
            replay=task.recipe.replay(task.seed), **fields)


@functools.cache
def _qemu_version() -> str:
    """Once per worker process: ``qemu --version`` is a process start per line otherwise."""
    from ..guest.accel import qemu_version

    try:
        return ".".join(map(str, qemu_version()))
    except HarnessError:
        return ""        # no usable QEMU: the line's result already says so


def run_crash(task: Task, where: Where) -> ResultLine:
    """The main job once, with the recipe's options and the task's seed."""
    from ..cli.common import build_image_from_args
    from ..job import run_job

    ns = task.recipe.namespace(task.seed)
    maker = LineMaker(task, where, ns)
    out = where.evidence_dir(task)
    out.mkdir(parents=True, exist_ok=True)
    with task.recipe.configured(ns) as (config, spec):
        try:
            image = build_image_from_args(ns)
        except (HarnessError, OSError) as exc:
            return maker.make(Result.HARNESS_ERROR, spec.expect, f"image build: {exc}")
        job = run_job(image, config, spec, out)
    klog = job.swarm.klog if job.swarm else None
    return maker.make(job.result, job.expected, job.reason, kernel_release=job.kernel_release,
                      accel=job.accel, snapshot=job.snapshot is not None,
                      trylock_failures=klog.trylock_failures if klog else None,
                      staleness=staleness(job.report), times=job.times)


def crash_line_for_exception(task: Task, where: Where, exc: BaseException) -> ResultLine:
    """A harness error line for an iteration that ended in an exception of ours."""
    if isinstance(exc, UsageError):
        raise exc
    maker = LineMaker(task, where, None)
    out = where.evidence_dir(task)
    out.mkdir(parents=True, exist_ok=True)
    (out / "traceback.txt").write_text("".join(traceback.format_exception(exc)))
    expected = _expected_of(task)
    return maker.make(classify(exc) if isinstance(exc, HarnessError) else Result.HARNESS_ERROR,
                      expected, f"{type(exc).__name__}: {exc}")


def _expected_of(task: Task) -> Result:
    try:
        return Result(task.recipe.namespace(task.seed).expect)
    except (UsageError, ValueError):
        return Result.ACCURATE


def write_audit_evidence(out: Path, report: VerifyReport, extra: dict[str, Any]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "audit.json").write_text(json.dumps({**extra, "report": report.to_json_dict()},
                                               indent=2, default=str) + "\n")
    (out / "report.txt").write_text(report.to_text(verbose=True) + "\n")
