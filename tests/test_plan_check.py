"""Plans the guest cannot take are refused before QEMU starts, naming the option."""

from __future__ import annotations

import pytest

from harness.errors import UsageError
from harness.guest import GuestConfig
from harness.hotplug import SwarmSpec, build_plan
from harness.hotplug.checks import check_memory_budget, hotplug_total, memmap_on_memory
from harness.units import GiB, MiB


def plan(n: int, size: int = 256 * MiB) -> object:
    return build_plan(SwarmSpec(dimms=(size,) * n))


def test_256_dimms_into_a_1g_guest_are_refused_with_what_would_work() -> None:
    big = build_plan(SwarmSpec(dimms=(256 * MiB,) * 256))
    config = GuestConfig(memory=1 * GiB, memory_slots=256, max_memory=80 * GiB)
    with pytest.raises(UsageError, match=r"needs 1024 MiB of memmap.*Raise --memory to at "
                                         r"least .*memory_hotplug.memmap_on_memory=1"):
        check_memory_budget(big, config)
    # The same swarm verified accurate with 4 GiB of boot memory (KNOWLEDGE.md).
    check_memory_budget(big, GuestConfig(memory=4 * GiB, memory_slots=256, max_memory=80 * GiB))
    # Or with the memmap on the hot-added memory itself.
    check_memory_budget(big, GuestConfig(memory=1 * GiB, memory_slots=256, max_memory=80 * GiB,
                                         kernel_args=("memory_hotplug.memmap_on_memory=1",)))


def test_the_default_run_fits() -> None:
    check_memory_budget(build_plan(SwarmSpec(dimms=(256 * MiB,) * 8, cpus=2)), GuestConfig())


@pytest.mark.parametrize(("spec", "config", "message"), [
    (SwarmSpec(dimms=(100 * MiB,) * 3), GuestConfig(), r"multiple"),
    (SwarmSpec(dimms=(256 * MiB,) * 65), GuestConfig(), r"65 DIMMs .* 64 slots: raise --slots"),
    (SwarmSpec(dimms=(4 * GiB,) * 5), GuestConfig(), r"exceeds --maxmem 20G: raise --maxmem"),
])
def test_refusals_name_the_option(spec: SwarmSpec, config: GuestConfig, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        check_memory_budget(build_plan(spec), config)


def test_hotplug_total_counts_virtio_mem_at_its_largest() -> None:
    p = build_plan(SwarmSpec(dimms=(256 * MiB,) * 2, virtio_mem=1 * GiB,
                             virtio_mem_shrink=256 * MiB))
    assert hotplug_total(p) == 512 * MiB + 1 * GiB


@pytest.mark.parametrize(("args", "on"), [
    ((), False), (("memory_hotplug.memmap_on_memory=1",), True),
    (("memory_hotplug.memmap_on_memory=force",), True),
    (("memory_hotplug.memmap_on_memory=0",), False),
])
def test_memmap_on_memory(args: tuple[str, ...], on: bool) -> None:
    assert memmap_on_memory(args) is on


@pytest.mark.parametrize(("config", "message"), [
    (dict(memory=100 * GiB), r"--memory 100G is more than --maxmem 20G"),
    (dict(memory=1000 * MiB), r"--memory 1000M is not a multiple of 128M"),
    (dict(cpus=9), r"--boot-cpus 9 .* --maxcpus 8"),
])
def test_guest_config_refuses_before_anything_starts(config: dict[str, int],
                                                      message: str) -> None:
    with pytest.raises(UsageError, match=message):
        GuestConfig(**config).validate()  # type: ignore[arg-type]
