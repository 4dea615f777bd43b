"""CMA and kexec in the guest (harness/guest/cma.py, kexec_tool.py): the pure parts.

The texts are what sid's 7.2.13 guests printed (testcases/test_seed003_cma.py).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from harness import topology
from harness.errors import HostError
from harness.guest import cma
from harness.guest import kexec_tool as tool


def state_text(available: int = 65472, success: int = 64, release: int = 0,
               free_kb: int = 261888, *, loaded: str = "0", crash: str = "1",
               crash_area: bool = False) -> str:
    """What ``cma.state_command()`` prints."""
    lines = ["CmaTotal: 262144", f"CmaFree: {free_kb}"]
    areas = [("reserved", 65536, available, success, release)]
    if crash_area:
        areas.append(("crashkernel", 65536, 65536, 0, 0))
    for name, total, avail, ok, rel in areas:
        lines += [f"{name}/total_pages:{total}", f"{name}/available_pages:{avail}",
                  f"{name}/alloc_pages_success:{ok}", f"{name}/alloc_pages_fail:0",
                  f"{name}/release_pages_success:{rel}"]
    lines += [f"kexec_loaded:{loaded}", f"kexec_crash_loaded:{crash}"]
    return "\n".join(lines) + "\n"


def test_state_reads_meminfo_every_area_and_what_is_loaded() -> None:
    state = cma.parse_state(state_text(crash_area=True, loaded="1", crash="0"))
    assert (state.total_kb, state.free_kb) == (262144, 261888)
    assert state.area().allocated_pages == 64
    assert state.area(cma.CRASH_AREA).available_pages == 65536
    assert state.image_loaded and not state.crash_loaded
    assert ("reserved 65472/65536 pages available (64 allocated, 0 released since boot)"
            in state.summary())
    with pytest.raises(ValueError, match=r"no CMA area 'other'.*reserved, crashkernel"):
        state.area("other")


def test_state_refuses_a_kernel_without_cma_and_a_half_read_area() -> None:
    with pytest.raises(ValueError, match="CONFIG_CMA"):
        cma.parse_state("kexec_loaded:0\n")
    half = state_text().replace("reserved/available_pages:65472\n", "")
    with pytest.raises(ValueError, match="reserved: no available_pages"):
        cma.parse_state(half)


def test_allocator_leak_is_exact_and_names_the_counters() -> None:
    baseline = cma.parse_state(state_text())
    back = cma.parse_state(state_text(success=16498, release=16434, free_kb=257656))
    assert cma.allocator_leak(baseline, back) is None, "CmaFree drift alone is no leak"
    leaked = cma.parse_state(state_text(available=50046, success=15490, free_kb=200184))
    text = cma.allocator_leak(baseline, leaked)
    assert text is not None
    assert "reserved holds +15426 pages (+61704 KiB)" in text
    assert "available 65472 -> 50046; 15426 pages allocated and 0 released" in text
    gone = cma.CmaState(262144, 261888, {})
    assert "CMA area reserved has gone" in (cma.allocator_leak(baseline, gone) or "")


KLOG = """\
[    4.461686] kexec_file: allocated 5 DMA pages at 0x2e420
[    4.462110] kexec-bzImage64: Loaded purgatory at 0x2e420000
[    4.462580] kexec_file: allocated 2 DMA pages at 0x2e425
[    4.689340] kexec_file: allocated 15419 DMA pages at 0x2e500
[    4.706230] kexec_file: allocated 1001 DMA pages at 0x3213b
"""


def test_allocations_come_from_the_kexec_file_debug_lines() -> None:
    found = cma.parse_allocations(KLOG)
    assert [a.pages for a in found] == [5, 2, 15419, 1001]
    assert found[2].pfn == 0x2E500
    assert cma.parse_allocations("kexec_file: nr_segments = 5\n") == ()


def run_output(tag: str, klog: str, *, rc: int = 0, output: str = "") -> str:
    """What ``cma.run_command(command, tag)`` prints."""
    begin = f"[    4.40] {cma.MARKER} begin {tag}"
    end = f"[    5.20] {cma.MARKER} end {tag}"
    after = state_text(available=49038, success=16498, free_kb=196152, loaded="1")
    return (f"@@before\n{state_text()}@@after\n{after}@@rc\n{rc}\n"
            f"@@klog\n{begin}\n{klog}{end}\n@@output\n{output}\n@@end\n")


def test_a_run_has_both_states_its_status_output_and_log_between_the_markers() -> None:
    run = cma.parse_run("kexec -s -l ...", "3-abc", run_output("3-abc", KLOG))
    assert run.ok and run.after.image_loaded and not run.before.image_loaded
    assert run.cma_pages == 16427
    assert run.before.area().available_pages - run.after.area().available_pages == 16434
    assert cma.MARKER not in run.klog
    failed = cma.parse_run("x", "4-d", run_output("4-d", "", rc=255, output="kexec_file_load "
                                                  "failed: Cannot assign requested address"))
    assert not failed.ok and failed.allocations == ()
    assert "exit status 255; output: kexec_file_load failed" in failed.describe()
    assert "CMA allocations logged: none" in failed.describe()


def test_a_run_whose_log_lost_a_marker_is_refused() -> None:
    # A ring buffer that wrapped: "no CMA allocation logged" would prove nothing.
    text = run_output("5-e", KLOG).replace(f"{cma.MARKER} begin 5-e", "something else")
    with pytest.raises(ValueError, match="lacks its markers"):
        cma.parse_run("x", "5-e", text)
    with pytest.raises(ValueError, match="truncated"):
        cma.parse_run("x", "5-e", run_output("5-e", KLOG).replace("@@end\n", ""))


def test_the_guest_commands_are_valid_shell() -> None:
    for text in (cma.state_command(), cma.run_command(cma.normal_load(), "1-abc"),
                 cma.run_command("KDUMP_INITRD=/x /harness/kdump-load file", "2-abc")):
        done = subprocess.run(["sh", "-n", "-c", text], capture_output=True, text=True,
                              check=False)
        assert done.returncode == 0, done.stderr
    assert cma.normal_load(initrd="/big") == (
        "kexec -s -d -l /boot/vmlinuz --initrd=/big --append='console=ttyS0,115200'")


def test_crash_cma_ranges_are_the_topology_parser() -> None:
    # Moved to harness/topology (the verifier needs them); tests/test_topology_crash_cma.py.
    assert cma.crash_cma_ranges is topology.crash_cma_ranges


def test_kexec_file_flags_are_the_uapi_values() -> None:
    flag = tool.KexecFileFlag
    assert (flag.UNLOAD, flag.ON_CRASH, flag.NO_INITRAMFS, flag.DEBUG, flag.NO_CMA) == (
        1, 2, 4, 8, 0x10)
    assert tool.command(flag.ON_CRASH | flag.NO_CMA, "/boot/vmlinuz", "-", "a b") == (
        "/run/harness/kexec-file-load 0x12 /boot/vmlinuz - 'a b'")
    assert tool.parse_result("kexec_file_load rc=-99 flags=0x14\n") == (
        -tool.EADDRNOTAVAIL, flag.NO_INITRAMFS | flag.NO_CMA)
    with pytest.raises(ValueError, match="no 'kexec_file_load rc=' line"):
        tool.parse_result("sh: kexec-file-load: not found\n")


@pytest.mark.skipif(tool.compiler() is None, reason="no C compiler on this host")
def test_the_tool_builds_and_says_how_to_use_it(tmp_path: Path) -> None:
    binary = tool.build(tmp_path)
    assert binary is not None and binary.stat().st_size < 64 * 1024
    done = subprocess.run([str(binary)], capture_output=True, text=True, check=False)
    assert done.returncode == 1 and done.stdout.startswith("usage: kexec-file-load FLAGS")


def test_the_tool_without_a_compiler_is_none_and_a_broken_one_is_a_host_error(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shutil, "which", lambda name: None)
    assert tool.build(tmp_path) is None
    monkeypatch.setattr(tool, "compiler", lambda: "false")
    with pytest.raises(HostError, match="building kexec-file-load with false failed"):
        tool.build(tmp_path)


class FakeGuest:
    """Answers ``state_command()`` with one CmaFree after another."""

    def __init__(self, *free_kb: int, settle: float = 5.0) -> None:
        self.free = list(free_kb)
        self.reads = 0
        self.timeouts = type("T", (), {"settle": settle})()

    def run(self, command: str, **_: object) -> object:
        self.reads += 1
        free = self.free.pop(0) if len(self.free) > 1 else self.free[0]
        return type("R", (), {"stdout": state_text(free_kb=free)})()

    def check_health(self, doing: str, *, grace: float = 0.5) -> None:
        pass


def test_settled_state_waits_for_cmafree_and_skips_the_round_trip_when_it_can() -> None:
    baseline = cma.parse_state(state_text(free_kb=261888))
    near = cma.parse_state(state_text(free_kb=257656))
    guest = FakeGuest(100000)
    assert cma.settled_state(guest, baseline, near) is near  # type: ignore[arg-type]
    assert guest.reads == 0
    guest = FakeGuest(196152, 200000, 261752)
    assert cma.settled_state(guest, baseline).free_kb == 261752  # type: ignore[arg-type]
    assert guest.reads == 3
    far = cma.parse_state(state_text(free_kb=196152))
    guest = FakeGuest(196152, settle=0.3)
    assert cma.settled_state(guest, baseline, far).free_kb == 196152  # type: ignore[arg-type]
    assert guest.reads >= 1
