"""Hot-plug swarms end to end: the guest shows what QEMU has, swarms replay, contention
makes the crash hot-plug trylock fail, and 6.1 settles too.

Kept few and lean (each boot costs ~5 s under TCG): one guest runs add and remove phases
with DIMMs, vCPUs and virtio-mem together.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from harness.guest import Guest
from harness.guest.accel import qemu_version
from harness.hotplug import (
    QEMU_SURVIVES_CPU_UNPLUG,
    Action,
    SwarmSpec,
    SwarmTranscript,
    build_plan,
    compare_actions,
    replay_plan,
    run_swarm,
    virtio_mem_qemu_args,
)
from harness.hotplug.contention import ContentionSpec, boot_args_for
from harness.units import GiB, MiB

pytestmark = pytest.mark.guest

MakeGuest = Callable[..., Guest]

#: 16 x 256 MiB DIMMs and 6 vCPUs, then half the DIMMs out: the issue's reference swarm.
SPEC = SwarmSpec(dimms=(256 * MiB,) * 16, cpus=6, unplug=8, virtio_mem=GiB,
                 virtio_mem_shrink=256 * MiB, seed=2024)
VMEM_ARGS = virtio_mem_qemu_args("vmem0", GiB)


def grep_count(guest: Guest, pattern: str) -> int:
    return int(guest.run(f"dmesg | grep -c '{pattern}' || true").stdout.strip() or 0)


@pytest.mark.profile("trixie")
def test_swarm_settles_matches_qmp_and_replays(make_guest: MakeGuest,
                                               artifact_dir: Path) -> None:
    plan = build_plan(SPEC)
    assert plan == build_plan(SPEC), "the same seed must give the same plan"
    guest = make_guest("trixie", qemu_args=VMEM_ARGS)
    result = run_swarm(guest, plan, transcript_path=artifact_dir / "transcript.json")
    result.check()

    adds, removes = result.phases
    assert adds.ok and removes.ok, result.summary()
    assert result.diff is not None
    assert result.diff.ok, result.diff.summary()
    observed, expected = result.observed, result.expected
    assert observed is not None and expected is not None
    # The guest really gained the vCPUs (QEMU says yes even when the guest drops one).
    assert observed.cpus_online == tuple(range(8)) and observed.cpus_present == tuple(range(8))
    assert sorted(result.cpu_map.values()) == list(range(2, 8))
    dimms = [d for d in expected.memory_devices if d.kind == "dimm"]
    assert len(dimms) == 8 and len(result.removed) == 8
    vmem = next(d for d in expected.memory_devices if d.kind == "virtio-mem")
    assert vmem.size == 256 * MiB
    assert observed.crash_hotplug_memory == 1
    # Every memory block event reached the crash hot-plug handler: 32 DIMM blocks and
    # 8 virtio-mem blocks in, 16 + 6 out; CPU events do not rewrite the x86 header.
    assert result.klog is not None and result.klog.trylock_failures == 0
    assert result.klog.hp_actions == {"ADD_MEMORY": 40, "REMOVE_MEMORY": 22, "ADD_CPU": 6}
    assert result.klog.updated_elfcorehdr == 62

    # Replay on a fresh guest: the same actions, in the same slots, and it settles.
    original = SwarmTranscript.load(artifact_dir / "transcript.json")
    assert len(original.actions()) == len(plan.events)
    assert {e["kind"] for e in original.entries} >= {"action", "observation"}
    # The QMP traffic is read back from the guest's qmp.jsonl, not copied.
    qmp = original.qmp_entries(artifact_dir / "transcript.json")
    assert {e["kind"] for e in qmp} >= {"command", "reply", "event"}
    again = make_guest("trixie", qemu_args=VMEM_ARGS)
    replayed = run_swarm(again, replay_plan(original),
                         transcript_path=artifact_dir / "replay-transcript.json")
    replayed.check()
    second = SwarmTranscript.load(artifact_dir / "replay-transcript.json")
    assert compare_actions(original.actions(), second.actions()) == []


@pytest.mark.slow   # the catalogue covers it (test_catalogue*.py)
@pytest.mark.profile("trixie")
def test_reload_contention_makes_the_trylock_fail(make_guest: MakeGuest) -> None:
    # A reload pinned to the ACPI-IRQ CPU; the 16-DIMM burst starts once the guest says
    # kexec_file_load holds the kexec lock; preempt=full keeps the hot-plug path moving
    # meanwhile (contention.py: without it 4 of 8 runs saw no failure, with it 10 of 10).
    spec = ContentionSpec("reload")
    guest = make_guest("trixie", kernel_args=boot_args_for([spec]))
    before = grep_count(guest, "kexec_trylock() failed")
    before_hp = grep_count(guest, "crash hp: hp_action")
    plan = build_plan(SwarmSpec(dimms=(256 * MiB,) * 16))
    result = run_swarm(guest, plan, contention=[spec])
    assert result.phases[0].ok, result.summary()
    (reload,) = result.contention
    assert reload.cpu == int(guest.run("cat /proc/irq/9/effective_affinity_list").stdout)
    assert [r["rc"] for r in reload.reloads] == [0]
    assert reload.lock_seen_after is not None and reload.error is None, reload.summary()
    assert reload.note is None, "booted with preempt=full"
    assert result.klog is not None and result.klog.trylock_failures > 0, result.summary()
    assert result.klog.trylock_new_wording == result.klog.trylock_failures
    # The scanner's counts are the kernel log's.
    assert grep_count(guest, "kexec_trylock() failed") - before == result.klog.trylock_failures
    assert grep_count(guest, "crash hp: hp_action") - before_hp == result.klog.hp_action_total


@pytest.mark.slow   # the catalogue covers it (test_catalogue*.py)
@pytest.mark.profile("bookworm")
def test_bookworm_burst_settles_with_reload_updates(make_guest: MakeGuest) -> None:
    # 6.1 does not online hot-added memory by itself, and has no crash hot-plug: the
    # runner falls back to what a distro udev rule does, a kdump reload after the swarm.
    guest = make_guest("bookworm", memhp_default_state="online")
    plan = build_plan(SwarmSpec(dimms=(256 * MiB,) * 16, cpus=6))
    result = run_swarm(guest, plan)
    result.check()
    assert result.update == "reload" and [r["rc"] for r in result.reloads] == ["0"]
    assert result.observed is not None and result.observed.crash_hotplug_memory is None
    assert result.observed.cpus_online == tuple(range(8))
    assert plan.count(Action.PLUG_DIMM) == 16


@pytest.mark.profile("trixie")
@pytest.mark.skipif(qemu_version() < QEMU_SURVIVES_CPU_UNPLUG,
                    reason="QEMU 7.2 aborts after vCPU unplugs: run `bash ci/setup-host.sh` "
                           "(QEMU 10 from bookworm-backports) to run this test")
def test_vcpus_unplug_and_stay_offline_when_asked(make_guest: MakeGuest) -> None:
    # cpu_unplug: TCG stays multi-threaded (round-robin TCG aborts on an unplug).
    guest = make_guest("trixie", cpu_unplug=True)
    # Three vCPUs in, two of them (drawn by the seed) out again: the guest's masks follow.
    out = run_swarm(guest, build_plan(SwarmSpec(cpus=3, unplug_cpus=2, seed=5)))
    out.check()
    assert out.observed is not None and out.diff is not None and out.diff.ok
    assert len(out.observed.cpus_online) == 3 and 0 in out.observed.cpus_online
    assert out.observed.cpus_present == out.observed.cpus_online
    # A vCPU plugged with onlining left to the test stays present but offline.
    kept = run_swarm(guest, build_plan(SwarmSpec(cpus=1, online_cpus=False, prefix="off-")))
    kept.check()
    assert kept.observed is not None
    assert len(kept.observed.cpus_present) == 4 and len(kept.observed.cpus_online) == 3
