"""The classification table: exception -> result -> exit status, as one table."""

from __future__ import annotations

import pytest

from harness import errors
from harness.hotplug import SwarmPlan
from harness.job import EXPECTATIONS, JobSpec
from harness.results import ExitStatus, Family, Result, classify, exit_status, parse_result

#: Every exception a run can end with, the result it gives and its family.
TABLE: list[tuple[BaseException, Result, Family]] = [
    (errors.DumpUnreadable("no ELF magic"), Result.INVALID, Family.KERNEL),
    (errors.BootFailure("no userspace"), Result.BOOT_FAILURE, Family.GUEST),
    (errors.KdumpLoadError("kexec failed"), Result.KDUMP_LOAD_FAILED, Family.GUEST),
    (errors.GuestOutOfMemory("Out of memory: Killed process 1 (dropbear)"),
     Result.GUEST_OUT_OF_MEMORY, Family.GUEST),
    (errors.HotplugNotHonoured("add_memory failed"), Result.HOTPLUG_NOT_HONOURED, Family.GUEST),
    (errors.KernelUnsuitable("no CRASH_HOTPLUG"), Result.KERNEL_UNSUITABLE, Family.GUEST),
    (errors.UnexpectedPanic("BUG"), Result.UNEXPECTED_PANIC, Family.GUEST),
    (errors.GuestCommandError("false", 1, ""), Result.GUEST_ERROR, Family.GUEST),
    (errors.LostVMError("QEMU died (killed by signal 9)"), Result.HARNESS_ERROR, Family.HARNESS),
    (errors.QmpError("timeout"), Result.HARNESS_ERROR, Family.HARNESS),
    (errors.SshError("EOFError()"), Result.HARNESS_ERROR, Family.HARNESS),
    (errors.EvidenceError("raw elfcorehdr does not parse"), Result.HARNESS_ERROR,
     Family.HARNESS),
    (errors.ImageBuildError("apt failed"), Result.HARNESS_ERROR, Family.HARNESS),
    (RuntimeError("a bug of ours"), Result.HARNESS_ERROR, Family.HARNESS),
]


@pytest.mark.parametrize(("exc", "result", "family"), TABLE,
                         ids=[type(e).__name__ for e, _, _ in TABLE])
def test_each_exception_has_one_result_and_family(exc: BaseException, result: Result,
                                                   family: Family) -> None:
    assert classify(exc) is result
    assert result.family is family


def test_bad_usage_is_refused_not_classified() -> None:
    with pytest.raises(errors.UsageError):
        classify(errors.UsageError("--memory 100G is more than --maxmem 20G"))
    # A malformed dump given as input is bad input; the job turns one the capture kernel
    # wrote into DumpUnreadable (invalid) and one it read itself into EvidenceError.
    with pytest.raises(errors.VmcoreFormatError):
        classify(errors.VmcoreFormatError("no ELF magic", offset=0, field="e_ident"))
    assert classify(errors.DeadlineExceeded("slow host")) is Result.HARNESS_ERROR
    assert classify(errors.EmulatorFault("stale int3")) is Result.HARNESS_ERROR


def test_every_result_has_a_family() -> None:
    assert {r.family for r in Result} == set(Family)


@pytest.mark.parametrize(("result", "expected", "status"), [
    (Result.ACCURATE, Result.ACCURATE, ExitStatus.OK),
    (Result.STALE, Result.STALE, ExitStatus.OK),
    (Result.STALE, Result.ACCURATE, ExitStatus.FINDING),
    (Result.KDUMP_DID_NOT_OCCUR, Result.ACCURATE, ExitStatus.FINDING),
    (Result.GUEST_OUT_OF_MEMORY, Result.ACCURATE, ExitStatus.FINDING),
    (Result.HARNESS_ERROR, Result.ACCURATE, ExitStatus.HARNESS),
    (Result.HARNESS_ERROR, Result.STALE, ExitStatus.HARNESS),
])
def test_exit_status(result: Result, expected: Result, status: ExitStatus) -> None:
    assert exit_status(result, expected) is status


def test_expectations_and_their_refusal() -> None:
    assert "harness_error" not in EXPECTATIONS and "accurate" in EXPECTATIONS
    assert parse_result("stale") is Result.STALE
    with pytest.raises(errors.UsageError, match="--expect 'fine'"):
        parse_result("fine")
    plan = SwarmPlan(events=())
    assert JobSpec(plan=plan, expect="stale").expect is Result.STALE  # type: ignore[arg-type]
    with pytest.raises(errors.UsageError):
        JobSpec(plan=plan, expect="harness_error")  # type: ignore[arg-type]
