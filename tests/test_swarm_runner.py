"""The swarm runner against a simulated machine (no QEMU): settling, hooks, refusals,
dropped vCPUs, transcripts and replay."""

from __future__ import annotations

import time
from pathlib import Path
from types import SimpleNamespace, TracebackType
from typing import Any, Self

import pytest

from harness.errors import HotplugNotHonoured, KernelUnsuitable, LostVMError, QmpError, UsageError
from harness.guest import GuestConfig, Readiness
from harness.guest.accel import AccelChoice
from harness.guest.qmp import Transcript
from harness.guest.ssh import CommandResult
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
from harness.timeouts import Timeouts
from harness.units import GiB, MiB

BLOCK = 128 * MiB
S = "/sys/devices/system"


class Machine:
    """QEMU and a guest that does what it is told at once (unless told to misbehave)."""

    def __init__(self, *, max_cpus: int = 8, vmem: bool = False) -> None:
        self.dimms: dict[str, tuple[int, int, int]] = {}     # id -> addr, size, slot
        self.backends: dict[str, int] = {}
        self.next_addr = 4 * GiB
        self.ram: dict[str, tuple[int, int]] = {}            # guest System RAM by owner
        self.max_cpus = max_cpus
        self.cpus: dict[int, str] = {0: "/machine/unattached/device[0]",
                                     1: "/machine/unattached/device[2]"}
        self.guest_cpu: dict[int, int] = {0: 0, 1: 1}          # cpu-index -> guest number
        self.online: set[int] = {0, 1}
        self.vmem: dict[str, int] | None = ({"addr": 5 * GiB, "region": GiB, "size": 0,
                                             "requested": 0} if vmem else None)
        self.events: list[dict[str, Any]] = []
        self.refuse_unplug: set[str] = set()
        self.drop_cpus = False
        self.alive = True
        self.cpu_deleted_event = True      # QEMU 7.2 TCG may only report the lapic child
        self.kmsg: list[str] = []
        self.reloads = 0

    # -- QMP ------------------------------------------------------------------------------
    def qmp(self, cmd: str, args: dict[str, Any]) -> Any:
        if cmd == "object-add":
            self.backends[args["id"]] = args["size"]
            return {}
        if cmd == "object-del":
            del self.backends[args["id"]]
            return {}
        if cmd == "device_add" and args["driver"] == "pc-dimm":
            size = self.backends[args["memdev"]]
            slot = len(self.dimms)
            self.dimms[args["id"]] = (self.next_addr, size, slot)
            self.ram[args["id"]] = (self.next_addr, size)
            self.next_addr += size
            self.events.append(self._ost(args["id"], 1, 0, "DIMM", slot))
            return {}
        if cmd == "device_add":
            index = args["socket-id"]
            if index in self.cpus:
                raise QmpError(f"slot {index} is occupied")
            self.cpus[index] = f"/machine/peripheral/{args['id']}"
            if not self.drop_cpus:
                self.guest_cpu[index] = max(self.guest_cpu.values()) + 1
            self.events.append(self._ost(args["id"], 1, 0, "CPU", index))
            return {}
        if cmd == "device_del":
            dev = args["id"]
            if dev in self.refuse_unplug:
                self.events.append(self._ost(dev, 3, 0x82, "DIMM", 0))
                return {}
            if dev in self.dimms:
                del self.dimms[dev]
                self.ram.pop(dev)
            else:
                index = next(i for i, p in self.cpus.items() if p.endswith("/" + dev))
                del self.cpus[index]
                self.online.discard(self.guest_cpu.pop(index))
                if not self.cpu_deleted_event:
                    self.events.append({"event": "DEVICE_DELETED", "data": {
                        "path": f"/machine/peripheral/{dev}/lapic"}})
                    return {}
            self.events.append({"event": "DEVICE_DELETED",
                                "data": {"device": dev, "path": f"/machine/peripheral/{dev}"}})
            return {}
        if cmd == "qom-set":
            assert self.vmem is not None
            self.vmem["requested"] = self.vmem["size"] = args["value"]
            self.events.append({"event": "MEMORY_DEVICE_SIZE_CHANGE",
                                "data": {"id": "vmem0", "size": args["value"]}})
            return {}
        if cmd == "query-memory-devices":
            out: list[dict[str, Any]] = [
                {"type": "dimm", "data": {"id": i, "addr": a, "size": s, "slot": n}}
                for i, (a, s, n) in self.dimms.items()]
            if self.vmem is not None:
                v = self.vmem
                out.append({"type": "virtio-mem", "data": {
                    "id": "vmem0", "memaddr": v["addr"], "size": v["size"],
                    "requested-size": v["requested"], "max-size": v["region"]}})
            return out
        if cmd == "query-hotpluggable-cpus":
            return [{"type": "max-x86_64-cpu", "vcpus-count": 1,
                     "props": {"socket-id": i, "core-id": 0, "thread-id": 0},
                     **({"qom-path": self.cpus[i]} if i in self.cpus else {})}
                    for i in range(self.max_cpus - 1, -1, -1)]
        if cmd == "query-cpus-fast":
            return [{"cpu-index": i, "qom-path": p} for i, p in sorted(self.cpus.items())]
        if cmd == "query-memory-size-summary":
            return {"base-memory": GiB, "plugged-memory": 0}
        raise AssertionError(f"unexpected QMP command {cmd}")

    @staticmethod
    def _ost(dev: str, source: int, status: int, kind: str, slot: int) -> dict[str, Any]:
        return {"event": "ACPI_DEVICE_OST", "data": {"info": {
            "device": dev, "source": source, "status": status, "slot": str(slot),
            "slot-type": kind}}}

    # -- the guest ----------------------------------------------------------------------
    def observe(self, command: str) -> str:
        ranges = [(0x1000, 0x9fc00), (0x100000, GiB), *self.ram.values()]
        if self.vmem is not None and self.vmem["size"]:
            ranges.append((self.vmem["addr"], self.vmem["size"]))
        iomem = "\n".join(f"{a:08x}-{a + s - 1:08x} : System RAM" for a, s in ranges
                          if a + s > a)
        blocks = [b for a, s in ranges[1:] for b in range(a // BLOCK, (a + s) // BLOCK)]
        present = sorted(self.guest_cpu.values())
        lines = ["@@release", "6.12.0", "@@iomem", iomem,
                 "@@cpus_possible", f"0-{self.max_cpus - 1}",
                 "@@cpus_present", ",".join(map(str, present)),
                 "@@cpus_online", ",".join(map(str, sorted(self.online))),
                 "@@block_size", "8000000", "@@blocks"]
        lines += [f"{S}/memory/memory{b}/state:online" for b in blocks]
        lines.append("@@cpu_firmware_ids")
        lines += [f"{S}/cpu/cpu{c}/firmware_node/path:\\_SB_.CPUS.C{i:03X}"
                  for i, c in self.guest_cpu.items()]
        if "crash_hotplug" in command:
            lines += ["@@crash_hotplug_cpu", "1", "@@crash_hotplug_memory", "1"]
        return "\n".join(lines + ["@@end"]) + "\n"

    def run(self, command: str) -> tuple[int, str]:
        if command.startswith("r() {"):
            return 0, self.observe(command)
        if "firmware_node/path 2>/dev/null); do" in command:
            out = []
            for index, cpu in self.guest_cpu.items():
                if f"C{index:03X}" in command:
                    self.online.add(cpu)
                    out.append(f"online {cpu} \\_SB_.CPUS.C{index:03X}")
            return 0, "\n".join(out) + "\n"
        if "/dev/kmsg" in command:
            marker = command.split("'")[1]
            if "begin" in marker:
                self.kmsg += ["boot noise", marker, "crash hp: hp_action 3"]
                return 0, ""
            self.kmsg.append(marker)
            # /dev/kmsg records, with a replayed one (the streamer restarted its cat).
            records = [f"6,{i},{i * 1000},-;{m}" for i, m in enumerate(self.kmsg)]
            return 0, "\n".join(records[:2] + records) + "\n"
        if "/harness/kdump-load" in command:
            self.reloads += 1
            return 0, "rc=0\n1\n"
        raise AssertionError(f"unexpected guest command {command}")


class FakeQmp:
    def __init__(self, machine: Machine, log: Path) -> None:
        self.machine = machine
        self.transcript = Transcript(log)      # the real qmp.jsonl writer

    def _record(self, kind: str, msg: Any) -> None:
        self.transcript.record(kind, msg)

    def execute(self, cmd: str, args: dict[str, Any] | None = None, *,
                timeout: float | None = None) -> Any:
        self._record("command", {"execute": cmd, "arguments": args or {}})
        result = self.machine.qmp(cmd, dict(args or {}))
        self._record("reply", {"execute": cmd, "return": result})
        return result

    def listen(self, *names: str) -> FakeListen:
        return FakeListen(self)


class FakeListen:
    def __init__(self, qmp: FakeQmp) -> None:
        self.qmp = qmp

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        pass

    def drain(self) -> list[dict[str, Any]]:
        events, self.qmp.machine.events[:] = list(self.qmp.machine.events), []
        for e in events:
            self.qmp._record("event", e)
        return events


class FakeGuest:
    def __init__(self, machine: Machine, workdir: Path) -> None:
        self.machine = machine
        self.qmp = FakeQmp(machine, workdir / "qmp.jsonl")
        self.workdir = workdir
        self.config = GuestConfig()
        self.timeouts = Timeouts()
        self.readiness = Readiness({"block_size": "8000000", "crash_hotplug_memory": "1"})
        self.accel = AccelChoice("tcg", "test")
        self.image = SimpleNamespace(profile="trixie", kernel_release="6.12.0")

    def alive(self) -> bool:
        return self.machine.alive

    def wait_exit(self, timeout: float) -> int | None:
        return None if self.machine.alive else -6

    kdump_mode = "file"

    def kdump_reload_command(self) -> str:
        return "/harness/kdump-load file"

    def check_health(self, doing: str) -> None:
        # As Guest.check_health does for a QEMU that died of a signal.
        if not self.machine.alive:
            raise LostVMError(f"QEMU died (killed by signal 6): double free (while {doing})")

    def run(self, command: str, *, timeout: float | None = None,
            check: bool = False) -> CommandResult:
        status, out = self.machine.run(command)
        return CommandResult(command, status, out, "", 0.0)


def guest(tmp_path: Path, **kw: Any) -> Any:
    return FakeGuest(Machine(**kw), tmp_path)


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
