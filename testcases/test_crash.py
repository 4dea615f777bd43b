"""Panic, capture and every outcome classified, with real guests."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.crash import Outcome, panic_and_capture
from harness.vmcore import NoteType, open_dump, parse_elfcorehdr

pytestmark = pytest.mark.guest


def captured(result) -> Path:  # type: ignore[no-untyped-def]
    assert result.outcome is Outcome.CAPTURED, f"{result.reason}\n{result.console_tail}"
    return Path(result.files["vmcore"])


@pytest.mark.profile("trixie")
@pytest.mark.parametrize("trigger", ["sysrq", "nmi"])
@pytest.mark.parametrize("mode", ["headers", pytest.param("elf", marks=pytest.mark.slow)])
def test_trixie_trigger_gives_vmcore(make_guest, artifact_dir: Path, trigger: str,
                                     mode: str) -> None:
    guest = make_guest("trixie", cpus=2, capture_mode=mode)
    release = guest.readiness.get("release")
    result = panic_and_capture(guest, trigger=trigger, out=artifact_dir)
    dump = open_dump(captured(result))
    assert dump.vmcoreinfo is not None and dump.vmcoreinfo.osrelease == release
    # Both CPUs were online: one NT_PRSTATUS note each (NMI: every CPU panicked at once).
    assert len(dump.cpu_notes) == 2
    assert result.times.capture_userspace is not None
    assert "Kernel panic" in Path(result.files["vmcore_dmesg"]).read_text(errors="replace")
    raw = parse_elfcorehdr(Path(result.files["raw_elfcorehdr"]).read_bytes())
    assert len(raw.cpu_note_segments) == 8, "one PT_NOTE per possible CPU in the raw header"
    if mode == "elf":
        # makedumpfile -E -d 31: real page data for the kernel text, not just headers.
        assert not dump.truncated_loads
        assert dump.file_size > 1 << 20
    if trigger == "sysrq":
        assert "sysrq triggered crash" in (result.panic_message or "")


@pytest.mark.slow   # the catalogue covers it (test_catalogue.py)
@pytest.mark.profile("trixie")
def test_all_cpu_nmi_gives_one_note_per_online_cpu(make_guest, artifact_dir: Path) -> None:
    guest = make_guest("trixie", cpus=4)
    result = panic_and_capture(guest, trigger="nmi", out=artifact_dir)
    dump = open_dump(captured(result))
    notes = [n for n in dump.notes if n.type == NoteType.NT_PRSTATUS]
    assert len(notes) == len(dump.cpu_notes) == 4


@pytest.mark.slow   # the catalogue covers it (test_catalogue.py)
@pytest.mark.profile("trixie")
def test_sysrq_on_chosen_cpu_and_simultaneous_sysrq(make_guest, artifact_dir: Path) -> None:
    guest = make_guest("trixie", cpus=3)
    result = panic_and_capture(guest, trigger="sysrq-multi", cpus=(1, 2), out=artifact_dir)
    dump = open_dump(captured(result))
    assert len(dump.cpu_notes) == 3
    busy = [n for n in dump.cpu_notes if n.prstatus.pid != 0]
    assert busy, "the panicking CPU's note must not be idle"


@pytest.mark.profile("trixie")
def test_nothing_loaded_is_kdump_did_not_occur(make_guest, artifact_dir: Path) -> None:
    guest = make_guest("trixie", kexec="none")
    result = panic_and_capture(guest, trigger="sysrq", out=artifact_dir)
    assert result.outcome is Outcome.KDUMP_DID_NOT_OCCUR, result.reason
    assert "nothing was loaded" in result.reason
    assert "kdump_did_not_occur" in (artifact_dir / "vmcore.missing").read_text()
    assert "Kernel panic - not syncing: sysrq triggered crash" in result.console_tail
    assert "Kernel panic" in (artifact_dir / "console-first-kernel.log").read_text()


@pytest.mark.profile("trixie")
def test_crashkernel_64m_is_capture_failed_with_oom_evidence(make_guest,
                                                             artifact_dir: Path) -> None:
    guest = make_guest("trixie", crashkernel="64M")
    result = panic_and_capture(guest, trigger="sysrq", out=artifact_dir)
    assert result.outcome is Outcome.CAPTURE_FAILED, f"{result.outcome}: {result.reason}"
    assert "out of memory" in result.reason.lower(), result.reason
    assert (artifact_dir / "console-capture-kernel.log").read_text().strip()


@pytest.mark.slow   # the catalogue covers it (test_catalogue.py)
@pytest.mark.parametrize("profile", [pytest.param(p, marks=pytest.mark.profile(p))
                                     for p in ("bookworm", "sid")])
def test_sysrq_gives_vmcore_on_other_profiles(make_guest, artifact_dir: Path, profile: str) -> None:
    guest = make_guest(profile)
    release = guest.readiness.get("release")
    result = panic_and_capture(guest, trigger="sysrq", out=artifact_dir)
    dump = open_dump(captured(result))
    assert dump.vmcoreinfo is not None and dump.vmcoreinfo.osrelease == release
    assert len(dump.cpu_notes) == 2


@pytest.mark.profile("trixie")
def test_panic_while_a_kdump_reload_is_in_flight_gives_no_dump(make_guest,
                                                              artifact_dir: Path) -> None:
    guest = make_guest("trixie")
    result = panic_and_capture(guest, trigger="sysrq", out=artifact_dir, during_reload=True)
    assert result.outcome is Outcome.KDUMP_DID_NOT_OCCUR, f"{result.outcome}: {result.reason}"
    assert "reload was in flight" in result.reason


@pytest.mark.profile("trixie")
@pytest.mark.parametrize("mode,fmt", [("compressed", "kdump"),
                                      pytest.param("full", "elf", marks=pytest.mark.slow)])
def test_compressed_and_full_capture_modes(make_guest, artifact_dir: Path, mode: str,
                                           fmt: str) -> None:
    guest = make_guest("trixie", capture_mode=mode)
    result = panic_and_capture(guest, trigger="sysrq", out=artifact_dir)
    dump = open_dump(captured(result))
    assert dump.format.value == fmt
    assert len(dump.cpu_notes) == 2
    assert dump.vmcoreinfo is not None
    assert dump.vmcoreinfo.osrelease == guest.readiness.get("release")
    if mode == "full":
        assert not dump.truncated_loads, "a full copy carries every PT_LOAD's data"
