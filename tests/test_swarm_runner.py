"""The swarm runner against a simulated machine (no QEMU): settling, hooks, refusals,
dropped vCPUs, transcripts and replay."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from fake_machine import guest

from harness.errors import HotplugNotHonoured, KernelUnsuitable, LostVMError, UsageError
from harness.guest import Readiness
from harness.guest.ssh import CommandResult
from harness.guest.tcg_threads import TcgThreadsChoice
from harness.hotplug import (
    Action,
    HookAction,
    SwarmEvent,
    SwarmOptions,
    SwarmPlan,
    SwarmProgress,
    SwarmSpec,
    SwarmTranscript,
    build_plan,
    compare_actions,
    replay_plan,
    resolve_update,
    run_swarm,
)
from harness.units import GiB, MiB


def test_swarm_settles_and_writes_a_transcript(tmp_path: Path) -> None:
    g = guest(tmp_path)
    plan = build_plan(SwarmSpec(dimms=(256 * MiB,) * 4, cpus=2, unplug=2, unplug_cpus=1))
    result = run_swarm(g, plan)
    result.check()
    assert result.settled and result.events_sent == 9
    assert [p.ok for p in result.phases] == [True, True]
    assert result.diff is not None and result.diff.ok
    assert result.cpu_map == {"vcpu0": 2, "vcpu1": 3}
    assert [d.id for d in result.removed] == ["dimm2", "dimm3"]
    assert "dimm2-mem" not in g.machine.backends, "removed DIMMs' backends are freed"
    assert result.klog is not None and result.klog.hp_actions == {"ADD_MEMORY": 1}
    t = SwarmTranscript.load(tmp_path / "swarm-transcript.json")
    assert t.plan == plan and len(t.actions()) == 9
    first = t.actions()[0]
    assert [c["execute"] for c in first["qmp"]] == ["object-add", "device_add"]
    kinds = {e["kind"] for e in t.entries}
    assert {"action", "observation", "online"} <= kinds
    # The QMP traffic is not copied: the transcript points at its lines in qmp.jsonl.
    assert t.qmp_log is not None and t.qmp_log["file"] == "qmp.jsonl"
    qmp = t.qmp_entries(tmp_path / "swarm-transcript.json")
    assert {"command", "reply", "event"} <= {e["kind"] for e in qmp}
    assert qmp[0]["msg"] == {"execute": "query-memory-devices", "arguments": {}}
    assert all(e["t"] <= f["t"] for e, f in zip(t.entries, t.entries[1:], strict=False))


def test_hook_stops_between_events(tmp_path: Path) -> None:
    seen: list[SwarmProgress] = []

    def hook(progress: SwarmProgress) -> HookAction | None:
        seen.append(progress)
        return HookAction.STOP if progress.done == 3 else None

    plan = build_plan(SwarmSpec(dimms=(128 * MiB,) * 6))
    result = run_swarm(guest(tmp_path), plan, between=hook)
    assert result.stopped_early and result.events_sent == 3 and not result.settled
    assert [p.done for p in seen] == [1, 2, 3] and seen[0].total == 6
    assert result.diff is None and result.klog_marker is not None
    notes = [e for e in SwarmTranscript.load(result.transcript_path or Path()).entries
             if e["kind"] == "note"]
    assert notes[-1]["what"] == "stopped" and notes[-1]["after"] == 3
    again = run_swarm(guest(tmp_path), plan, stop_after_events=2)
    assert again.stopped_early and again.events_sent == 2


def test_guest_refusal_is_reported_not_waited_out(tmp_path: Path) -> None:
    g = guest(tmp_path)
    run_swarm(g, build_plan(SwarmSpec(dimms=(128 * MiB,) * 2))).check()
    g.machine.refuse_unplug.add("dimm1")
    plan = SwarmPlan((SwarmEvent(Action.UNPLUG_DIMM, "dimm1"),), name="remove")
    started = time.monotonic()
    result = run_swarm(g, plan, options=SwarmOptions(settle_timeout=30))
    assert time.monotonic() - started < 5, "a refusal must not wait for the deadline"
    assert not result.settled
    assert any("refused by the guest (eject request: device busy (0x82))" in f
               for f in result.failures)
    with pytest.raises(HotplugNotHonoured, match="did not settle"):
        result.check()


def test_vcpu_the_guest_drops_is_named(tmp_path: Path) -> None:
    g = guest(tmp_path)
    g.machine.drop_cpus = True
    result = run_swarm(g, build_plan(SwarmSpec(cpus=1)),
                       options=SwarmOptions(settle_timeout=0.5))
    assert not result.settled
    missing = result.phases[0].missing
    assert any(m.startswith("cpu-missing vCPU 2 (socket 2, /machine/peripheral/vcpu0)")
               for m in missing), missing


def test_vcpu_unplug_without_its_device_deleted_event(tmp_path: Path) -> None:
    g = guest(tmp_path)
    g.machine.cpu_deleted_event = False
    started = time.monotonic()
    result = run_swarm(g, build_plan(SwarmSpec(cpus=2, unplug_cpus=2)),
                       options=SwarmOptions(settle_timeout=30))
    result.check()
    assert time.monotonic() - started < 5
    assert set(g.machine.cpus) == {0, 1}


def test_a_round_robin_guest_refuses_a_vcpu_unplug_before_the_first_event(
        tmp_path: Path) -> None:
    g = guest(tmp_path)
    g.host_fit = replace(g.host_fit, tcg_threads=TcgThreadsChoice("single", "test"))
    with pytest.raises(UsageError, match=r"unplugs vCPUs, and QEMU 10\.0's round-robin TCG "
                                         r"aborts .*GuestConfig\(cpu_unplug=True\)"):
        run_swarm(g, build_plan(SwarmSpec(cpus=2, unplug_cpus=1)))
    assert set(g.machine.cpus) == {0, 1}      # nothing was plugged
    # Plugging alone is fine round-robin.
    run_swarm(g, build_plan(SwarmSpec(cpus=1))).check()


def test_qemu_exiting_mid_swarm_fails_at_once(tmp_path: Path) -> None:
    g = guest(tmp_path)
    g.machine.refuse_unplug.add("never")
    (tmp_path / "qemu.log").write_text("double free or corruption (out)\n")
    plan = build_plan(SwarmSpec(dimms=(128 * MiB,) * 2))
    real = g.machine.qmp

    def dying(cmd: str, args: dict[str, Any]) -> Any:
        out = real(cmd, args)
        if cmd == "device_add":
            g.machine.events.clear()       # the guest never answers: QEMU is gone
            g.machine.alive = False
        return out

    g.machine.qmp = dying
    started = time.monotonic()
    with pytest.raises(LostVMError, match=r"QEMU died .* \(while waiting for dimm0"):
        run_swarm(g, plan, options=SwarmOptions(settle_timeout=30))
    assert time.monotonic() - started < 5


def test_vcpu_left_offline(tmp_path: Path) -> None:
    g = guest(tmp_path)
    result = run_swarm(g, build_plan(SwarmSpec(cpus=2, online_cpus=False)))
    result.check()
    assert g.machine.online == {0, 1}
    # A later swarm in the same guest (repro --audit --leave-offline) leaves them so too,
    # and expects them offline: it once waited out its deadline for them to come online.
    later = run_swarm(g, build_plan(SwarmSpec(dimms=(128 * MiB,), cpus=1, prefix="b-")),
                      options=SwarmOptions(settle_timeout=5))
    later.check()
    assert later.settled and g.machine.online == {0, 1, 4}


def test_virtio_mem_and_reload_strategy(tmp_path: Path) -> None:
    g = guest(tmp_path, vmem=True)
    plan = build_plan(SwarmSpec(virtio_mem=512 * MiB, virtio_mem_shrink=128 * MiB))
    g.run = _with_driver(g.run)
    result = run_swarm(g, plan, options=SwarmOptions(update="reload"))
    result.check()
    assert result.update == "reload" and g.machine.reloads == 2
    assert [p.reload is not None for p in result.phases] == [True, True]


def _with_driver(run: Any) -> Any:
    def wrapped(command: str, **kw: Any) -> CommandResult:
        if "virtio_mem" in command:
            return CommandResult(command, 0, "loaded\n", "", 0.0)
        return run(command, **kw)  # type: ignore[no-any-return]
    return wrapped


def test_plans_the_machine_cannot_run_are_refused(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="no DIMM 'dimm9'"):
        run_swarm(guest(tmp_path), SwarmPlan((SwarmEvent(Action.UNPLUG_DIMM, "dimm9"),)))
    with pytest.raises(UsageError, match="no virtio-mem device"):
        run_swarm(guest(tmp_path), build_plan(SwarmSpec(virtio_mem=GiB)))
    with pytest.raises(HotplugNotHonoured, match="room for 2 more CPUs"):
        run_swarm(guest(tmp_path, max_cpus=4), build_plan(SwarmSpec(cpus=3)))


def test_replay_reproduces_the_actions(tmp_path: Path) -> None:
    plan = build_plan(SwarmSpec(dimms=(128 * MiB,) * 3, cpus=2, unplug=1, seed=5))
    first = run_swarm(guest(tmp_path / "a"), plan)
    original = SwarmTranscript.load(first.transcript_path or Path())
    second = run_swarm(guest(tmp_path / "b"), replay_plan(original))
    replayed = SwarmTranscript.load(second.transcript_path or Path())
    assert compare_actions(original.actions(), replayed.actions()) == []
    assert all(e.cpu_slot is not None for e in replay_plan(original).events
               if e.action is Action.PLUG_CPU)


@pytest.fixture(autouse=True)
def _dirs(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()


@pytest.mark.parametrize(("crash_hotplug", "why"), [
    ("", "no crash hot-plug"), ("0", "crash_hotplug reads 0")])
def test_kernel_updates_are_refused_where_the_kernel_cannot_do_them(
        tmp_path: Path, crash_hotplug: str, why: str) -> None:
    g = guest(tmp_path)
    g.readiness = Readiness({"block_size": "8000000", "crash_hotplug_memory": crash_hotplug})
    with pytest.raises(KernelUnsuitable, match=f"--update kernel: .*{why}"):
        run_swarm(g, build_plan(SwarmSpec(dimms=(256 * MiB,))),
                  options=SwarmOptions(update="kernel"))
    assert not g.machine.backends, "refused before anything was plugged"
    assert resolve_update("auto", g) == "reload"
