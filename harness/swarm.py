"""Hot-plug swarms: plans, the runner, transcripts and replay.

A ``SwarmPlan`` is data: frozen ``SwarmEvent``s (plug/unplug a DIMM, plug/unplug a vCPU,
resize a virtio-mem device), grouped in phases, each with the delay that separates it
from the previous event (burst: 0; paced: an interval; waves: 0 inside a wave and a gap
between waves).  Plans come from CLI-like options (``SwarmSpec`` -> ``build_plan``) or
from a seed (``random_plan``); the same seed always gives the same plan.

``run_swarm(guest, plan, ...)`` sends each phase's events, then *settles* it: it waits,
with one deadline, until QEMU reported every device done (``_OST`` / ``DEVICE_DELETED`` /
virtio-mem size), onlines hot-added vCPUs the way udev does, and polls the guest until
the topology oracle finds no mismatch.  When the deadline passes it says exactly what is
missing.  A hook runs between events and may stop the swarm there (the panic code
panics the guest at a chosen point inside a running swarm).

Every run writes a transcript (the plan, each action with the QMP commands it sent,
every QMP command, reply and event with monotonic timestamps, the guest observations)
that ``replay`` runs again on a fresh guest.
"""

from __future__ import annotations

import enum
import json
import random
import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import hotplug as hp
from .accel import qemu_version
from .cmdline import MiB, format_size, parse_size
from .contention import ContentionInjector, ContentionRun, ContentionSpec
from .errors import HarnessError, HotplugNotHonoured, KernelUnsuitable, UsageError
from .klog import KlogCounts, KlogMarker
from .model import UpdateStrategy, values
from .topology import MemoryDevice, Topology, TopologyDiff, diff_topology, expect, observe

if TYPE_CHECKING:
    from .machine import Guest, GuestConfig
    from .qmp import EventWaiter

TRANSCRIPT_FORMAT = "kdump-harness-swarm-transcript"
TRANSCRIPT_VERSION = 1

#: How the kdump image is kept current after hot-plug.
#: QEMU 7.2 (Debian bookworm) aborts after vCPU unplugs; 10.0 (bookworm-backports) does not.
QEMU_SURVIVES_CPU_UNPLUG = (8, 0, 0)

UPDATE_STRATEGIES = values(UpdateStrategy)


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
        size = f" {format_size(self.size)}" if self.size is not None else ""
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


TIMING_KINDS = ("burst", "paced", "waves")


@dataclass(frozen=True)
class Timing:
    """How events within a phase are spaced: ``burst`` (back to back), ``paced`` (every
    ``interval`` s) or ``waves`` (``wave_size`` back to back, ``interval`` s between waves)."""

    kind: str = "burst"
    interval: float = 0.0
    wave_size: int = 4

    def __post_init__(self) -> None:
        if self.kind not in TIMING_KINDS:
            raise UsageError(f"timing must be one of {', '.join(TIMING_KINDS)}, not {self.kind!r}")
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
            return Timing("paced", float(rest[0]))
        if kind == "waves" and len(rest) == 2:
            return Timing("waves", float(rest[1]), int(rest[0]))
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
    timing = rng.choice([Timing(), Timing("paced", round(rng.uniform(0.01, 0.2), 3)),
                         Timing("waves", round(rng.uniform(0.05, 0.5), 3), rng.randint(2, 6))])
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


# == Runner options, hooks, results =====================================================

@dataclass(frozen=True)
class SwarmOptions:
    """How to run a plan (recorded in the transcript, reused by replay)."""

    update: str = "auto"
    settle_timeout: float | None = None    # default: the guest's scaled ``settle`` timeout
    poll_interval: float = 0.05

    def __post_init__(self) -> None:
        if self.update not in UPDATE_STRATEGIES:
            raise UsageError(f"update strategy must be one of {', '.join(UPDATE_STRATEGIES)}, "
                             f"not {self.update!r}")


class HookAction(enum.Enum):
    """What a ``between`` hook tells the runner (``None`` means continue)."""

    CONTINUE = "continue"
    STOP = "stop"


@dataclass(frozen=True)
class SwarmProgress:
    """What a hook sees between events: ``done`` of ``total`` events sent so far."""

    done: int
    total: int
    event: SwarmEvent
    phase: int
    elapsed: float          # seconds since the swarm's first event


Hook = Callable[[SwarmProgress], "HookAction | None"]


def stop_after(k: int) -> Hook:
    """A hook that stops the swarm once ``k`` events have been sent."""
    def hook(progress: SwarmProgress) -> HookAction | None:
        return HookAction.STOP if progress.done >= k else None
    return hook


@dataclass
class PhaseReport:
    """One phase's timings (seconds from the phase's first event) and outcome."""

    phase: int
    events: int
    sent: float | None = None            # last event sent
    qmp_done: float | None = None        # every _OST / DEVICE_DELETED / size reported
    cpus_onlined: float | None = None    # hot-added vCPUs onlined
    settled: float | None = None         # the guest showed everything
    online_time: float = 0.0             # time spent writing cpuN/online
    polls: int = 0
    missing: list[str] = field(default_factory=list)   # what did not settle, if anything
    reload: dict[str, Any] | None = None

    @property
    def ok(self) -> bool:
        return self.settled is not None and not self.missing


@dataclass
class SwarmResult:
    """What a swarm did; ``check()`` raises ``HotplugNotHonoured`` if it did not settle."""

    plan: SwarmPlan
    options: SwarmOptions
    update: str                          # the strategy actually used
    events_sent: int = 0
    stopped_early: bool = False
    phases: list[PhaseReport] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    expected: Topology | None = None
    observed: Topology | None = None
    diff: TopologyDiff | None = None
    klog: KlogCounts | None = None
    contention: list[ContentionRun] = field(default_factory=list)
    reloads: list[dict[str, Any]] = field(default_factory=list)
    latencies: dict[str, float] = field(default_factory=dict)   # device op -> QMP latency
    cpu_map: dict[str, int] = field(default_factory=dict)       # vCPU device id -> guest cpu
    removed: list[MemoryDevice] = field(default_factory=list)
    transcript_path: Path | None = None
    klog_marker: KlogMarker | None = None
    injector: ContentionInjector | None = None
    duration: float = 0.0

    @property
    def settled(self) -> bool:
        return (not self.stopped_early and not self.failures
                and all(p.ok for p in self.phases) and (self.diff is None or self.diff.ok))

    @property
    def settle_times(self) -> list[float]:
        return [p.settled for p in self.phases if p.settled is not None]

    def check(self) -> None:
        """Raise ``HotplugNotHonoured`` naming everything that went wrong."""
        problems = list(self.failures)
        if self.diff is not None and not self.diff.ok:
            problems.append("final topology differs:\n" + self.diff.summary())
        if problems:
            raise HotplugNotHonoured(f"swarm {self.plan.name} did not settle",
                                     details="\n".join(problems))

    def to_json_dict(self) -> dict[str, Any]:
        return {
            "plan": self.plan.to_json_dict(), "options": asdict(self.options),
            "update": self.update, "events_sent": self.events_sent,
            "stopped_early": self.stopped_early, "settled": self.settled,
            "phases": [asdict(p) for p in self.phases], "failures": self.failures,
            "warnings": self.warnings,
            "diff": self.diff.to_json_dict() if self.diff else None,
            "klog": self.klog.to_json_dict() if self.klog else None,
            "contention": [c.to_json_dict() for c in self.contention],
            "reloads": self.reloads, "latencies": self.latencies, "cpu_map": self.cpu_map,
            "removed": [asdict(m) for m in self.removed], "duration": self.duration,
            "transcript": str(self.transcript_path) if self.transcript_path else None,
        }

    def summary(self) -> str:
        lines = [self.plan.summary(), f"  update strategy: {self.update}"]
        for p in self.phases:
            state = f"settled in {p.settled:.2f} s" if p.ok and p.settled is not None \
                else "did NOT settle"
            lines.append(f"  phase {p.phase}: {p.events} events, sent in "
                         f"{p.sent or 0:.2f} s, QMP done {_fmt(p.qmp_done)}, "
                         f"vCPUs onlined {_fmt(p.cpus_onlined)}, {state}")
            lines += [f"    missing: {m}" for m in p.missing]
            if p.reload:
                lines.append(f"    kdump reload: rc={p.reload.get('rc')} "
                             f"in {p.reload.get('duration', 0):.2f} s")
        if self.stopped_early:
            lines.append(f"  stopped by a hook after {self.events_sent} events")
        if self.klog is not None:
            lines.append(f"  kernel log: {self.klog.summary()}")
        lines += [f"  contention: {c.summary()}" for c in self.contention]
        lines += [f"  failure: {f}" for f in self.failures]
        lines += [f"  warning: {w}" for w in self.warnings]
        if self.diff is not None:
            lines.append("  final topology: " + ("matches QMP" if self.diff.ok
                                                 else "DIFFERS\n" + self.diff.summary()))
        return "\n".join(lines)


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f} s"


# == Transcripts =========================================================================

@dataclass
class SwarmTranscript:
    """A swarm run, replayable: plan, options, guest, timestamped entries, result.

    ``entries`` hold ``{"t": monotonic, "rel": seconds from the first event, "kind": ...}``
    where kind is ``action`` (one plan event, with the QMP commands it sent),
    ``qmp-command`` / ``qmp-reply`` / ``qmp-error`` / ``qmp-event``, ``observation``
    (a guest snapshot or settle poll), ``online`` (vCPUs onlined), ``reload`` or ``note``.
    """

    plan: SwarmPlan
    options: SwarmOptions
    contention: tuple[ContentionSpec, ...] = ()
    guest: dict[str, Any] = field(default_factory=dict)
    t0: float = 0.0
    wall0: float = 0.0
    entries: list[dict[str, Any]] = field(default_factory=list)
    result: dict[str, Any] | None = None

    def add(self, kind: str, t: float | None = None, **data: Any) -> dict[str, Any]:
        t = time.monotonic() if t is None else t
        entry = {"t": t, "rel": round(t - self.t0, 6) if self.t0 else None, "kind": kind, **data}
        self.entries.append(entry)
        return entry

    def actions(self) -> list[dict[str, Any]]:
        return [e for e in self.entries if e["kind"] == "action"]

    def to_json_dict(self) -> dict[str, Any]:
        return {"format": TRANSCRIPT_FORMAT, "version": TRANSCRIPT_VERSION,
                "plan": self.plan.to_json_dict(), "options": asdict(self.options),
                "contention": [c.to_json_dict() for c in self.contention],
                "guest": self.guest, "t0": self.t0, "wall0": self.wall0,
                "entries": sorted(self.entries, key=lambda e: e["t"]), "result": self.result}

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_json_dict(), indent=1, default=str) + "\n")

    @classmethod
    def from_json_dict(cls, d: dict[str, Any]) -> SwarmTranscript:
        if d.get("format") != TRANSCRIPT_FORMAT:
            raise UsageError("not a swarm transcript (no "
                             f"\"format\": \"{TRANSCRIPT_FORMAT}\")")
        if int(d.get("version", 0)) > TRANSCRIPT_VERSION:
            raise UsageError(f"transcript version {d['version']} is newer than this harness "
                             f"reads ({TRANSCRIPT_VERSION})")
        return cls(plan=SwarmPlan.from_json_dict(d["plan"]),
                   options=SwarmOptions(**d.get("options", {})),
                   contention=tuple(ContentionSpec.from_json_dict(c)
                                    for c in d.get("contention", ())),
                   guest=dict(d.get("guest", {})), t0=float(d.get("t0", 0.0)),
                   wall0=float(d.get("wall0", 0.0)), entries=list(d.get("entries", [])),
                   result=d.get("result"))

    @classmethod
    def load(cls, path: Path) -> SwarmTranscript:
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise UsageError(f"cannot read transcript {path}: {exc}") from exc
        return cls.from_json_dict(data)


def guest_config_from_transcript(transcript: SwarmTranscript, **overrides: Any) -> GuestConfig:
    """The recorded guest configuration (tuples restored), with ``overrides`` applied."""
    from .machine import GuestConfig

    recorded = dict(transcript.guest.get("config", {}))
    known = {f.name: f for f in fields(GuestConfig)}
    values: dict[str, Any] = {}
    for key, value in recorded.items():
        if key in known:
            values[key] = tuple(value) if isinstance(value, list) else value
    values.update(overrides)
    return GuestConfig(**values)


def replay_plan(transcript: SwarmTranscript, *, timing: str = "plan") -> SwarmPlan:
    """The recorded plan with each vCPU plug pinned to the slot it took.

    ``timing="recorded"`` replaces each event's delay with the gap actually measured
    between sends, instead of the plan's nominal timing.
    """
    if timing not in ("plan", "recorded"):
        raise UsageError(f"replay timing must be plan or recorded, not {timing!r}")
    actions = {int(a["index"]): a for a in transcript.actions()}
    events = list(transcript.plan.events)
    last_rel: dict[int, float] = {}
    for i, event in enumerate(events):
        action = actions.get(i)
        if action is None:
            continue
        if event.action is Action.PLUG_CPU and event.cpu_slot is None:
            for cmd in action.get("qmp", []):
                if cmd.get("execute") == "device_add":
                    args = dict(cmd.get("arguments", {}))
                    driver = str(args.pop("driver"))
                    args.pop("id", None)
                    event = replace(event, cpu_driver=driver,
                                    cpu_slot=tuple(sorted((k, int(v)) for k, v in args.items())))
        if timing == "recorded" and action.get("rel") is not None:
            rel = float(action["rel"])
            prev = last_rel.get(event.phase)
            event = replace(event, delay=0.0 if prev is None else max(0.0, rel - prev))
            last_rel[event.phase] = rel
        events[i] = event
    return replace(transcript.plan, events=tuple(events))


def action_signature(action: dict[str, Any]) -> tuple[Any, ...]:
    """What must be equal for two runs to have done the same thing at one step."""
    cmds = tuple((c.get("execute"), json.dumps(c.get("arguments", {}), sort_keys=True))
                 for c in action.get("qmp", []))
    return (action.get("action"), action.get("device"), action.get("size"), cmds)


def compare_actions(original: Sequence[dict[str, Any]],
                    replayed: Sequence[dict[str, Any]]) -> list[str]:
    """Differences between two runs' actions (empty: the replay did the same thing)."""
    out: list[str] = []
    if len(original) != len(replayed):
        out.append(f"the original sent {len(original)} events, the replay {len(replayed)}")
    for a, b in zip(original, replayed, strict=False):
        if action_signature(a) != action_signature(b):
            out.append(f"event {a.get('index')}: original {action_signature(a)}, "
                       f"replay {action_signature(b)}")
    return out


# == The runner ==========================================================================

def resolve_update(requested: str, guest: Guest) -> str:
    """``auto`` -> ``kernel`` where crash hot-plug works (crash_hotplug reads 1), else
    ``reload``; anything -> ``none`` when no capture kernel is loaded at all.

    Asking for ``kernel`` where the kernel cannot update the loaded image is refused
    (``KernelUnsuitable``) before anything is plugged: the run would only prove that.
    """
    if guest.config.kexec == "none":
        return "none"
    updatable = guest.readiness.get("crash_hotplug_memory").strip()
    if requested == "kernel" and updatable != "1":
        why = ("the kernel has no crash hot-plug (no /sys/devices/system/memory/crash_hotplug: "
               "CONFIG_CRASH_HOTPLUG is unset or the kernel predates 6.6)" if not updatable else
               f"crash_hotplug reads {updatable}: the loaded image is not kernel-updatable "
               "(kexec_load without --hotplug?)")
        raise KernelUnsuitable(f"--update kernel: {why}; use --update reload (what a distro "
                               "udev rule does) or --update none --expect stale (a negative "
                               "control)")
    if requested != "auto":
        return requested
    return "kernel" if updatable == "1" else "reload"


def run_swarm(
    guest: Guest,
    plan: SwarmPlan,
    *,
    options: SwarmOptions | None = None,
    between: Hook | None = None,
    stop_after_events: int | None = None,
    contention: Sequence[ContentionSpec] | ContentionInjector = (),
    transcript_path: Path | None = None,
) -> SwarmResult:
    """Run ``plan`` on ``guest``: send, settle each phase, snapshot, scan the kernel log.

    ``between(progress)`` runs after every event; returning ``HookAction.STOP`` (or
    reaching ``stop_after_events``) ends the swarm at once: no settling, no final
    snapshot, contention left running (``result.injector``) so the caller can panic the
    guest mid-swarm.  Guest-side failures (a refusal, a phase that did not settle) are
    recorded in the result (``result.check()`` raises them); harness failures raise.
    The transcript is written to ``transcript_path`` (default: in the guest's workdir)
    whatever happens.
    """
    runner = _Runner(guest, plan, options or SwarmOptions(), between, stop_after_events,
                     contention, transcript_path)
    return runner.run()


class _Runner:
    def __init__(self, guest: Guest, plan: SwarmPlan, options: SwarmOptions,
                 between: Hook | None, stop_after_events: int | None,
                 contention: Sequence[ContentionSpec] | ContentionInjector,
                 transcript_path: Path | None) -> None:
        self.guest = guest
        self.qmp = guest.qmp
        self.plan = plan
        self.options = options
        self.between = between
        self.stop_after_events = stop_after_events
        if isinstance(contention, ContentionInjector):
            self.injector: ContentionInjector | None = contention
        else:
            self.injector = ContentionInjector(guest, contention) if contention else None
        self.transcript_path = transcript_path or guest.workdir / f"{plan.name}-transcript.json"
        self.update = resolve_update(options.update, guest)
        self.result = SwarmResult(plan, options, self.update, transcript_path=self.transcript_path)
        self.transcript = SwarmTranscript(
            plan, options, self.injector.specs if self.injector else (),
            guest={"profile": getattr(guest.image, "profile", None),
                   "kernel_release": getattr(guest.image, "kernel_release", None),
                   "accel": guest.accel.name, "config": asdict(guest.config)})
        self.tracker = hp.HotplugTracker()
        self.onliner = hp.CpuOnliner(guest)
        self.settle_timeout = options.settle_timeout or guest.timeouts.settle
        self.memdevs: dict[str, MemoryDevice] = {}
        self.free_slots: list[hp.FreeCpuSlot] | None = None
        self.offline_cpus: set[str] = set()        # vCPU device ids to leave offline
        self.cpu_ids: set[str] = set()             # vCPU device ids plugged by this run
        self.cpu_unplugs: set[str] = set()         # vCPU device ids unplugged by this run
        self.baseline_present: tuple[int, ...] = ()
        self.qmp_mark = 0
        self.done = 0
        # By identity: two events may be equal (e.g. the same resize twice).
        self.index_of = {id(e): i for i, e in enumerate(plan.events)}

    # -- top level --------------------------------------------------------------------
    def run(self) -> SwarmResult:
        started = time.monotonic()
        self.qmp_mark = len(self.qmp.transcript.entries)
        try:
            self._prepare()
            marker = KlogMarker(self.guest, self.plan.name)
            marker.begin()
            self.result.klog_marker = marker
            with self.qmp.listen(*hp.HOTPLUG_EVENTS) as events:
                stopped = self._run_phases(events)
            if stopped:
                self.result.stopped_early = True
                self.result.injector = self.injector
                return self.result
            if self.injector is not None:
                self.result.contention = self.injector.stop()
            expected = expect(self.guest)
            observed = observe(self.guest, crash_hotplug=True)
            self.transcript.add("observation", what="final", topology=observed.to_json_dict())
            self.result.expected, self.result.observed = expected, observed
            self.result.diff = self._diff(expected, observed)
            try:
                self.result.klog = marker.collect()
            except HarnessError as exc:
                # The counts are evidence, not the verdict: say so rather than fail.
                self.result.warnings.append(f"kernel log not scanned: {exc.message}")
        except BaseException as exc:
            self.onliner.close()
            self.transcript.add("note", what="error", error=repr(exc))
            if self.injector is not None and not self.injector.stopped:
                self._stop_contention_quietly()
            raise
        finally:
            self.result.duration = time.monotonic() - started
            if not self.result.stopped_early:
                self.onliner.close()
            for batch in self.onliner.batches:
                self.transcript.add("online", t=batch["started"], **{
                    k: v for k, v in batch.items() if k != "started"})
            self._write_transcript()
        return self.result

    def _stop_contention_quietly(self) -> None:
        assert self.injector is not None
        try:
            self.result.contention = self.injector.stop(timeout=self.guest.timeouts.command)
        except HarnessError:
            pass  # the original error is the one to report; the transcript notes this one

    def _write_transcript(self) -> None:
        t = self.transcript
        for entry in self.qmp.transcript.entries[self.qmp_mark:]:
            t.entries.append({"t": entry["t"],
                              "rel": round(entry["t"] - t.t0, 6) if t.t0 else None,
                              "kind": f"qmp-{entry['kind']}", "msg": entry["msg"],
                              **({"elapsed": entry["elapsed"]} if "elapsed" in entry else {})})
        t.result = self.result.to_json_dict()
        try:
            t.save(self.transcript_path)
        except OSError as exc:
            self.result.failures.append(f"could not write the transcript: {exc}")

    # -- before the first event --------------------------------------------------------
    def _prepare(self) -> None:
        block_size = hp.memory_block_size(self.guest)
        self.plan.validate(block_size)
        memory = self.qmp.execute("query-memory-devices")
        self._remember_memdevs(memory)
        existing_cpus = hp.cpu_indexes(self.qmp.execute("query-cpus-fast"))
        planned = {e.device for e in self.plan.events if e.action.adds}
        for e in self.plan.events:
            if e.action is Action.UNPLUG_DIMM and e.device not in planned \
                    and e.device not in self.memdevs:
                raise UsageError(f"{e.label()}: no DIMM {e.device!r} in the machine")
            if e.action is Action.UNPLUG_CPU and e.device not in planned \
                    and e.device not in existing_cpus:
                raise UsageError(f"{e.label()}: no hot-added vCPU {e.device!r} in the machine "
                                 "(boot CPUs and CPU 0 are not unplugged)")
            if e.action is Action.RESIZE_VIRTIO_MEM:
                dev = self.memdevs.get(e.device)
                if dev is None or dev.kind != "virtio-mem":
                    raise UsageError(
                        f"{e.label()}: the machine has no virtio-mem device {e.device!r}; boot "
                        f"with GuestConfig(qemu_args=virtio_mem_qemu_args({e.device!r}, SIZE))")
                if e.size is not None and dev.region_size is not None \
                        and e.size > dev.region_size:
                    raise UsageError(f"{e.label()}: larger than the device's region "
                                     f"{format_size(dev.region_size)}")
        if self.plan.count(Action.RESIZE_VIRTIO_MEM):
            hp.ensure_virtio_mem_driver(self.guest)
        if self.plan.count(Action.UNPLUG_CPU) and qemu_version() < QEMU_SURVIVES_CPU_UNPLUG:
            self.result.warnings.append(
                "QEMU older than 8 aborts (\"double free or corruption\") after vCPU unplugs, "
                "during the swarm or by the time a capture kernel boots: expect a harness "
                "error (bash ci/setup-host.sh installs QEMU 10 from bookworm-backports)")
        baseline = observe(self.guest, crash_hotplug=False)
        self.baseline_present = baseline.cpus_present
        self.transcript.add("observation", what="baseline", topology=baseline.to_json_dict())
        cpu_plugs = self.plan.count(Action.PLUG_CPU)
        room = len(baseline.cpus_possible) - len(baseline.cpus_present)
        if cpu_plugs and room < cpu_plugs - self.plan.count(Action.UNPLUG_CPU):
            raise HotplugNotHonoured(
                f"the guest's possible CPU mask has room for {room} more CPUs, the plan "
                f"hot-adds {cpu_plugs}: possible {baseline.cpus_possible}, present "
                f"{baseline.cpus_present} (on TCG, see the acpi_is_processor_usable quirk in "
                "KNOWLEDGE.md)")
        if self.injector is not None:
            self.injector.prepare()

    def _remember_memdevs(self, reply: Sequence[dict[str, Any]]) -> None:
        from .topology import expected_from_qmp

        topo = expected_from_qmp(reply, [], [], boot_memory=None, taken_at=time.time())
        for dev in topo.memory_devices:
            self.memdevs[dev.id] = dev

    # -- sending ----------------------------------------------------------------------
    def _run_phases(self, events: EventWaiter) -> bool:
        lead = self.injector.lead if self.injector else 0.0
        t0 = time.monotonic() + lead
        if self.injector is not None:
            self.injector.schedule(t0)
            if self.injector.synced:
                # The first event waits for the guest to hold the kexec lock (see
                # contention.py): a fixed head start depends on the host's load.
                self.injector.wait_synced(self.guest.timeouts.kdump_load)
                t0 = max(t0, time.monotonic() + self.injector.sync_delay)
                self.injector.rebase(t0)
        self.transcript.t0 = t0
        self.transcript.wall0 = time.time() + (t0 - time.monotonic())
        self._wait_until(t0, events)
        total = len(self.plan.events)
        for phase_events in self.plan.phases:
            phase = phase_events[0].phase
            report = PhaseReport(phase, len(phase_events))
            self.result.phases.append(report)
            start = time.monotonic()
            at = start
            self.free_slots = None
            for event in phase_events:
                at = max(at + event.delay, time.monotonic()) if event.delay else at
                self._wait_until(at, events)
                self._send(event)
                self._pump(events)
                self.done += 1
                self.result.events_sent = self.done
                if self.update == "reload-each":
                    until = time.monotonic() + self.settle_timeout
                    self._settle_ops([event.device], events, until, report)
                    self.onliner.wait_idle(max(0.0, until - time.monotonic()))
                    self._reload(f"after {event.label()}", report=None)
                progress = SwarmProgress(self.done, total, event, phase,
                                         time.monotonic() - self.transcript.t0)
                verdict = self.between(progress) if self.between else None
                if verdict is HookAction.STOP or (self.stop_after_events is not None
                                                  and self.done >= self.stop_after_events):
                    self.transcript.add("note", what="stopped", after=self.done)
                    return True
            report.sent = time.monotonic() - start
            self._settle_phase(phase_events, events, report, start)
            if self.update == "reload":
                report.reload = self._reload(f"after phase {phase}", report=report)
        return False

    def _wait_until(self, when: float, events: EventWaiter) -> None:
        """Pace the plan: pump events until ``when`` (never used to wait for the guest)."""
        while True:
            self._pump(events)
            left = when - time.monotonic()
            if left <= 0:
                return
            time.sleep(min(left, 0.01))

    def _send(self, event: SwarmEvent) -> None:
        index = self.index_of[id(event)]
        mark = len(self.qmp.transcript.entries)
        sent_at = time.monotonic()
        entry = self.transcript.add("action", t=sent_at, index=index, phase=event.phase,
                                    action=event.action.value, device=event.device,
                                    size=event.size)
        try:
            self._dispatch(event, sent_at)
        finally:
            entry["qmp"] = [e["msg"] for e in self.qmp.transcript.entries[mark:]
                            if e["kind"] == "command"
                            and e["msg"].get("execute") not in ("query-hotpluggable-cpus",
                                                                "query-memory-devices")]
            entry["t_end"] = time.monotonic()

    def _dispatch(self, event: SwarmEvent, at: float) -> None:
        qmp, dev = self.qmp, event.device
        if event.action is Action.PLUG_DIMM:
            assert event.size is not None
            self.tracker.sent(dev, hp.OpKind.PLUG, at=at)
            hp.plug_dimm(qmp, dev, event.size)
        elif event.action is Action.UNPLUG_DIMM:
            if dev not in self.memdevs:
                self._remember_memdevs(qmp.execute("query-memory-devices"))
            self.tracker.sent(dev, hp.OpKind.UNPLUG, at=at)
            hp.unplug(qmp, dev)
        elif event.action is Action.PLUG_CPU:
            slot = self._cpu_slot(event)
            self.tracker.sent(dev, hp.OpKind.PLUG, at=at)
            hp.plug_cpu(qmp, dev, slot)
            self.cpu_ids.add(dev)
            if not event.online:
                self.offline_cpus.add(dev)
        elif event.action is Action.UNPLUG_CPU:
            self.tracker.sent(dev, hp.OpKind.UNPLUG, at=at)
            self.cpu_unplugs.add(dev)
            hp.unplug(qmp, dev)
        elif event.action is Action.RESIZE_VIRTIO_MEM:
            assert event.size is not None
            self.tracker.sent(dev, hp.OpKind.RESIZE, target_size=event.size, at=at)
            hp.resize_virtio_mem(qmp, dev, event.size)

    def _cpu_slot(self, event: SwarmEvent) -> hp.FreeCpuSlot:
        if self.free_slots is None:
            self.free_slots = hp.free_cpu_slots(self.qmp.execute("query-hotpluggable-cpus"))
        if event.cpu_slot is not None:
            pinned = hp.FreeCpuSlot(event.cpu_driver or "", event.cpu_slot)
            for slot in self.free_slots:
                if slot.props == pinned.props:
                    self.free_slots.remove(slot)
                    return slot if not event.cpu_driver else pinned
            raise HotplugNotHonoured(f"{event.label()}: vCPU slot {pinned.label()} is not free")
        if not self.free_slots:
            raise UsageError(f"{event.label()}: no free vCPU slot left (raise maxcpus)")
        return self.free_slots.pop(0)

    def _pump(self, events: EventWaiter) -> None:
        for event in events.drain():
            op = self.tracker.feed(event)
            if op is None:
                continue
            if op.refused and op.describe() not in self.result.failures:
                self.result.failures.append(op.describe())
            info = event.get("data", {}).get("info", {})
            if (op.kind is hp.OpKind.PLUG and op.done_at is not None
                    and event.get("event") == hp.OST_EVENT and info.get("slot-type") == "CPU"
                    and op.device in self.cpu_ids and op.device not in self.offline_cpus):
                # The _OST names the slot by cpu-index: online it now, as udev would.
                self.onliner.submit(int(info["slot"]))

    # -- settling ---------------------------------------------------------------------
    def _settle_ops(self, devices: Iterable[str], events: EventWaiter, deadline: float,
                    report: PhaseReport | None) -> list[hp.DeviceOp]:
        """Wait until QEMU reported every op on ``devices`` done; returns what is left."""
        devices = list(devices)
        next_query = 0.0
        while True:
            self._pump(events)
            pending = self.tracker.pending(devices)
            polled = [op for op in pending if op.kind is hp.OpKind.RESIZE
                      or op.device in self.cpu_unplugs]
            if polled and time.monotonic() >= next_query:
                self._poll_ops(polled)
                next_query = time.monotonic() + 0.1
                pending = self.tracker.pending(devices)
            if not pending or time.monotonic() >= deadline:
                return pending
            self._check_alive("waiting for " + ", ".join(op.device for op in pending))
            time.sleep(0.01)

    def _check_alive(self, doing: str) -> None:
        """Fail at once, not at the deadline, when QEMU has gone or the guest showed on
        its console that it panicked, ran out of memory or refused memory."""
        self.guest.check_health(doing)

    def _poll_ops(self, ops: Sequence[hp.DeviceOp]) -> None:
        """Ask QEMU directly where its events are not enough.

        MEMORY_DEVICE_SIZE_CHANGE is rate-limited (one a second per device); and QEMU 7.2
        under TCG sends DEVICE_DELETED for an unplugged vCPU's lapic child but not always
        for the vCPU itself, though the vCPU is gone from query-cpus-fast.
        """
        if any(op.kind is hp.OpKind.RESIZE for op in ops):
            self._remember_memdevs(self.qmp.execute("query-memory-devices"))
        present: dict[str, int] | None = None
        for op in ops:
            if op.kind is hp.OpKind.RESIZE:
                dev = self.memdevs.get(op.device)
                if dev is not None:
                    op.last_size = dev.size
                    if dev.size == op.target_size:
                        op.done_at = time.monotonic()
            else:
                if present is None:
                    present = hp.cpu_indexes(self.qmp.execute("query-cpus-fast"))
                if op.device not in present:
                    op.done_at = time.monotonic()

    def _settle_phase(self, phase_events: Sequence[SwarmEvent], events: EventWaiter,
                      report: PhaseReport, start: float) -> None:
        # One deadline for the whole settle: QMP completion, onlining, the guest's view.
        deadline = time.monotonic() + self.settle_timeout
        devices = [e.device for e in phase_events]
        left = self._settle_ops(devices, events, deadline, report)
        report.qmp_done = time.monotonic() - start
        if left:
            report.missing += [op.describe() for op in left]
        online_before = self.onliner.seconds
        if not self.onliner.wait_idle(max(0.0, deadline - time.monotonic())):
            report.missing.append("onlining hot-added vCPUs did not finish")
        report.online_time += self.onliner.seconds - online_before
        if any(e.action is Action.PLUG_CPU for e in phase_events):
            report.cpus_onlined = time.monotonic() - start
        for index, why in sorted(self.onliner.failed.items()):
            self.transcript.add("note", what="online failed", cpu_index=index, error=why)
        for event in phase_events:
            op = self.tracker.ops.get(event.device)
            if op is not None and op.done_at is not None:
                key = f"phase {report.phase} {event.device} {op.kind.value}"
                self.result.latencies[key] = round(op.done_at - op.sent_at, 4)
                if event.action is Action.UNPLUG_DIMM:
                    self._dimm_removed(event.device)
        self._settle_guest(report, start, deadline)
        if report.missing:
            self.result.failures.append(f"phase {report.phase} did not settle within "
                                        f"{self.settle_timeout:.0f} s: "
                                        + "; ".join(report.missing))

    def _dimm_removed(self, device: str) -> None:
        dev = self.memdevs.pop(device, None)
        if dev is not None:
            self.result.removed.append(dev)
        try:
            hp.drop_backend(self.qmp, device)
        except HarnessError as exc:
            self.transcript.add("note", what="object-del failed", device=device,
                                error=exc.message)

    def _settle_guest(self, report: PhaseReport, start: float, deadline: float) -> None:
        """Poll the guest (onlining hot-added vCPUs) until the oracle finds no mismatch."""
        attempted: dict[int, int] = {}
        diff: TopologyDiff | None = None
        while True:
            expected = expect(self.guest)
            observed = observe(self.guest, crash_hotplug=False)
            report.polls += 1
            to_online = self._cpus_to_online(expected, observed)
            to_online = [c for c in to_online if attempted.get(c, 0) < 2]
            if to_online:
                for c in to_online:
                    attempted[c] = attempted.get(c, 0) + 1
                try:
                    took = hp.online_cpus(self.guest, to_online)
                except HotplugNotHonoured as exc:
                    took = 0.0
                    self.transcript.add("note", what="online failed", cpus=to_online,
                                        error=str(exc))
                report.online_time += took
                report.cpus_onlined = time.monotonic() - start
                self.transcript.add("online", cpus=to_online, seconds=took, fallback=True)
                continue
            diff = self._diff(expected, observed)
            self.transcript.add("observation", what=f"settle phase {report.phase}",
                                mismatches=[str(m) for m in diff.mismatches])
            if not diff.ok:
                self._check_alive(f"settling phase {report.phase}")
            if diff.ok:
                report.settled = time.monotonic() - start
                self.transcript.add("observation", what=f"settled phase {report.phase}",
                                    topology=observed.to_json_dict())
                return
            if time.monotonic() >= deadline:
                report.missing += [str(m) for m in diff.mismatches]
                self.transcript.add("observation", what=f"unsettled phase {report.phase}",
                                    topology=observed.to_json_dict())
                return
            time.sleep(self.options.poll_interval)

    def _cpus_to_online(self, expected: Topology, observed: Topology) -> list[int]:
        """Guest CPUs behind this run's vCPU plugs that are present, offline and wanted
        (a fallback: the onliner normally got them all as their ``_OST`` arrived)."""
        present, online = set(observed.cpus_present), set(observed.cpus_online)
        by_path = {s.qom_path: s.cpu_index for s in expected.cpu_slots if s.qom_path}
        by_index = {index: cpu for cpu, index in observed.cpu_firmware_ids}
        want = [d for d in self.cpu_ids if d not in self.offline_cpus]
        if observed.cpu_firmware_ids:
            cpus = []
            for device in want:
                index = by_path.get(hp.peripheral_path(device))
                cpu = by_index.get(index) if index is not None else None
                if cpu is not None:
                    self.result.cpu_map[device] = cpu
                    if cpu in present and cpu not in online:
                        cpus.append(cpu)
            return sorted(cpus)
        # No ACPI object links: online new CPUs, keeping as many offline as were asked for.
        new = sorted(present - set(self.baseline_present) - online)
        keep_offline = len([d for d in self.offline_cpus
                            if hp.peripheral_path(d) in by_path])
        return new[:max(0, len(new) - keep_offline)]

    def _diff(self, expected: Topology, observed: Topology) -> TopologyDiff:
        by_path = {s.qom_path: s.cpu_index for s in expected.cpu_slots if s.qom_path}
        offline = {by_path[hp.peripheral_path(d)] for d in self.offline_cpus
                   if by_path.get(hp.peripheral_path(d)) is not None}
        return diff_topology(expected, observed, removed=self.result.removed,
                             cpus_offline={i for i in offline if i is not None})

    # -- kdump updates ----------------------------------------------------------------
    def _reload(self, why: str, *, report: PhaseReport | None) -> dict[str, Any]:
        mode = self.guest.config.kexec
        started = time.monotonic()
        res = self.guest.run(f"/harness/kdump-load {mode}; echo rc=$?; "
                             "cat /sys/kernel/kexec_crash_loaded", timeout=self.settle_timeout)
        out = res.stdout.strip().splitlines()
        rc_line = next((line for line in reversed(out) if line.startswith("rc=")), "rc=?")
        record: dict[str, Any] = {"why": why, "mode": mode, "rc": rc_line[3:],
                                  "loaded": out[-1] if out else "",
                                  "duration": time.monotonic() - started}
        self.result.reloads.append(record)
        self.transcript.add("reload", what=why, record=record)
        if record["rc"] != "0" or record["loaded"] != "1":
            self.result.failures.append(f"kdump reload {why} failed (rc={record['rc']}, "
                                        f"kexec_crash_loaded={record['loaded']})")
        return record


# == Replay ==============================================================================

@dataclass
class ReplayResult:
    """A replayed swarm and how its actions compare with the original's."""

    result: SwarmResult
    differences: list[str]

    @property
    def same_actions(self) -> bool:
        return not self.differences


def replay(guest: Guest, transcript: SwarmTranscript, *, timing: str = "plan",
           transcript_path: Path | None = None, between: Hook | None = None) -> ReplayResult:
    """Run a recorded swarm again on ``guest`` and compare the actions taken."""
    plan = replay_plan(transcript, timing=timing)
    result = run_swarm(guest, plan, options=transcript.options, between=between,
                       contention=transcript.contention, transcript_path=transcript_path)
    new = SwarmTranscript.load(result.transcript_path) if result.transcript_path else None
    replayed = new.actions() if new else []
    return ReplayResult(result, compare_actions(transcript.actions(), replayed))
