"""Faults end in their documented result, named by their own cause, and leave no QEMU.

Each of these was seen when the harness was tried as a new user would: a guest that
refuses hot-added memory waited 96 s for the settle and ended as an SSH error; QEMU
killed mid-swarm said only "QMP connection lost" (test_catalogue_faults.py); a too
small crashkernel said only "kexec exit status 255".
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from harness.cli import main
from harness.errors import HotplugNotHonoured
from harness.guest import Guest
from harness.hotplug import SwarmSpec, build_plan, run_swarm
from harness.hotplug.checks import MEMMAP_ON_MEMORY_ARG
from harness.units import GiB

pytestmark = pytest.mark.guest

MakeGuest = Callable[..., Guest]


@pytest.mark.profile("trixie")
def test_a_guest_that_refuses_memory_says_so_from_its_console(make_guest: MakeGuest) -> None:
    # 48 GiB needs 768 MiB of memmap from a 1 GiB guest: the plan check refuses this plan
    # up front (tests/test_plan_check.py), so the swarm is run directly to see the guest's
    # own refusal, which must end the swarm at once with the kernel's line.
    guest = make_guest("trixie", memory=GiB, max_memory=52 * GiB, memory_slots=16)
    plan = build_plan(SwarmSpec(dimms=(4 * GiB,) * 12))
    with pytest.raises(HotplugNotHonoured, match=r"refused hot-added memory .*add_memory "
                                                 r"failed"):
        run_swarm(guest, plan)


@pytest.mark.profile("trixie")
def test_the_plan_checks_advice_works_memmap_on_the_hot_added_memory(
        make_guest: MakeGuest) -> None:
    # What check_memory_budget suggests besides more boot memory: the same 48 GiB into the
    # same 1 GiB guest settles once the memmap lives on the hot-added memory.
    guest = make_guest("trixie", memory=GiB, max_memory=52 * GiB, memory_slots=16,
                       kernel_args=(f"{MEMMAP_ON_MEMORY_ARG}=1",))
    result = run_swarm(guest, build_plan(SwarmSpec(dimms=(4 * GiB,) * 12)))
    result.check()
    assert result.observed is not None
    assert sum(r.size for r in result.observed.system_ram) > 48 * GiB


@pytest.mark.profile("trixie")
def test_a_too_small_crashkernel_says_what_loading_needs(
        kh_accel: str, artifact_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status = main(["run", "--out", str(artifact_dir), "--accel", kh_accel,
                   "--dimms", "", "--add-cpus", "0", "--crashkernel", "32M"])
    out = capsys.readouterr().out
    assert status == 1, out
    assert "result kdump_load_failed" in out
    assert "kexec_file_load failed: Cannot assign requested address" in out
    assert "crashkernel=32M reserved 32 MiB" in out and "loading alone needs" in out
