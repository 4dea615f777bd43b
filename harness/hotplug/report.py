"""What a swarm did: its options, the hook between events, per-phase reports, the result.

``SwarmResult.check()`` turns a swarm that did not settle into ``HotplugNotHonoured``
naming everything that is missing; ``summary()`` is the text the command line prints and
``to_json_dict()`` what goes into swarm.json and the transcript.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import HotplugNotHonoured
from ..model import UpdateStrategy, choose
from ..topology import MemoryDevice, Topology, TopologyDiff
from .klog import KlogCounts, KlogMarker
from .plan import SwarmEvent, SwarmPlan

if TYPE_CHECKING:
    from .contention import ContentionInjector, ContentionRun

@dataclass(frozen=True)
class SwarmOptions:
    """How to run a plan (recorded in the transcript, reused by replay)."""

    update: UpdateStrategy = UpdateStrategy.AUTO
    settle_timeout: float | None = None    # default: the guest's scaled ``settle`` timeout
    poll_interval: float = 0.05

    def __post_init__(self) -> None:
        object.__setattr__(self, "update", choose(UpdateStrategy, self.update, "--update"))


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
    update: UpdateStrategy               # the strategy actually used
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
