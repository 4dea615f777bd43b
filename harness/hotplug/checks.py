"""Check a swarm plan against its guest: before QEMU starts, and before the first event.

``check_memory_budget`` (before boot): what QEMU or the guest kernel would refuse only
after a boot is refused here, with the option to change: sizes that are not whole memory
blocks, more DIMMs than slots, more memory than ``maxmem``, and hot-added memory whose
memmap would not fit in boot memory.

``preflight`` (on the booted guest, before the first event): the guest's real memory
block size, the devices an unplug or resize names, room in the possible-CPU mask, the
virtio-mem driver, and QEMU's own ability to survive vCPU unplugs.

The memmap rule: the kernel describes every 4 KiB page with a 64-byte ``struct page``,
so hot-adding memory costs 1/64 of it in memmap, taken from memory the guest already has
(boot memory) unless ``memory_hotplug.memmap_on_memory`` puts it on the added memory
itself (CONFIG_MHP_MEMMAP_ON_MEMORY, set in every profile's kernel).  Seen here: 256
DIMMs of 256 MiB (64 GiB, 1 GiB of memmap) into a 1 GiB guest made ``add_memory`` fail
from the first DIMMs on and the OOM killer take the SSH server; with 4 GiB of boot memory
the same swarm verified accurate.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from ..errors import HotplugNotHonoured, UsageError
from ..guest.accel import qemu_version
from ..guest.tcg_threads import UNPLUG_ABORTS
from ..topology import Topology, observe
from ..units import DEFAULT_MEMORY_BLOCK, MiB, parse_size, size_option
from . import devices as hp
from . import onlining
from .plan import Action, SwarmPlan

if TYPE_CHECKING:
    from ..guest import GuestConfig
    from .state import SwarmState

#: sizeof(struct page) is 64 bytes per 4 KiB page on x86_64.
MEMMAP_FRACTION = 64
#: The memmap may take at most this share of what boot memory leaves after the crash
#: kernel's reservation: the rest is for the kernel, its userspace and the swarm's work.
MEMMAP_SHARE = 0.5
MEMMAP_ON_MEMORY_ARG = "memory_hotplug.memmap_on_memory"


def hotplug_total(plan: SwarmPlan) -> int:
    """Bytes the plan hot-adds at its peak: every DIMM plugged, virtio-mem at its largest."""
    dimms = sum(e.size or 0 for e in plan.events if e.action is Action.PLUG_DIMM)
    virtio: dict[str, int] = {}
    for e in plan.events:
        if e.action is Action.RESIZE_VIRTIO_MEM:
            virtio[e.device] = max(virtio.get(e.device, 0), e.size or 0)
    return dimms + sum(virtio.values())


def memmap_on_memory(kernel_args: tuple[str, ...]) -> bool:
    """True when the first kernel's command line puts hot-added memmap on that memory."""
    for arg in kernel_args:
        key, _, value = arg.partition("=")
        if key == MEMMAP_ON_MEMORY_ARG:
            return value.lower() in ("", "1", "y", "yes", "on", "true", "force")
    return False


def crashkernel_bytes(crashkernel: str) -> int:
    """The plain ``crashkernel=SIZE[,high|low]`` reservation; 0 for forms it cannot size."""
    try:
        return parse_size(crashkernel.split(",", 1)[0].split("@", 1)[0])
    except UsageError:
        return 0


def check_memory_budget(plan: SwarmPlan, config: GuestConfig) -> None:
    """Refuse a plan the guest cannot take (``UsageError`` naming the option to change)."""
    plan.validate(DEFAULT_MEMORY_BLOCK)
    dimms = plan.count(Action.PLUG_DIMM)
    if dimms > config.memory_slots:
        raise UsageError(f"the plan hot-plugs {dimms} DIMMs but the guest has "
                         f"{config.memory_slots} slots: raise --slots (QEMU allows 256)")
    total = hotplug_total(plan)
    if config.memory + total > config.max_memory:
        raise UsageError(
            f"{size_option(config.memory)} boot memory plus {size_option(total)} hot-added "
            f"exceeds --maxmem {size_option(config.max_memory)}: raise --maxmem to at least "
            f"{size_option(_round_up(config.memory + total, 1 << 30))}")
    if memmap_on_memory(config.kernel_args):
        return
    memmap = total // MEMMAP_FRACTION
    room = int((config.memory - crashkernel_bytes(config.crashkernel)) * MEMMAP_SHARE)
    if memmap > room:
        need = _round_up(int(memmap / MEMMAP_SHARE) + crashkernel_bytes(config.crashkernel),
                         DEFAULT_MEMORY_BLOCK)
        raise UsageError(
            f"hot-adding {size_option(total)} needs {memmap // MiB} MiB of memmap (struct "
            f"pages: 1/{MEMMAP_FRACTION} of it) from boot memory, more than half of what "
            f"--memory {size_option(config.memory)} leaves beside crashkernel="
            f"{config.crashkernel}: the guest would refuse the memory or run out of it. "
            f"Raise --memory to at least {size_option(need)}, or put the memmap on the "
            f"hot-added memory itself with --append {MEMMAP_ON_MEMORY_ARG}=1")


def _round_up(value: int, unit: int) -> int:
    return -(-value // unit) * unit


#: QEMU 7.2 (Debian bookworm) aborts after vCPU unplugs; 10.0 (bookworm-backports) does not.
QEMU_SURVIVES_CPU_UNPLUG = (8, 0, 0)


def fit_for_plan(config: GuestConfig, plan: SwarmPlan) -> GuestConfig:
    """``config`` for a guest that will run ``plan``: one that unplugs vCPUs says so, and
    its TCG stays multi-threaded (``GuestConfig.cpu_unplug``)."""
    if plan.count(Action.UNPLUG_CPU) and not config.cpu_unplug:
        return replace(config, cpu_unplug=True)
    return config


def preflight(state: SwarmState) -> None:
    """Refuse or warn about what the running guest cannot do, before the first event."""
    guest, plan, qmp = state.guest, state.plan, state.guest.qmp
    plan.validate(onlining.memory_block_size(guest))
    state.remember_memdevs(qmp.execute("query-memory-devices"))
    hot_added = hp.cpu_indexes(qmp.execute("query-cpus-fast"))
    _check_named_devices(state, hot_added)
    if plan.count(Action.RESIZE_VIRTIO_MEM):
        onlining.ensure_virtio_mem_driver(guest)
    if plan.count(Action.UNPLUG_CPU) and guest.host_fit.tcg_threads.mode == "single":
        raise UsageError(f"this swarm unplugs vCPUs, and {UNPLUG_ABORTS}; this guest runs "
                         f"round-robin ({guest.host_fit.tcg_threads.reason}): boot it with "
                         "GuestConfig(cpu_unplug=True), or with tcg_threads=multi")
    if plan.count(Action.UNPLUG_CPU) and qemu_version() < QEMU_SURVIVES_CPU_UNPLUG:
        state.result.warnings.append(
            "QEMU older than 8 aborts (\"double free or corruption\") after vCPU unplugs, "
            "during the swarm or by the time a capture kernel boots: expect a harness "
            "error (bash ci/setup-host.sh installs QEMU 10 from bookworm-backports)")
    baseline = observe(guest, crash_hotplug=False)
    state.baseline_present = baseline.cpus_present
    state.offline_cpus |= left_offline(hot_added, baseline)
    state.transcript.add("observation", what="baseline", topology=baseline.to_json_dict())
    cpu_plugs = plan.count(Action.PLUG_CPU)
    room = len(baseline.cpus_possible) - len(baseline.cpus_present)
    if cpu_plugs and room < cpu_plugs - plan.count(Action.UNPLUG_CPU):
        raise HotplugNotHonoured(
            f"the guest's possible CPU mask has room for {room} more CPUs, the plan "
            f"hot-adds {cpu_plugs}: possible {baseline.cpus_possible}, present "
            f"{baseline.cpus_present} (on TCG, see the acpi_is_processor_usable quirk in "
            "KNOWLEDGE.md)")


def left_offline(hot_added: dict[str, int], baseline: Topology) -> set[str]:
    """Hot-added vCPUs present but offline before this swarm (an earlier swarm in the same
    guest left them so, ``--leave-offline``): this swarm leaves them as they are, and its
    checks expect them offline.  Without ACPI links none can be named."""
    guest_cpu = {index: cpu for cpu, index in baseline.cpu_firmware_ids}
    offline = set(baseline.cpus_present) - set(baseline.cpus_online)
    return {device for device, index in hot_added.items() if guest_cpu.get(index) in offline}


def _check_named_devices(state: SwarmState, existing_cpus: dict[str, int]) -> None:
    """Every device an unplug or a resize names exists (or the plan plugs it first)."""
    planned = {e.device for e in state.plan.events if e.action.adds}
    for e in state.plan.events:
        if e.action is Action.UNPLUG_DIMM and e.device not in planned \
                and e.device not in state.memdevs:
            raise UsageError(f"{e.label()}: no DIMM {e.device!r} in the machine")
        if e.action is Action.UNPLUG_CPU and e.device not in planned \
                and e.device not in existing_cpus:
            raise UsageError(f"{e.label()}: no hot-added vCPU {e.device!r} in the machine "
                             "(boot CPUs and CPU 0 are not unplugged)")
        if e.action is Action.RESIZE_VIRTIO_MEM:
            dev = state.memdevs.get(e.device)
            if dev is None or dev.kind != "virtio-mem":
                raise UsageError(
                    f"{e.label()}: the machine has no virtio-mem device {e.device!r}; boot "
                    f"with GuestConfig(qemu_args=virtio_mem_qemu_args({e.device!r}, SIZE))")
            if e.size is not None and dev.region_size is not None \
                    and e.size > dev.region_size:
                raise UsageError(f"{e.label()}: larger than the device's region "
                                 f"{size_option(dev.region_size)}")
