"""How fast this host runs TCG right now: a fixed guest program, timed.

Benchmark numbers of one commit moved by more than 2x between days on this host (panic to
the capture kernel's clock: 1.30 s one day, 3.14 s another), with no steal reported.  This
gauge measures what moved, guest code under QEMU's TCG, on its own: record it with the
numbers, and when two sets differ, see whether the gauge moved as much.  Within minutes it
varies by about 15 %, as the guest phases do, and the two do not move together run by run
(14 alternating pairs, correlation -0.13): it gauges the host's hour, not one run.

The program is a 64 KiB firmware image built here, byte by byte, so nothing is downloaded
or installed: at the reset vector, a far jump to real-mode code that runs ``ITERATIONS``
rounds of a linear congruential step, a byte store into a 16 KiB ring and a near call and
return (TCG's indirect-jump lookup), then writes 0 to ``isa-debug-exit`` and halts.  QEMU
exits with status 1 ((0 << 1) | 1).  The median wall time of ``RUNS`` QEMU processes,
start to exit (~45 ms of it QEMU starting), is the gauge.
"""

from __future__ import annotations

import statistics
import struct
import subprocess
import tempfile
import time
from pathlib import Path

from ..errors import HostError
from ..timeouts import Timeouts

ITERATIONS = 10_000_000
RUNS = 3
_EXIT_PORT = 0xF4
_OK_STATUS = 1


def firmware(iterations: int = ITERATIONS) -> bytes:
    """The 64 KiB image: code at offset 0 (F000:0000), the reset vector at 0xFFF0."""
    code = bytearray()
    code += bytes([0xFA, 0x31, 0xC0, 0x8E, 0xD8, 0x8E, 0xD0])    # cli; ds = ss = 0
    code += bytes([0xBC, 0x00, 0x70])                             # sp = 0x7000
    code += bytes([0x66, 0xB9]) + struct.pack("<I", iterations)   # ecx = iterations
    code += bytes([0x66, 0xB8, 1, 0, 0, 0, 0x31, 0xDB])           # eax = 1; bx = 0
    loop = len(code)
    code += bytes([0x66, 0x69, 0xC0]) + struct.pack("<I", 1103515245)   # imul eax, eax, a
    code += bytes([0x66, 0x05]) + struct.pack("<I", 12345)              # add eax, c
    code += bytes([0x88, 0x87, 0x00, 0x10])                       # mov [bx + 0x1000], al
    code += bytes([0x43, 0x81, 0xE3, 0xFF, 0x3F])                 # inc bx; and bx, 0x3fff
    call = len(code)
    code += bytes([0xE8, 0, 0])                                   # call sub
    code += bytes([0x66, 0x49])                                   # dec ecx
    branch = len(code)
    code += bytes([0x0F, 0x85, 0, 0])                             # jnz loop
    code += bytes([0xB0, 0x00, 0xE6, _EXIT_PORT, 0xF4, 0xEB, 0xFD])   # out 0xf4, 0; hlt
    sub = len(code)
    code += bytes([0x66, 0x01, 0xC2, 0xC3])                       # sub: add edx, eax; ret
    struct.pack_into("<h", code, call + 1, sub - (call + 3))
    struct.pack_into("<h", code, branch + 2, loop - (branch + 4))
    image = bytearray(0x10000)
    image[:len(code)] = code
    image[0xFFF0:0xFFF5] = bytes([0xEA, 0x00, 0x00, 0x00, 0xF0])   # jmp far F000:0000
    return bytes(image)


def tcg_gauge(binary: str, runs: int = RUNS) -> float:
    """Median seconds for QEMU to run the gauge's program under TCG (``HostError`` if
    QEMU does not end it as the program says, in time)."""
    timeout = Timeouts.for_accel("tcg").gauge
    with tempfile.TemporaryDirectory(prefix="kh-gauge-") as tmp:
        rom = Path(tmp) / "gauge.rom"
        rom.write_bytes(firmware())
        argv = [binary, "-M", "pc", "-accel", "tcg", "-m", "16", "-bios", str(rom),
                "-nodefaults", "-display", "none", "-no-reboot",
                "-device", f"isa-debug-exit,iobase={_EXIT_PORT:#x},iosize=1"]
        samples = []
        for _ in range(runs):
            started = time.perf_counter()
            try:
                done = subprocess.run(argv, capture_output=True, timeout=timeout, check=False)
            except subprocess.TimeoutExpired as exc:
                raise HostError(f"the TCG gauge's QEMU did not exit within {timeout:.0f} s"
                                ) from exc
            samples.append(time.perf_counter() - started)
            if done.returncode != _OK_STATUS:
                raise HostError(f"the TCG gauge's QEMU exited {done.returncode}, not "
                                   f"{_OK_STATUS}: {done.stderr.decode(errors='replace')[-300:]}")
    return statistics.median(samples)


__all__ = ["ITERATIONS", "firmware", "tcg_gauge"]
