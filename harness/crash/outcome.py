"""How a panic ended: one ``Outcome``, its reason, its times and its files.

``captured``            the capture kernel saved a dump; files are on the host.
``kdump_did_not_occur`` the first kernel panicked but no capture kernel started: nothing
                        was loaded, or ``__crash_kexec()`` found the kexec lock held (a
                        hot-plug handler, a sysfs reader or a reload had it) and the panic
                        carried on to ``---[ end Kernel panic``.
``capture_failed``      the capture kernel started but produced no dump (out of memory with
                        a too small crashkernel, a panic in the capture kernel, a write error).
``no_panic``            the trigger did not take: the guest kept running.
``harness_error``       QEMU, QMP, SSH or the host failed; says nothing about the kernel.
"""

from __future__ import annotations

import enum
from dataclasses import asdict, dataclass, field
from typing import Any

from .lock_evidence import LockEvidence


class Outcome(enum.Enum):
    CAPTURED = "captured"
    KDUMP_DID_NOT_OCCUR = "kdump_did_not_occur"
    CAPTURE_FAILED = "capture_failed"
    NO_PANIC = "no_panic"
    HARNESS_ERROR = "harness_error"


@dataclass
class CaptureTimes:
    """Seconds, measured on the host from the trigger."""

    panic: float | None = None                 # trigger to "Kernel panic" on the console
    capture_userspace: float | None = None     # panic to capture-kernel userspace
    dump_written: float | None = None          # capture userspace to dump written
    collected: float | None = None             # dump written to files on the host
    total: float | None = None


@dataclass
class CaptureResult:
    outcome: Outcome
    reason: str
    trigger: str
    mode: str
    panic_message: str | None = None
    times: CaptureTimes = field(default_factory=CaptureTimes)
    panic_window: tuple[float, float] | None = None     # host wall clock around the panic
    files: dict[str, str] = field(default_factory=dict)
    console_tail: str = ""
    capture_status: dict[str, str] = field(default_factory=dict)
    elfcorehdr_addr: int | None = None
    #: Why the first kernel's raw elfcorehdr could not be read (a harness problem: the run
    #: is then a harness error, never a verdict; the evidence stays in the run directory).
    raw_header_problem: str | None = None
    #: Set when the trigger's SSH channel broke as it was sent (see ``fire``).
    trigger_note: str | None = None
    during_reload: bool = False
    #: The kernel log's account of the kexec lock at the panic (``lock_evidence``): from
    #: the dump's dmesg, or from the console replay of a panic that did not kexec.
    lock_at_panic: LockEvidence | None = None

    @property
    def captured(self) -> bool:
        return self.outcome is Outcome.CAPTURED

    def to_json_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["outcome"] = self.outcome.value
        return d
