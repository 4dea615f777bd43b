"""Swarm plans: which devices, sizes, order and timing, as data.

A ``SwarmPlan`` is frozen ``SwarmEvent``s (plug/unplug a DIMM, plug/unplug a vCPU,
resize a virtio-mem device), grouped in phases, each with the delay that separates it
from the previous event (burst: 0; paced: an interval; waves: 0 inside a wave and a gap
between waves).  Plans come from command-line-like options (``SwarmSpec`` ->
``build_plan``, with ``parse_dimms`` / ``parse_virtio_mem`` / ``parse_timing`` for the
option strings) or from a seed (``random_plan``); the same seed always gives the same
plan.  ``checks.check_memory_budget`` refuses a plan the guest could not take before it
boots; ``runner.run_swarm`` carries one out.
"""

from __future__ import annotations

import enum
import random
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from ..errors import UsageError
from ..model import TimingKind, choose
from ..units import MiB, parse_size, size_option
from . import devices as hp

# == Plans ===============================================================================

class Action(enum.StrEnum):
    """What one swarm event does."""

    PLUG_DIMM = "plug-dimm"
    UNPLUG_DIMM = "unplug-dimm"
    PLUG_CPU = "plug-cpu"
    UNPLUG_CPU = "unplug-cpu"
    RESIZE_VIRTIO_MEM = "resize-virtio-mem"

    @property
    def adds(self) -> bool:
        """Plugs a new device (a virtio-mem resize is neither an add nor a removal)."""
        return self in (Action.PLUG_DIMM, Action.PLUG_CPU)

    @property
    def removes(self) -> bool:
        return self in (Action.UNPLUG_DIMM, Action.UNPLUG_CPU)


@dataclass(frozen=True)
class SwarmEvent:
    """One hot-plug action.

    ``size``: DIMM size, or the virtio-mem ``requested-size``.  ``delay``: seconds after
    the previous event of the same phase (the plan's timing, made explicit).  ``online``:
    for a vCPU plug, whether to online it as udev would.  ``cpu_slot``/``cpu_driver`` pin
    a vCPU plug to one slot (replay does); otherwise the lowest free slot is taken.
    """

    action: Action
    device: str
    size: int | None = None
    delay: float = 0.0
    phase: int = 0
    online: bool = True
    cpu_slot: tuple[tuple[str, int], ...] | None = None
    cpu_driver: str | None = None

    def label(self) -> str:
        size = f" {size_option(self.size)}" if self.size is not None else ""
        extra = "" if self.online or self.action is not Action.PLUG_CPU else " (left offline)"
        return f"{self.action.value} {self.device}{size}{extra}"

    def to_json_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["action"] = self.action.value
        d["cpu_slot"] = dict(self.cpu_slot) if self.cpu_slot is not None else None
        return d

    @classmethod
    def from_json_dict(cls, d: dict[str, Any]) -> SwarmEvent:
        slot = d.get("cpu_slot")
        return cls(action=Action(d["action"]), device=str(d["device"]), size=d.get("size"),
                   delay=float(d.get("delay", 0.0)), phase=int(d.get("phase", 0)),
                   online=bool(d.get("online", True)),
                   cpu_slot=tuple(sorted((str(k), int(v)) for k, v in slot.items()))
                   if slot else None,
                   cpu_driver=d.get("cpu_driver"))


@dataclass(frozen=True)
class Timing:
    """How events within a phase are spaced: ``burst`` (back to back), ``paced`` (every
    ``interval`` s) or ``waves`` (``wave_size`` back to back, ``interval`` s between waves)."""

    kind: TimingKind = TimingKind.BURST
    interval: float = 0.0
    wave_size: int = 4

    def __post_init__(self) -> None:
        object.__setattr__(self, "kind", choose(TimingKind, self.kind, "timing"))
        if self.interval < 0 or self.wave_size < 1:
            raise UsageError("timing interval must be >= 0 and wave size >= 1")

    def delays(self, n: int) -> tuple[float, ...]:
        """The delay before each of ``n`` events (the first is always 0)."""
        if self.kind == "burst":
            return (0.0,) * n
        if self.kind == "paced":
            return tuple(0.0 if i == 0 else self.interval for i in range(n))
        return tuple(self.interval if i and i % self.wave_size == 0 else 0.0 for i in range(n))

    def label(self) -> str:
        if self.kind == "burst":
            return "burst"
        if self.kind == "paced":
            return f"paced:{self.interval:g}"
        return f"waves:{self.wave_size}:{self.interval:g}"


def parse_timing(text: str) -> Timing:
    """``burst``, ``paced:0.2`` (seconds between events), ``waves:4:0.5`` (size, gap)."""
    kind, *rest = text.split(":")
    try:
        if kind == "burst" and not rest:
            return Timing()
        if kind == "paced" and len(rest) == 1:
            return Timing(TimingKind.PACED, float(rest[0]))
        if kind == "waves" and len(rest) == 2:
            return Timing(TimingKind.WAVES, float(rest[1]), int(rest[0]))
    except ValueError:
        pass
    raise UsageError(f"bad timing {text!r}: use burst, paced:SECONDS or waves:SIZE:SECONDS")


@dataclass(frozen=True)
class SwarmPlan:
    """Which devices, sizes, order and timing: everything a run needs except the guest."""

    events: tuple[SwarmEvent, ...]
    name: str = "swarm"
    seed: int | None = None
    timing: Timing = field(default_factory=Timing)

    @property
    def phases(self) -> list[tuple[SwarmEvent, ...]]:
        """Events grouped by phase, in phase order; the plan's order within each."""
        numbers = sorted({e.phase for e in self.events})
        return [tuple(e for e in self.events if e.phase == n) for n in numbers]

    def count(self, action: Action) -> int:
        return sum(1 for e in self.events if e.action is action)

    def summary(self) -> str:
        parts = []
        for action in Action:
            n = self.count(action)
            if n:
                parts.append(f"{n} {action.value}")
        seed = f", seed {self.seed}" if self.seed is not None else ""
        return (f"{self.name}: {', '.join(parts) or 'no events'} in {len(self.phases)} "
                f"phase(s), {self.timing.label()}{seed}")

    def validate(self, block_size: int | None = None) -> None:
        """Refuse plans the runner could not carry out (sizes, ids, order)."""
        plugged: dict[str, int] = {}
        for e in self.events:
            if e.action in (Action.PLUG_DIMM, Action.RESIZE_VIRTIO_MEM):
                if e.size is None:
                    raise UsageError(f"{e.label()}: needs a size")
                if block_size is not None and (e.size or e.action is Action.PLUG_DIMM):
                    hp.validate_memory_size(e.size, block_size, e.label())
            if e.action.adds:
                if e.device in plugged:
                    raise UsageError(f"{e.device} is plugged twice in plan {self.name}")
                plugged[e.device] = e.phase
            if e.action.removes and e.device in plugged and plugged[e.device] >= e.phase:
                raise UsageError(f"{e.label()} is in the same phase as its plug (or earlier); "
                                 "put it in a later phase so the plug can settle first")
            if e.delay < 0:
                raise UsageError(f"{e.label()}: negative delay")

    def to_json_dict(self) -> dict[str, Any]:
        return {"name": self.name, "seed": self.seed, "timing": asdict(self.timing),
                "events": [e.to_json_dict() for e in self.events]}

    @classmethod
    def from_json_dict(cls, d: dict[str, Any]) -> SwarmPlan:
        return cls(events=tuple(SwarmEvent.from_json_dict(e) for e in d["events"]),
                   name=str(d.get("name", "swarm")), seed=d.get("seed"),
                   timing=Timing(**d.get("timing", {})))


# -- plans from options ------------------------------------------------------------------

_DIMM_ITEM = re.compile(r"^\s*(?:(\d+)\s*[xX*]\s*)?(\S+)\s*$")


def parse_dimms(text: str) -> tuple[int, ...]:
    """``16x256M`` or ``4x256M,2x512M,1G`` -> one size per DIMM, in bytes."""
    sizes: list[int] = []
    for item in filter(None, (p.strip() for p in text.split(","))):
        m = _DIMM_ITEM.match(item)
        if not m:
            raise UsageError(f"bad DIMM list item {item!r}: use COUNTxSIZE, e.g. 16x256M")
        sizes += [parse_size(m.group(2))] * int(m.group(1) or 1)
    return tuple(sizes)


def parse_virtio_mem(text: str) -> tuple[int, int | None]:
    """``1G`` (grow to 1G) or ``1G:256M`` (grow to 1G, then shrink to 256M)."""
    grow, _, shrink = text.partition(":")
    return parse_size(grow), (parse_size(shrink) if shrink else None)


@dataclass(frozen=True)
class SwarmSpec:
    """A plan described the way the command line does (``build_plan`` turns it into one).

    Phase 0 adds ``dimms``, ``cpus`` hot-added vCPUs and grows ``virtio_mem``; phase 1
    (only when there is something to remove) unplugs ``unplug`` DIMMs and
    ``unplug_cpus`` vCPUs and shrinks virtio-mem to ``virtio_mem_shrink``.  Without a seed
    the order is fixed (DIMMs, vCPUs, virtio-mem; the last ones plugged are removed);
    with one, each phase is shuffled and the removed devices are drawn at random.
    """

    dimms: tuple[int, ...] = ()
    cpus: int = 0
    virtio_mem: int | None = None
    virtio_mem_shrink: int | None = None
    virtio_mem_id: str = "vmem0"
    unplug: int = 0
    unplug_cpus: int = 0
    online_cpus: bool = True
    seed: int | None = None
    timing: Timing = field(default_factory=Timing)
    prefix: str = ""
    name: str = "swarm"


def build_plan(spec: SwarmSpec) -> SwarmPlan:
    """The plan for CLI-like options (deterministic for a given spec and seed)."""
    if spec.unplug > len(spec.dimms):
        raise UsageError(f"cannot unplug {spec.unplug} DIMMs: only {len(spec.dimms)} planned")
    if spec.unplug_cpus > spec.cpus:
        raise UsageError(f"cannot unplug {spec.unplug_cpus} vCPUs: only {spec.cpus} hot-added")
    if spec.virtio_mem_shrink is not None and spec.virtio_mem is None:
        raise UsageError("a virtio-mem shrink needs a virtio-mem grow first")
    rng = random.Random(spec.seed) if spec.seed is not None else None
    p = spec.prefix
    adds = [SwarmEvent(Action.PLUG_DIMM, f"{p}dimm{i}", size) for i, size in enumerate(spec.dimms)]
    adds += [SwarmEvent(Action.PLUG_CPU, f"{p}vcpu{i}", online=spec.online_cpus)
             for i in range(spec.cpus)]
    if spec.virtio_mem is not None:
        adds.append(SwarmEvent(Action.RESIZE_VIRTIO_MEM, spec.virtio_mem_id, spec.virtio_mem))
    dimm_ids = [e.device for e in adds if e.action is Action.PLUG_DIMM]
    cpu_ids = [e.device for e in adds if e.action is Action.PLUG_CPU]
    if rng is not None:
        rng.shuffle(adds)
        gone_dimms = rng.sample(dimm_ids, spec.unplug)
        gone_cpus = rng.sample(cpu_ids, spec.unplug_cpus)
    else:
        gone_dimms = dimm_ids[len(dimm_ids) - spec.unplug:]
        gone_cpus = cpu_ids[len(cpu_ids) - spec.unplug_cpus:]
    removes = [SwarmEvent(Action.UNPLUG_DIMM, d, phase=1) for d in gone_dimms]
    removes += [SwarmEvent(Action.UNPLUG_CPU, c, phase=1) for c in gone_cpus]
    if spec.virtio_mem_shrink is not None:
        removes.append(SwarmEvent(Action.RESIZE_VIRTIO_MEM, spec.virtio_mem_id,
                                  spec.virtio_mem_shrink, phase=1))
    if rng is not None:
        rng.shuffle(removes)
    events = _with_delays(adds, spec.timing) + _with_delays(removes, spec.timing)
    plan = SwarmPlan(tuple(events), spec.name, spec.seed, spec.timing)
    plan.validate()
    return plan


def _with_delays(events: Sequence[SwarmEvent], timing: Timing) -> list[SwarmEvent]:
    return [replace(e, delay=d) for e, d in zip(events, timing.delays(len(events)), strict=True)]


def random_plan(
    seed: int,
    *,
    max_dimms: int = 16,
    max_cpus: int = 6,
    dimm_sizes: Sequence[int] = (128 * MiB, 256 * MiB, 512 * MiB),
    virtio_mem_max: int | None = None,
    virtio_mem_id: str = "vmem0",
    phases: int = 2,
    block_size: int = 128 * MiB,
    prefix: str = "",
) -> SwarmPlan:
    """A random mixed plan: counts, sizes, order, removals and timing all from ``seed``.

    Each phase adds some devices and removes some added in earlier phases; vCPU plugs
    never exceed ``max_cpus`` in total, DIMMs never ``max_dimms``.
    """
    rng = random.Random(seed)
    timing = rng.choice([
        Timing(), Timing(TimingKind.PACED, round(rng.uniform(0.01, 0.2), 3)),
        Timing(TimingKind.WAVES, round(rng.uniform(0.05, 0.5), 3), rng.randint(2, 6))])
    live_dimms: list[str] = []
    live_cpus: list[str] = []
    n_dimms = n_cpus = 0
    events: list[SwarmEvent] = []
    for phase in range(phases):
        batch: list[SwarmEvent] = []
        for _ in range(rng.randint(0, max(0, max_dimms - n_dimms))):
            size = rng.choice([s for s in dimm_sizes if s % block_size == 0] or [block_size])
            batch.append(SwarmEvent(Action.PLUG_DIMM, f"{prefix}dimm{n_dimms}", size, phase=phase))
            n_dimms += 1
        for _ in range(rng.randint(0, max(0, max_cpus - n_cpus))):
            batch.append(SwarmEvent(Action.PLUG_CPU, f"{prefix}vcpu{n_cpus}", phase=phase,
                                    online=rng.random() > 0.1))
            n_cpus += 1
        if phase:
            for d in rng.sample(live_dimms, rng.randint(0, len(live_dimms))):
                batch.append(SwarmEvent(Action.UNPLUG_DIMM, d, phase=phase))
                live_dimms.remove(d)
            for c in rng.sample(live_cpus, rng.randint(0, len(live_cpus))):
                batch.append(SwarmEvent(Action.UNPLUG_CPU, c, phase=phase))
                live_cpus.remove(c)
        if virtio_mem_max is not None:
            blocks = virtio_mem_max // block_size
            batch.append(SwarmEvent(Action.RESIZE_VIRTIO_MEM, virtio_mem_id,
                                    rng.randint(0, blocks) * block_size, phase=phase))
        live_dimms += [e.device for e in batch if e.action is Action.PLUG_DIMM]
        live_cpus += [e.device for e in batch if e.action is Action.PLUG_CPU]
        rng.shuffle(batch)
        events += _with_delays(batch, timing)
    plan = SwarmPlan(tuple(events), f"random-{seed}", seed, timing)
    plan.validate(block_size)
    return plan


def plan_from_options(*, dimms: str = "", add_cpus: int = 0, virtio_mem: str | None = None,
                      unplug: int = 0, unplug_cpus: int = 0, leave_offline: bool = False,
                      seed: int | None = None, timing: str = "burst",
                      random: bool = False) -> SwarmPlan:
    """The plan the command line's swarm options describe, spelled as they are there
    (``dimms="16x256M"``, ``virtio_mem="1G:256M"``, ``timing="paced:0.1"``): the command
    line and the pytest plugin's scenarios both build plans through this."""
    sizes = parse_dimms(dimms) if dimms else ()
    grow, shrink = parse_virtio_mem(virtio_mem) if virtio_mem else (None, None)
    spacing = parse_timing(timing)
    if random:
        if seed is None:
            raise UsageError("--random needs --seed")
        return random_plan(seed, max_dimms=len(sizes), max_cpus=add_cpus,
                           dimm_sizes=tuple(sorted(set(sizes))) or (256 * MiB,),
                           virtio_mem_max=grow)
    return build_plan(SwarmSpec(dimms=sizes, cpus=add_cpus, virtio_mem=grow,
                                virtio_mem_shrink=shrink, unplug=unplug,
                                unplug_cpus=unplug_cpus, online_cpus=not leave_offline,
                                seed=seed, timing=spacing))
