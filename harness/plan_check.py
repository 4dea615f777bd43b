"""Check a swarm plan against the guest it will run in, before QEMU starts.

What QEMU or the guest kernel would refuse only after a boot is refused here, with the
option to change: sizes that are not whole memory blocks, more DIMMs than slots, more
memory than ``maxmem``, and hot-added memory whose memmap would not fit in boot memory.

The memmap rule: the kernel describes every 4 KiB page with a 64-byte ``struct page``,
so hot-adding memory costs 1/64 of it in memmap, taken from memory the guest already has
(boot memory) unless ``memory_hotplug.memmap_on_memory`` puts it on the added memory
itself (CONFIG_MHP_MEMMAP_ON_MEMORY, set in every profile's kernel).  Seen here: 256
DIMMs of 256 MiB (64 GiB, 1 GiB of memmap) into a 1 GiB guest made ``add_memory`` fail
from the first DIMMs on and the OOM killer take the SSH server; with 4 GiB of boot memory
the same swarm verified accurate.
"""

from __future__ import annotations

from .cmdline import DEFAULT_MEMORY_BLOCK, MiB, format_size, parse_size
from .errors import UsageError
from .machine import GuestConfig
from .swarm import Action, SwarmPlan

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
            f"{format_size(config.memory)} boot memory plus {format_size(total)} hot-added "
            f"exceeds --maxmem {format_size(config.max_memory)}: raise --maxmem to at least "
            f"{format_size(_round_up(config.memory + total, 1 << 30))}")
    if memmap_on_memory(config.kernel_args):
        return
    memmap = total // MEMMAP_FRACTION
    room = int((config.memory - crashkernel_bytes(config.crashkernel)) * MEMMAP_SHARE)
    if memmap > room:
        need = _round_up(int(memmap / MEMMAP_SHARE) + crashkernel_bytes(config.crashkernel),
                         DEFAULT_MEMORY_BLOCK)
        raise UsageError(
            f"hot-adding {format_size(total)} needs {memmap // MiB} MiB of memmap (struct "
            f"pages: 1/{MEMMAP_FRACTION} of it) from boot memory, more than half of what "
            f"--memory {format_size(config.memory)} leaves beside crashkernel="
            f"{config.crashkernel}: the guest would refuse the memory or run out of it. "
            f"Raise --memory to at least {format_size(need)}, or put the memmap on the "
            f"hot-added memory itself with --append {MEMMAP_ON_MEMORY_ARG}=1")


def _round_up(value: int, unit: int) -> int:
    return -(-value // unit) * unit
