"""The console matches complete lines only, however the serial port splits them."""

from __future__ import annotations

import itertools
import os
import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.crash import capture as crash
from harness.errors import LostVMError
from harness.guest.console import Console, LineBuffer

CAPTURE = (
    "[    2.70] Run /init as init process\n"
    "~ # \x1b[6nHARNESS: capture-start mode=elf uptime=2.71 elfcorehdr=0x2e000000\n"
    "[    2.80] virtio_blk virtio1: [vda] 131072 512-byte logical blocks\n"
    "HARNESS: dump-written rc=0 mode=elf uptime=13.83\n"
    "HARNESS: capture-done rc=0 uptime=13.94\n"
)
#: What each pattern says about the complete text: any match on a prefix must say the same.
PATTERNS = {"start": crash._CAPTURE_START, "written": crash._DUMP_WRITTEN,
            "done": crash._CAPTURE_DONE}


def console(tmp_path: Path) -> Console:
    return Console(tmp_path / "console", tmp_path / "console.log")


def chunked(text: str, cuts: list[int]) -> list[str]:
    points = sorted({c % (len(text) + 1) for c in cuts} | {0, len(text)})
    return [text[a:b] for a, b in itertools.pairwise(points)]


def full_matches() -> dict[str, tuple[str | None, ...]]:
    out = {}
    for name, rx in PATTERNS.items():
        m = rx.search(CAPTURE)
        assert m is not None, name
        out[name] = m.groups()
    return out


def check_feeding(tmp_path: Path, chunks: list[str]) -> None:
    c = console(tmp_path)
    want = full_matches()
    for chunk in chunks:
        c.feed(chunk)
        for name, rx in PATTERNS.items():
            m = c.find(rx)
            if m is not None:
                # Never a match on half a line: what matched is what the whole line says.
                assert m.groups == want[name], (name, m.groups)
        assert c.text().endswith("\n") or c.text() == ""
    assert all(c.find(rx) is not None for rx in PATTERNS.values())
    assert c.text() == CAPTURE


def test_one_byte_at_a_time(tmp_path: Path) -> None:
    check_feeding(tmp_path, list(CAPTURE))


@settings(max_examples=300, deadline=None)
@given(cuts=st.lists(st.integers(0, 10_000), max_size=40))
def test_random_sized_chunks(tmp_path_factory: pytest.TempPathFactory, cuts: list[int]) -> None:
    check_feeding(tmp_path_factory.mktemp("console"), chunked(CAPTURE, cuts))


def test_the_torn_address_that_once_sent_the_harness_to_0x2e0(tmp_path: Path) -> None:
    c = console(tmp_path)
    c.feed("HARNESS: capture-start mode=elf uptime=2.71 elfcorehdr=0x2e0")
    assert c.find(crash._CAPTURE_START) is None and c.mark() == 0
    c.feed("00000\n")
    m = c.find(crash._CAPTURE_START)
    assert m is not None and m.groups[2] == "elfcorehdr=0x2e000000"


def test_a_kernel_line_printed_into_a_harness_line_does_not_match() -> None:
    # printk does not wait for userspace's line to end: the result must not parse as
    # the line with a truncated address.
    text = ("HARNESS: capture-start mode=elf uptime=2.71 elfcorehdr=0x2e0[    2.80] "
            "virtio_blk virtio1: [vda] 131072 blocks\n00000\n")
    assert crash._CAPTURE_START.search(text) is None


def test_the_last_line_completes_when_the_stream_ends(tmp_path: Path) -> None:
    c = console(tmp_path)
    c.feed("one\ntwo without newline")
    assert c.text() == "one\n"
    assert "two without newline [line incomplete]" in c.tail()
    c.close()
    assert c.text() == "one\ntwo without newline\n" and c.eof


def test_line_buffer_drops_carriage_returns_and_keeps_the_partial() -> None:
    lines = LineBuffer()
    assert lines.feed("a\r\nb") == ["a"]
    assert lines.partial == "b"
    assert lines.feed("c\r") == []
    assert lines.feed("\nd\n") == ["bc", "d"]
    assert lines.flush() is None


def test_crash_signatures_wait_for_the_whole_line(tmp_path: Path) -> None:
    c = console(tmp_path)
    c.feed("[ 5.39] Kernel panic - not sync")
    assert c.find(re.compile(r"Kernel panic - not syncing")) is None
    c.feed("ing: sysrq triggered crash\n")
    m = c.find(crash.PANIC)
    assert m is not None and m.groups[0] == "sysrq triggered crash"


def test_a_lagging_reader_loses_nothing_of_a_burst_of_one_byte_writes(tmp_path: Path) -> None:
    """QEMU's 16550 writes a byte per write(2): a Unix socket refused the 279th while the
    reader lagged (QEMU then drops output); the FIFO takes 1 MiB of them."""
    c = console(tmp_path)
    c.listen()
    # QEMU opens both FIFOs read-write (chardev/char-pipe.c) and sets them non-blocking.
    qemu = os.open(f"{tmp_path / 'console'}.out", os.O_RDWR | os.O_NONBLOCK)
    line = "[    0.000000] Kernel command line: console=ttyS0,115200 elfcorehdr=0x2e000000\n"
    burst = (line * (256 * 1024 // len(line))).encode()
    for byte in burst:              # nobody reads yet: the drain thread starts in accept
        os.write(qemu, bytes([byte]))
    c.accept(timeout=5)
    os.close(qemu)                  # QEMU exits: the stream ends
    assert c.wait_eof(timeout=10)
    assert c.text() == burst.decode()
    c.close()


def test_accept_waits_for_qemu_and_gives_up_when_it_died(tmp_path: Path) -> None:
    c = console(tmp_path)
    c.listen()
    with pytest.raises(LostVMError, match="exited before connecting its serial console"):
        c.accept(timeout=5, still_running=lambda: False)
    c.close()
    late = console(tmp_path / "late")
    (tmp_path / "late").mkdir()
    late.listen()
    with pytest.raises(LostVMError, match=r"did not connect its serial console within 0\.2 s"):
        late.accept(timeout=0.2)
    late.close()


def test_typed_input_reaches_the_serial_port(tmp_path: Path) -> None:
    c = console(tmp_path)
    c.listen()
    qemu_in = os.open(f"{tmp_path / 'console'}.in", os.O_RDWR | os.O_NONBLOCK)
    qemu_out = os.open(f"{tmp_path / 'console'}.out", os.O_RDWR | os.O_NONBLOCK)
    c.accept(timeout=5)
    c.send("cat /proc/cmdline")
    assert os.read(qemu_in, 100) == b"cat /proc/cmdline\n\n\n"
    for fd in (qemu_in, qemu_out):
        os.close(fd)
    c.close()
