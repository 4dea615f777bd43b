"""What a run can end in: one ``Result``, its family and its exit status.

Every run of the main job ends in exactly one result.  Each result belongs to one family,
and the family decides what the result may be taken to say:

``KERNEL``   a finding about the kernel under test: the verifier's verdict on the dump the
             kernel wrote, or what happened to kdump after the panic.
``GUEST``    the guest failed before the panic (it did not boot, did not load the capture
             kernel, refused or lost hot-plugged memory, panicked on its own).  Also about
             the kernel or its configuration, never about the harness.
``HARNESS``  QEMU, QMP, SSH, the host or the harness itself failed: says nothing about the
             kernel.  Only this family may be retried.

A bad option or input file is not a result at all: it is refused before anything starts
(``UsageError``, exit status 2).

The classification table (``CLASSIFICATION``) maps every exception a run can end with to
its result; ``exit_status`` maps a result and the expected one to the process exit status.
Both are tested as tables in tests/test_results.py.
"""

from __future__ import annotations

from enum import IntEnum, StrEnum

from .errors import (
    BootFailure,
    DumpUnreadable,
    GuestCommandError,
    GuestError,
    GuestOutOfMemory,
    HarnessError,
    HotplugNotHonoured,
    InfrastructureError,
    KdumpLoadError,
    KernelUnsuitable,
    UnexpectedPanic,
    UsageError,
)


class Family(StrEnum):
    KERNEL = "kernel"
    GUEST = "guest"
    HARNESS = "harness"


class ExitStatus(IntEnum):
    OK = 0            # the result was the expected one
    FINDING = 1       # a kernel or guest result other than the expected one
    USAGE = 2         # bad option or input: nothing was started
    HARNESS = 3       # the harness, QEMU or the host failed: says nothing about the kernel


class Result(StrEnum):
    """Every way a run can end (``README.md`` has the table for users)."""

    # The verifier's verdict on a captured dump (vmcore.verifier.Verdict).
    ACCURATE = "accurate"
    STALE = "stale"
    INCOMPLETE = "incomplete"
    MISMATCH = "mismatch"
    INVALID = "invalid"
    # What happened after the panic when no dump was captured (crash.Outcome).
    KDUMP_DID_NOT_OCCUR = "kdump_did_not_occur"
    CAPTURE_FAILED = "capture_failed"
    NO_PANIC = "no_panic"
    # The guest failed before the panic.
    BOOT_FAILURE = "boot_failure"
    KDUMP_LOAD_FAILED = "kdump_load_failed"
    HOTPLUG_NOT_HONOURED = "hotplug_not_honoured"
    GUEST_OUT_OF_MEMORY = "guest_out_of_memory"
    KERNEL_UNSUITABLE = "kernel_unsuitable"
    UNEXPECTED_PANIC = "unexpected_panic"
    GUEST_ERROR = "guest_error"
    # Nothing about the kernel.
    HARNESS_ERROR = "harness_error"

    @property
    def family(self) -> Family:
        return _FAMILY[self]

    @property
    def is_verdict(self) -> bool:
        """A verdict on a dump the kernel wrote (as opposed to an outcome or a failure)."""
        return self in VERDICTS


VERDICTS = frozenset({Result.ACCURATE, Result.STALE, Result.INCOMPLETE, Result.MISMATCH,
                      Result.INVALID})
_FAMILY: dict[Result, Family] = {
    **{r: Family.KERNEL for r in VERDICTS},
    Result.KDUMP_DID_NOT_OCCUR: Family.KERNEL,
    Result.CAPTURE_FAILED: Family.KERNEL,
    Result.NO_PANIC: Family.KERNEL,
    Result.BOOT_FAILURE: Family.GUEST,
    Result.KDUMP_LOAD_FAILED: Family.GUEST,
    Result.HOTPLUG_NOT_HONOURED: Family.GUEST,
    Result.GUEST_OUT_OF_MEMORY: Family.GUEST,
    Result.KERNEL_UNSUITABLE: Family.GUEST,
    Result.UNEXPECTED_PANIC: Family.GUEST,
    Result.GUEST_ERROR: Family.GUEST,
    Result.HARNESS_ERROR: Family.HARNESS,
}

#: Exception -> result, most specific first (the first ``isinstance`` match wins).
#: ``UsageError`` is absent on purpose: bad usage is refused, it is not a result.
CLASSIFICATION: tuple[tuple[type[BaseException], Result], ...] = (
    (DumpUnreadable, Result.INVALID),
    (BootFailure, Result.BOOT_FAILURE),
    (KdumpLoadError, Result.KDUMP_LOAD_FAILED),
    (GuestOutOfMemory, Result.GUEST_OUT_OF_MEMORY),
    (HotplugNotHonoured, Result.HOTPLUG_NOT_HONOURED),
    (KernelUnsuitable, Result.KERNEL_UNSUITABLE),
    (UnexpectedPanic, Result.UNEXPECTED_PANIC),
    (GuestCommandError, Result.GUEST_ERROR),
    (GuestError, Result.GUEST_ERROR),
    (InfrastructureError, Result.HARNESS_ERROR),
    (HarnessError, Result.HARNESS_ERROR),
)


#: Every result ``--expect`` may name (a harness error is never the expected result).
EXPECTATIONS = tuple(r.value for r in Result if r is not Result.HARNESS_ERROR)


def classify(exc: BaseException) -> Result:
    """The result a run that ended with ``exc`` has.

    ``UsageError`` is re-raised (the caller refuses the run); anything the harness did not
    raise on purpose is a harness error too: a bug of ours says nothing about the kernel.
    """
    if isinstance(exc, UsageError):
        raise exc
    for kind, result in CLASSIFICATION:
        if isinstance(exc, kind):
            return result
    return Result.HARNESS_ERROR


def exit_status(result: Result, expected: Result) -> ExitStatus:
    """0 when the run ended as expected; 3 when the harness failed; 1 otherwise."""
    if result == expected:
        return ExitStatus.OK
    if result.family is Family.HARNESS:
        return ExitStatus.HARNESS
    return ExitStatus.FINDING


def parse_result(text: str, *, option: str = "--expect") -> Result:
    """A result named on the command line, refused with the choices when unknown."""
    try:
        return Result(text)
    except ValueError:
        choices = ", ".join(r.value for r in Result if r is not Result.HARNESS_ERROR)
        raise UsageError(f"{option} {text!r}: expected one of {choices}") from None
