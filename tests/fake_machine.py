"""A simulated machine for the swarm runner's tests: QEMU's QMP and a guest that does
what it is told at once (unless told to misbehave).  No QEMU."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace, TracebackType
from typing import Any, Self

from harness.errors import LostVMError, QmpError
from harness.guest import GuestConfig, Readiness
from harness.guest.accel import AccelChoice
from harness.guest.host_fit import HostFit
from harness.guest.qmp import Transcript
from harness.guest.ssh import CommandResult
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
        handlers = {
            "object-add": self._object_add, "object-del": self._object_del,
            "device_add": self._device_add, "device_del": self._device_del,
            "qom-set": self._qom_set, "query-memory-devices": self._memory_devices,
            "query-hotpluggable-cpus": self._hotpluggable_cpus,
            "query-cpus-fast": self._cpus_fast,
            "query-memory-size-summary": lambda _: {"base-memory": GiB, "plugged-memory": 0},
        }
        if cmd not in handlers:
            raise AssertionError(f"unexpected QMP command {cmd}")
        return handlers[cmd](args)

    def _object_add(self, args: dict[str, Any]) -> Any:
        self.backends[args["id"]] = args["size"]
        return {}

    def _object_del(self, args: dict[str, Any]) -> Any:
        del self.backends[args["id"]]
        return {}

    def _device_add(self, args: dict[str, Any]) -> Any:
        if args["driver"] == "pc-dimm":
            size = self.backends[args["memdev"]]
            slot = len(self.dimms)
            self.dimms[args["id"]] = (self.next_addr, size, slot)
            self.ram[args["id"]] = (self.next_addr, size)
            self.next_addr += size
            self.events.append(self._ost(args["id"], 1, 0, "DIMM", slot))
            return {}
        index = args["socket-id"]
        if index in self.cpus:
            raise QmpError(f"slot {index} is occupied")
        self.cpus[index] = f"/machine/peripheral/{args['id']}"
        if not self.drop_cpus:
            self.guest_cpu[index] = max(self.guest_cpu.values()) + 1
        self.events.append(self._ost(args["id"], 1, 0, "CPU", index))
        return {}

    def _device_del(self, args: dict[str, Any]) -> Any:
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

    def _qom_set(self, args: dict[str, Any]) -> Any:
        assert self.vmem is not None
        self.vmem["requested"] = self.vmem["size"] = args["value"]
        self.events.append({"event": "MEMORY_DEVICE_SIZE_CHANGE",
                            "data": {"id": "vmem0", "size": args["value"]}})
        return {}

    def _memory_devices(self, args: dict[str, Any]) -> Any:
        out: list[dict[str, Any]] = [
            {"type": "dimm", "data": {"id": i, "addr": a, "size": s, "slot": n}}
            for i, (a, s, n) in self.dimms.items()]
        if self.vmem is not None:
            v = self.vmem
            out.append({"type": "virtio-mem", "data": {
                "id": "vmem0", "memaddr": v["addr"], "size": v["size"],
                "requested-size": v["requested"], "max-size": v["region"]}})
        return out

    def _hotpluggable_cpus(self, args: dict[str, Any]) -> Any:
        return [{"type": "max-x86_64-cpu", "vcpus-count": 1,
                 "props": {"socket-id": i, "core-id": 0, "thread-id": 0},
                 **({"qom-path": self.cpus[i]} if i in self.cpus else {})}
                for i in range(self.max_cpus - 1, -1, -1)]

    def _cpus_fast(self, args: dict[str, Any]) -> Any:
        return [{"cpu-index": i, "qom-path": p} for i, p in sorted(self.cpus.items())]

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
        self.host_fit = HostFit.unchosen()      # multi-threaded TCG
        self.image = SimpleNamespace(profile="trixie", kernel_release="6.12.0")

    def alive(self) -> bool:
        return self.machine.alive

    def wait_exit(self, timeout: float) -> int | None:
        return None if self.machine.alive else -6

    kdump_mode = "file"

    def kdump_reload_command(self) -> str:
        return "/harness/kdump-load file"

    def check_health(self, doing: str, *, grace: float = 0.5) -> None:
        # As Guest.check_health does for a QEMU that died of a signal.
        if not self.machine.alive:
            raise LostVMError(f"QEMU died (killed by signal 6): double free (while {doing})")

    def run(self, command: str, *, timeout: float | None = None,
            check: bool = False) -> CommandResult:
        status, out = self.machine.run(command)
        return CommandResult(command, status, out, "", 0.0)


def guest(tmp_path: Path, **kw: Any) -> Any:
    return FakeGuest(Machine(**kw), tmp_path)
