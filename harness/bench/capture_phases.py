"""Where panic -> capture userspace goes, from a crash run's evidence.

Three phases, each from a clock that covers it:

* ``to_kernel``: the panic line -> the capture kernel's clock zero.  The first kernel stops
  its CPUs, purgatory checks the SHA-256 digest of every loaded segment (the kernel
  segment counts its whole ``init_size``, ~56 MiB on trixie), and the bzImage's
  decompressor unpacks the kernel.  Host clock: each capture-kernel console line arrives
  no earlier than its printk time after the clock's zero, so the zero is the smallest
  ``arrival - printk time`` over those lines.
* ``to_init``: clock zero -> ``Run /init as init process`` (KERN_INFO: only in the
  capture kernel's dmesg, not on its loglevel=6 console): the kernel's own boot,
  initramfs unpacking included.
* ``to_capture_start``: ``Run /init`` -> the ``capture-start`` line's ``uptime=``: the
  capture userspace.

Measured under TCG on trixie (6.12) before the capture kernel was trimmed: 1.3 s, 2.1 s
and 0.17 s.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..signatures import CAPTURE_CMDLINE, KERNEL_BANNER, PANIC, PRINTK_TIME

#: A console.log line: the host's arrival time, then the guest's text.
_HOST_LINE = re.compile(r"^\[host\s+(\d+\.\d+)\] (.*)$", re.M)
_RUN_INIT = re.compile(r"^\[\s*(\d+\.\d+)\] Run /init as init process", re.M)
_CAPTURE_UPTIME = re.compile(r"HARNESS: capture-start mode=\w+ uptime=(\d+\.\d+)")


@dataclass(frozen=True)
class CapturePhases:
    """Seconds per phase; None where the evidence does not show it."""

    to_kernel: float | None = None
    to_init: float | None = None
    to_capture_start: float | None = None


def capture_phases(console_log: str, capture_dmesg: str | None) -> CapturePhases:
    """The phases of one run from its ``console.log`` (host-timestamped lines) and the
    capture kernel's dmesg (``capture/capture-dmesg.txt``), if it was collected."""
    lines = [(float(m.group(1)), m.group(2)) for m in _HOST_LINE.finditer(console_log)]
    panic = next((i for i, (_, text) in enumerate(lines) if PANIC.search(text)), None)
    cmdline = next((i for i, (_, text) in enumerate(lines)
                    if panic is not None and i > panic and CAPTURE_CMDLINE.search(text)), None)
    run_init = _RUN_INIT.search(capture_dmesg or "")
    init_at = float(run_init.group(1)) if run_init else None
    uptime = next((float(m.group(1)) for _, text in lines
                   if (m := _CAPTURE_UPTIME.search(text))), None)
    to_kernel = None
    if panic is not None and cmdline is not None:
        # The capture kernel's lines start at its banner, the last one before its cmdline.
        start = max((i for i in range(panic, cmdline + 1)
                     if KERNEL_BANNER.search(lines[i][1])), default=cmdline)
        zeros = [host - float(m.group(1)) for host, text in lines[start:]
                 if (m := PRINTK_TIME.match(text))]
        if zeros:
            to_kernel = min(zeros) - lines[panic][0]
    return CapturePhases(
        to_kernel=to_kernel, to_init=init_at,
        to_capture_start=uptime - init_at if uptime is not None and init_at is not None
        else None)
