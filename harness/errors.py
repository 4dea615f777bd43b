"""The exception tree.

Two families, kept apart because only the first may ever be retried::

    HarnessError                      anything this package raises on purpose
    ├── UsageError                    a bad option value or input file; nothing was started
    ├── InfrastructureError           the harness's own machinery failed (retryable)
    │   ├── HostError                 the host lacks something (QEMU, apt, disk, KVM)
    │   ├── ImageBuildError           a guest image could not be built
    │   ├── QemuLaunchError           QEMU did not start or exited early (argv, rc, log tail)
    │   ├── LostVMError               QEMU vanished or stopped answering mid-test
    │   ├── QmpError                  a QMP command failed or timed out
    │   ├── SshError                  the SSH channel to the guest failed
    │   ├── DeadlineExceeded          a wait ran out of time (a slow host: see
    │   │                             KDUMP_HARNESS_TIMEOUT_SCALE); names what did not happen
    │   ├── EmulatorFault             a known QEMU fault (not the kernel's) ended every boot
    │   ├── SnapshotError             a guest snapshot was not made, does not match, or its
    │   │                             guest did not come back as it was saved
    │   └── EvidenceError             evidence the harness collected is unusable (e.g. the
    │                                 raw elfcorehdr read from guest memory does not parse)
    └── GuestError                    the guest misbehaved: this is a finding, never retried
        ├── BootFailure               the guest never reached userspace (console tail attached)
        ├── UnexpectedPanic           the guest panicked when it should not have
        ├── KdumpLoadError            loading the capture kernel failed (kexec's own message)
        ├── KernelUnsuitable          the kernel cannot do kdump / hot-plug (config says why)
        ├── HotplugNotHonoured        QEMU accepted a plug the guest did not take or settle
        ├── GuestOutOfMemory          the guest ran out of memory (the OOM killer, add_memory
        │                             failing for want of memory for its memmap)
        ├── DumpUnreadable            the dump the capture kernel wrote cannot be read: the
        │                             verdict is ``invalid``
        └── GuestCommandError         a command run in the guest exited non-zero when it must not

``VmcoreFormatError`` (a ``UsageError``: a dump file given as input is malformed, offset and
field named) becomes ``DumpUnreadable`` when the capture kernel wrote the file, and
``EvidenceError`` when the harness read it from guest memory.

``harness.results.CLASSIFICATION`` maps each to the result a run ends in.

Every error carries a one-line message that names what did not happen; ``details``
holds the evidence (log tails, command lines) for reports.
"""

from __future__ import annotations


class HarnessError(Exception):
    """Base class: a message for people plus optional multi-line evidence."""

    def __init__(self, message: str, *, details: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details

    def __str__(self) -> str:
        if self.details:
            return f"{self.message}\n{self.details}"
        return self.message


class UsageError(HarnessError):
    """A wrong option value or unusable input; reported without a traceback."""


class VmcoreFormatError(UsageError):
    """A vmcore or elfcorehdr is malformed; ``offset`` and ``field`` say where."""

    def __init__(self, message: str, *, offset: int | None = None,
                 field: str | None = None) -> None:
        where = []
        if field is not None:
            where.append(f"field {field}")
        if offset is not None:
            where.append(f"offset {offset:#x}")
        text = f"{message} ({', '.join(where)})" if where else message
        super().__init__(text)
        self.offset = offset
        self.field = field


class InfrastructureError(HarnessError):
    """The harness, QEMU or the host failed; the run says nothing about the kernel."""


class HostError(InfrastructureError):
    """The host lacks a prerequisite; the message says how to fix it."""


class ImageBuildError(InfrastructureError):
    """Building a guest image failed."""


class QemuLaunchError(InfrastructureError):
    """QEMU did not start, or exited before the guest was usable."""


class LostVMError(InfrastructureError):
    """QEMU exited or stopped answering while a test still needed it."""


class QmpError(InfrastructureError):
    """A QMP command returned an error or did not answer in time."""


class SshError(InfrastructureError):
    """The SSH connection to the guest failed or a command timed out.

    ``maybe_sent``: the channel broke after the command was asked for, so it may be
    running (or have run) in the guest.
    """

    def __init__(self, message: str, *, details: str | None = None,
                 maybe_sent: bool = False) -> None:
        super().__init__(message, details=details)
        self.maybe_sent = maybe_sent


class DeadlineExceeded(InfrastructureError):
    """A wait ran out of time; the message names what did not happen."""


class EmulatorFault(InfrastructureError):
    """A known emulator fault (``signatures.EMULATOR_FAULTS``) ended the boot every time."""


class SnapshotError(InfrastructureError):
    """A guest snapshot could not be made, does not match its guest, or did not restore."""


class EvidenceError(InfrastructureError):
    """Something the harness read to judge the run is unusable; names the evidence file."""


class GuestError(HarnessError):
    """The guest kernel or userspace did something wrong: a finding, not a flake."""


class BootFailure(GuestError):
    """The guest did not reach userspace in time."""


class UnexpectedPanic(GuestError):
    """The guest panicked outside a deliberate trigger."""


class GuestReset(GuestError):
    """The guest reset or powered itself off while it was still needed (QEMU runs with
    ``-no-reboot``, so it exits): with no panic on the console, a triple fault or a
    reboot the harness did not ask for."""


class KdumpLoadError(GuestError):
    """Loading the capture kernel failed."""


class KernelUnsuitable(GuestError):
    """The kernel's configuration rules out kdump or hot-plug."""


class HotplugNotHonoured(GuestError):
    """A hot-plug the host asked for did not take effect in the guest."""


class GuestOutOfMemory(GuestError):
    """The guest ran out of memory: the console line that showed it is the message."""


class DumpUnreadable(GuestError):
    """The capture kernel wrote a dump the readers reject (offset and field named)."""


class GuestCommandError(GuestError):
    """A guest command exited non-zero where success was required."""

    def __init__(self, command: str, status: int, output: str) -> None:
        tail = "\n".join(output.splitlines()[-20:])
        super().__init__(f"guest command failed with status {status}: {command}", details=tail)
        self.command = command
        self.status = status
        self.output = output
