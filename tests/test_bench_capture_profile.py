"""bench profile's analysis: instruction pointers to phases and functions (real guest in
testcases/test_bench_profile.py)."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from harness.bench.capture_profile import (
    KexecLayout,
    Phase,
    RipSample,
    Symbols,
    hashed_bytes,
    parse_rips,
    profile_run,
    top_functions,
)
from harness.bench.rip_sampler import RipSampler
from harness.errors import LostVMError

#: The first kernel's dmesg after `kexec -s -d -p` (trixie 6.12.117, 1 GiB guest).
DMESG = """\
[    4.263959] kexec_file: kernel: 00000000ce0b1961 kernel_size: 0xb317c0
[    4.307503] kexec: Loaded ELF headers at 0x2e000000 bufsz=0x1000 memsz=0xe1000
[    4.308976] kexec-bzImage64: Loaded purgatory at 0x3dffb000
[    4.309219] kexec-bzImage64: Loaded boot_param, command line and misc at 0x3dff9000 \
bufsz=0x1230 memsz=0x2000
[    4.309279] kexec-bzImage64: Loaded 64bit kernel at 0x3a800000 bufsz=0xb2c7c0 memsz=0x37de000
[    4.309832] kexec-bzImage64: Loaded initrd at 0x3a476000 bufsz=0x389198 memsz=0x389198
[    5.349579] kexec_file: nr_segments = 5
[    5.349725] kexec_file: segment[0]: buf=0x00000000db2fbca9 bufsz=0x1000 mem=0x2e000000 \
memsz=0xe1000
[    5.353572] kexec_file: segment[1]: buf=0x00000000d38366ea bufsz=0x4000 mem=0x3dffb000 \
memsz=0x5000
[    5.360459] kexec_file: segment[2]: buf=0x0000000034be63ad bufsz=0x1230 mem=0x3dff9000 \
memsz=0x2000
[    5.360590] kexec_file: segment[3]: buf=0x000000008c79a333 bufsz=0xb2c7c0 mem=0x3a800000 \
memsz=0x37de000
[    5.733810] kexec_file: segment[4]: buf=0x00000000f711aafb bufsz=0x389198 mem=0x3a476000 \
memsz=0x38a000
"""
CRASHKERNEL = "2e000000-3dffffff,"
FIRST = 0xFFFFFFFF81CBC56F            # kernel text (first kernel, then the capture kernel)
PURGATORY = 0x3DFFB2F0
DECOMPRESSOR = 0x3DF43EE4
USER = 0x4A9060


def test_the_layout_comes_from_the_reservation_and_the_logged_segments() -> None:
    layout = KexecLayout.parse(CRASHKERNEL, DMESG)
    assert layout.crash == (0x2E000000, 0x3E000000)
    assert layout.kernel == (0x3A800000, 0x3A800000 + 0x37DE000)
    assert layout.purgatory == 0x3DFFB000
    assert layout.phase_of(PURGATORY) is Phase.PURGATORY
    assert layout.phase_of(DECOMPRESSOR) is Phase.DECOMPRESSOR
    assert layout.phase_of(FIRST) is None and layout.phase_of(USER) is None
    # Without the segments (kernels before 6.8, kexec_load): one phase for both.
    assert KexecLayout.parse(CRASHKERNEL).phase_of(PURGATORY) is Phase.KEXEC_CODE
    with pytest.raises(ValueError, match="no crashkernel"):
        KexecLayout.parse("")


def test_purgatory_hashes_every_segment_but_its_own_and_the_elf_headers() -> None:
    assert hashed_bytes(DMESG) == 0x2000 + 0x37DE000 + 0x38A000      # 59.4 MiB
    assert hashed_bytes("no kexec here") is None


def test_rips_are_read_for_every_vcpu() -> None:
    text = ("CPU#0\nRAX=0000000000000000 RBX=ffffffff82c03e48\n"
            "RIP=ffffffff81095d5e RFL=00000046 [---Z-P-] CPL=0 II=0 A20=1 SMM=0 HLT=1\n"
            "CPU#1\nRIP=000000003dffb2f0 RFL=00000002 [-------] CPL=0 II=0 A20=1 SMM=0 HLT=0\n")
    assert parse_rips(text) == (0xFFFFFFFF81095D5E, 0x3DFFB2F0)


def _samples(*rows: tuple[float, int]) -> list[RipSample]:
    """The other vCPU sits halted in the first kernel throughout."""
    return [RipSample(t, (0xFFFFFFFF81095D5E, rip)) for t, rip in rows]


def test_phases_are_timed_from_the_first_sample_of_each_to_the_next() -> None:
    samples = _samples((0.9, USER), (1.0, FIRST), (1.1, FIRST), (1.2, PURGATORY),
                       (1.5, PURGATORY), (2.0, DECOMPRESSOR), (2.2, PURGATORY),
                       (3.0, FIRST + 0x100), (3.4, PURGATORY), (4.5, USER), (4.6, FIRST))
    profile = profile_run(samples, 1.0, KexecLayout.parse(CRASHKERNEL, DMESG))
    assert profile.cpu == 1
    assert profile.phases == pytest.approx({
        Phase.FIRST_KERNEL: 0.2, Phase.PURGATORY: 0.8, Phase.DECOMPRESSOR: 1.0,
        Phase.CAPTURE_KERNEL: 1.5})
    # Only forward: purgatory's address after the decompressor, and a physical address
    # after the capture kernel started (its own start-up code), change nothing.
    assert profile.capture_kernel_rips == (FIRST + 0x100,)
    assert "purgatory 0.80 s" in profile.line()


def test_a_panic_that_never_reaches_kexec_has_no_phases() -> None:
    profile = profile_run(_samples((1.0, FIRST), (2.0, USER)), 0.0,
                          KexecLayout.parse(CRASHKERNEL, DMESG))
    assert profile.cpu is None and profile.phases == {}
    assert "no vCPU entered" in profile.line()


def test_functions_are_named_from_kallsyms_and_ranked_by_share() -> None:
    kallsyms = ("ffffffff81000000 T _stext\nffffffff81001000 t free_reserved_area\n"
                "ffffffff81002000 T memcpy\nffffffff82000000 D some_data\n"
                "ffffffffc0000000 t virtblk_probe\t[virtio_blk]\n")
    symbols = Symbols.from_kallsyms(kallsyms)
    assert len(symbols) == 4 and symbols.name(0xFFFFFFFF81001234) == "free_reserved_area"
    rips = [0xFFFFFFFF81001010] * 3 + [0xFFFFFFFF81002000]
    assert top_functions(rips, symbols) == [("free_reserved_area", 0.75), ("memcpy", 0.25)]
    assert top_functions([], symbols) == []
    assert len(Symbols.from_kallsyms("0000000000000000 T _stext\n")) == 0   # kptr_restrict


class _FakeQmp:
    """Answers ``info registers -a`` a few times, then QEMU is gone."""

    def __init__(self, answers: int) -> None:
        self.answers = answers
        self.calls: list[dict[str, Any]] = []
        self.notes: list[str] = []
        self.transcript = self
        self.gone = threading.Event()

    def record(self, kind: str, payload: Any) -> None:
        self.notes.append(f"{kind}: {payload}")

    def hmp(self, command: str, *, timeout: float, record: bool) -> str:
        self.calls.append({"command": command, "record": record})
        if len(self.calls) > self.answers:
            self.gone.set()
            raise LostVMError("QEMU exited")
        return "RIP=ffffffff81095d5e RFL\nRIP=000000003dffb2f0 RFL\n"


def test_the_sampler_stops_when_qemu_goes_and_keeps_the_transcript_small() -> None:
    qmp = _FakeQmp(answers=4)
    with RipSampler(qmp, interval=0.001) as sampler:    # type: ignore[arg-type]
        assert qmp.gone.wait(5)
    assert len(sampler.samples) == 4
    assert sampler.samples[0].rips == (0xFFFFFFFF81095D5E, 0x3DFFB2F0)
    assert all(c == {"command": "info registers -a", "record": False} for c in qmp.calls)
    assert len(qmp.notes) == 1 and "not recorded" in qmp.notes[0]
