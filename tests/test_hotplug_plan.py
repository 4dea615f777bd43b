"""Swarm plans: CLI-like specs, seeds, timing, validation, JSON, replay pinning."""

from __future__ import annotations

import pytest

from harness.errors import UsageError
from harness.hotplug import (
    Action,
    SwarmEvent,
    SwarmOptions,
    SwarmPlan,
    SwarmSpec,
    SwarmTranscript,
    Timing,
    build_plan,
    compare_actions,
    parse_dimms,
    parse_timing,
    parse_virtio_mem,
    random_plan,
    replay_plan,
)
from harness.units import GiB, MiB


def test_parse_dimms() -> None:
    assert parse_dimms("16x256M") == (256 * MiB,) * 16
    assert parse_dimms("2x256M, 1x1G,512M") == (256 * MiB, 256 * MiB, GiB, 512 * MiB)
    with pytest.raises(UsageError):
        parse_dimms("16y256M")


def test_parse_virtio_mem() -> None:
    assert parse_virtio_mem("1G") == (GiB, None)
    assert parse_virtio_mem("1G:256M") == (GiB, 256 * MiB)


@pytest.mark.parametrize("text,timing", [
    ("burst", Timing()),
    ("paced:0.2", Timing("paced", 0.2)),
    ("waves:4:0.5", Timing("waves", 0.5, 4)),
])
def test_parse_timing(text: str, timing: Timing) -> None:
    assert parse_timing(text) == timing
    assert parse_timing(timing.label()) == timing


@pytest.mark.parametrize("text", ["paced", "waves:4", "sometimes", "paced:x"])
def test_parse_timing_rejects(text: str) -> None:
    with pytest.raises(UsageError, match="timing"):
        parse_timing(text)


def test_timing_delays() -> None:
    assert Timing().delays(3) == (0.0, 0.0, 0.0)
    assert Timing("paced", 0.1).delays(3) == (0.0, 0.1, 0.1)
    assert Timing("waves", 0.5, 2).delays(5) == (0.0, 0.0, 0.5, 0.0, 0.5)


def test_build_plan_without_seed_is_canonical() -> None:
    plan = build_plan(SwarmSpec(dimms=(256 * MiB,) * 16, cpus=6, unplug=8))
    assert [p[0].phase for p in plan.phases] == [0, 1]
    adds, removes = plan.phases
    assert [e.device for e in adds[:3]] == ["dimm0", "dimm1", "dimm2"]
    assert [e.action for e in adds].count(Action.PLUG_CPU) == 6
    # Without a seed, the last DIMMs plugged are the ones removed.
    assert [e.device for e in removes] == [f"dimm{i}" for i in range(8, 16)]
    assert plan.count(Action.PLUG_DIMM) == 16 and plan.count(Action.UNPLUG_DIMM) == 8


def test_same_seed_same_plan_and_different_seed_differs() -> None:
    spec = SwarmSpec(dimms=(256 * MiB,) * 16, cpus=6, unplug=8, unplug_cpus=2, seed=7)
    assert build_plan(spec) == build_plan(spec)
    other = build_plan(SwarmSpec(dimms=(256 * MiB,) * 16, cpus=6, unplug=8, unplug_cpus=2,
                                 seed=8))
    assert other != build_plan(spec)
    # Shuffling mixes kinds but every device still appears once per phase.
    adds = build_plan(spec).phases[0]
    assert sorted(e.device for e in adds) == sorted(
        [f"dimm{i}" for i in range(16)] + [f"vcpu{i}" for i in range(6)])


def test_virtio_mem_grows_then_shrinks() -> None:
    plan = build_plan(SwarmSpec(virtio_mem=GiB, virtio_mem_shrink=256 * MiB))
    resizes = [(e.phase, e.size) for e in plan.events]
    assert resizes == [(0, GiB), (1, 256 * MiB)]


def test_timing_is_made_explicit_in_the_events() -> None:
    plan = build_plan(SwarmSpec(dimms=(128 * MiB,) * 3, timing=Timing("paced", 0.25)))
    assert [e.delay for e in plan.events] == [0.0, 0.25, 0.25]


@pytest.mark.parametrize("spec,message", [
    (SwarmSpec(dimms=(256 * MiB,), unplug=2), "only 1"),
    (SwarmSpec(cpus=1, unplug_cpus=2), "only 1"),
    (SwarmSpec(virtio_mem_shrink=GiB), "grow first"),
])
def test_build_plan_refuses(spec: SwarmSpec, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        build_plan(spec)


def test_validate_block_size_and_order() -> None:
    plan = build_plan(SwarmSpec(dimms=(192 * MiB,)))
    with pytest.raises(UsageError, match="not a multiple"):
        plan.validate(128 * MiB)
    plan.validate(64 * MiB)
    same_phase = SwarmPlan((SwarmEvent(Action.PLUG_DIMM, "d", 128 * MiB),
                            SwarmEvent(Action.UNPLUG_DIMM, "d")))
    with pytest.raises(UsageError, match="same phase"):
        same_phase.validate()
    twice = SwarmPlan((SwarmEvent(Action.PLUG_CPU, "c"), SwarmEvent(Action.PLUG_CPU, "c")))
    with pytest.raises(UsageError, match="twice"):
        twice.validate()


def test_random_plan_is_deterministic_and_valid() -> None:
    a = random_plan(1234, max_dimms=8, max_cpus=4, virtio_mem_max=GiB, phases=3)
    assert a == random_plan(1234, max_dimms=8, max_cpus=4, virtio_mem_max=GiB, phases=3)
    assert a != random_plan(1235, max_dimms=8, max_cpus=4, virtio_mem_max=GiB, phases=3)
    for seed in range(50):
        plan = random_plan(seed, max_dimms=8, max_cpus=4, phases=3)
        plan.validate(128 * MiB)
        assert plan.count(Action.PLUG_DIMM) <= 8 and plan.count(Action.PLUG_CPU) <= 4
        plugged: set[str] = set()
        for phase in plan.phases:
            for e in phase:
                if e.action.removes:
                    assert e.device in plugged, "a removal must follow its plug's phase"
            plugged |= {e.device for e in phase if e.action.adds}


def test_plan_json_round_trip() -> None:
    plan = random_plan(99, virtio_mem_max=GiB)
    pinned = SwarmEvent(Action.PLUG_CPU, "vcpuX", cpu_slot=(("core-id", 0), ("socket-id", 3)),
                        cpu_driver="max-x86_64-cpu", online=False)
    plan = SwarmPlan(plan.events + (pinned,), plan.name, plan.seed, plan.timing)
    assert SwarmPlan.from_json_dict(plan.to_json_dict()) == plan


def _transcript(plan: SwarmPlan) -> SwarmTranscript:
    t = SwarmTranscript(plan, SwarmOptions(), t0=100.0)
    for i, e in enumerate(plan.events):
        qmp = [{"execute": "device_add",
                "arguments": {"driver": "max-x86_64-cpu", "id": e.device, "socket-id": 2 + i,
                              "core-id": 0, "thread-id": 0}}]
        t.add("action", t=100.0 + 0.3 * i, index=i, phase=e.phase, action=e.action.value,
              device=e.device, size=e.size, qmp=qmp)
    return t


def test_replay_plan_pins_cpu_slots_and_can_use_recorded_timing() -> None:
    plan = build_plan(SwarmSpec(cpus=3))
    t = SwarmTranscript.from_json_dict(_transcript(plan).to_json_dict())
    pinned = replay_plan(t)
    assert [dict(e.cpu_slot or ()) for e in pinned.events] == [
        {"socket-id": s, "core-id": 0, "thread-id": 0} for s in (2, 3, 4)]
    assert all(e.cpu_driver == "max-x86_64-cpu" for e in pinned.events)
    assert [e.delay for e in pinned.events] == [0.0, 0.0, 0.0]
    recorded = replay_plan(t, timing="recorded")
    assert [round(e.delay, 3) for e in recorded.events] == [0.0, 0.3, 0.3]


def test_compare_actions() -> None:
    plan = build_plan(SwarmSpec(cpus=2))
    a = _transcript(plan).actions()
    assert compare_actions(a, a) == []
    b = [dict(x) for x in a]
    b[1] = dict(b[1], qmp=[{"execute": "device_add", "arguments": {"socket-id": 9}}])
    diffs = compare_actions(a, b)
    assert len(diffs) == 1 and diffs[0].startswith("event 1")
    assert "sent 2 events" in compare_actions(a, a[:1])[0]


def test_transcript_rejects_other_json() -> None:
    with pytest.raises(UsageError, match="not a swarm transcript"):
        SwarmTranscript.from_json_dict({"plan": {}})


def test_options_validate_update_strategy() -> None:
    with pytest.raises(UsageError, match="--update must be one of"):
        SwarmOptions(update="sometimes")
