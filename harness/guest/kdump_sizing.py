"""Why loading the capture kernel failed, in kexec's own words, and what it would need.

kexec_file_load places three things inside the ``Crash kernel`` reservation: the kernel
(``init_size`` from its setup header: the decompressed kernel plus its early allocations,
not the bzImage's file size), the capture initrd, and a little more (purgatory, boot
parameters, the elfcorehdr: under a MiB).  When they do not fit, kexec says only
``kexec_file_load failed: Cannot assign requested address``; this module turns that into
the sizes that matter and the option to change.
"""

from __future__ import annotations

from pathlib import Path

from ..images.bzimage import init_size_of
from ..units import MiB

#: Purgatory, boot parameters, command line and the elfcorehdr (a few hundred KiB).
LOAD_OVERHEAD = 1 * MiB
#: The capture kernel also needs memory to unpack its initrd and run its userspace.
#: Measured here (trixie cloud 6.12, 2026-12): 128M loads but the capture kernel runs out of
#: memory before its userspace; 160M captures.  The harness's default leaves ample room.
SMALLEST_MEASURED = "160M"
DEFAULT_CRASHKERNEL = "256M"
#: Advice for a capture kernel that ran out of memory.
RAISE_CRASHKERNEL = (f"raise --crashkernel ({SMALLEST_MEASURED} was the smallest that captured "
                     f"here, the default is {DEFAULT_CRASHKERNEL})")
#: Words in kexec's output that carry its reason (its -d debug lines do not).
_REASON_WORDS = ("fail", "error", "cannot", "could not", "not enough", "unable", "invalid",
                 "no such", "denied", "not supported")


def kexec_reason(output: str) -> str:
    """kexec's own explanation from its output (the last lines that give one)."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    reasons = [line for line in lines if any(w in line.lower() for w in _REASON_WORDS)]
    return "; ".join(reasons[-3:] or lines[-2:])


def load_need(kernel: Path | None, initrd: Path | None) -> tuple[int, str] | None:
    """Bytes kexec_file_load needs inside the reservation, and how they add up."""
    size = init_size_of(kernel) if kernel is not None else None
    if size is None:
        return None
    initrd_size = initrd.stat().st_size if initrd is not None and initrd.exists() else 0
    total = size + initrd_size + LOAD_OVERHEAD
    parts = (f"kernel init_size {size / MiB:.0f} MiB + capture initrd "
             f"{initrd_size / MiB:.0f} MiB + ~{LOAD_OVERHEAD // MiB} MiB of purgatory and "
             "headers")
    return total, parts


def explain_load_failure(rc: int, output: str, *, crashkernel: str, reserved: str,
                         kernel: Path | None, initrd: Path | None) -> str:
    """One line: kexec's reason, the reservation, what loading needs, what to change."""
    reason = kexec_reason(output) or f"kexec exit status {rc}"
    text = f"loading the capture kernel failed: {reason} (kexec exit status {rc})"
    if not reserved:
        return (text + f"; no crashkernel region is reserved (crashkernel={crashkernel}: too "
                "little guest memory for it?)")
    text += f"; crashkernel={crashkernel} reserved {reserved}"
    need = load_need(kernel, initrd)
    if need is not None:
        total, parts = need
        text += (f"; loading alone needs {total / MiB:.0f} MiB ({parts}) and the capture "
                 f"kernel needs room beyond that to run: {RAISE_CRASHKERNEL}")
    return text


def reserved_size(ranges: str) -> str:
    """``2e000000-3dffffff,`` (readiness ``crashkernel=``) -> ``256 MiB at 0x2e000000``."""
    parts = []
    for item in filter(None, (r.strip() for r in ranges.split(","))):
        start, _, end = item.partition("-")
        try:
            lo, hi = int(start, 16), int(end, 16) + 1
        except ValueError:
            continue
        parts.append(f"{(hi - lo) / MiB:.0f} MiB at {lo:#x}")
    return ", ".join(parts)
