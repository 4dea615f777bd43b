"""Snapshots without QEMU: the key, what a snapshot on disk must hold, the restore's check
of the guest it got back, and the options that ask for one."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from harness.errors import SnapshotError, UsageError
from harness.guest import GuestConfig
from harness.guest import snapshot as snap_mod
from harness.guest.config import Readiness
from harness.guest.qemu_args import MachineSpec, SnapshotRam, qemu_args
from harness.guest.restore import check_restored
from harness.guest.snapshot import RECORD_FILE, Snapshot, SnapshotKey
from harness.model import Accel
from harness.settings import resolve
from harness.topology import GUEST_CLOCK_COMMAND, parse_guest_clock

#: busybox 1.37's adjtimex report (trixie's guest), the clock at 1000.25 s.
ADJTIMEX = """\
    mode:         0
-o  offset:       0 us
-f  freq.adjust:  0 (65536 = 1ppm)
    maxerror:     16000000
    esterror:     16000000
    status:       0 ()
-p  timeconstant: 2
    precision:    1 us
    tolerance:    32768000
-t  tick:         10000
    time.tv_sec:  1000
    time.tv_usec: 250000
    return value: 5 (clock not synchronized)
"""
READY = {"release": "6.12.117+deb13-cloud-amd64", "uptime": "4.10", "kexec_crash_loaded": "1",
         "kdump_syscall": "file", "crashkernel": "2e000000-3dffffff,"}


@pytest.fixture(autouse=True)
def qemu_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(snap_mod, "qemu_version_line",
                        lambda binary: "QEMU emulator version 10.0.2 (Debian 1:10.0.2+ds-2)")


def image(tmp_path: Path, key: str = "57d6b348468bb0e7aa") -> Any:
    directory = tmp_path / f"trixie-cloud-{key[:16]}"
    return SimpleNamespace(profile="trixie", kernel_path=directory / "vmlinuz",
                           initrd_path=directory / "initrd.cpio", directory=directory, key=key,
                           kernel_release=READY["release"])


def key(tmp_path: Path, config: GuestConfig | None = None, accel: str = "tcg",
        **image_kw: Any) -> SnapshotKey:
    return SnapshotKey.of(image(tmp_path, **image_kw), config or GuestConfig(), accel=accel,
                          binary="qemu-system-x86_64")


def test_the_key_ignores_per_run_fields_and_keys_the_accelerator_that_runs(
        tmp_path: Path) -> None:
    base = key(tmp_path)
    assert key(tmp_path, GuestConfig(snapshot=True, boot_retries=3, accel=Accel.KVM)) == base
    assert "accel" not in base.config and "snapshot" not in base.config
    assert key(tmp_path, accel="kvm").digest != base.digest


@pytest.mark.parametrize("change", [
    {"memory": 2 << 30}, {"cpus": 1}, {"kernel_args": ("preempt=full",)}, {"kexec": "classic"},
    {"capture_mode": "elf"}, {"crashkernel": "384M"}, {"qemu_args": ("-device", "x")},
])
def test_anything_that_shapes_the_guest_changes_the_key(tmp_path: Path,
                                                        change: dict[str, Any]) -> None:
    changed = key(tmp_path, replace(GuestConfig(), **change))
    assert changed.digest != key(tmp_path).digest
    assert [d.split(":")[0] for d in changed.differences(key(tmp_path))] == [
        f"config.{next(iter(change))}"]


def test_another_image_or_qemu_is_another_snapshot(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    base = key(tmp_path)
    assert key(tmp_path, key="0123456789abcdef00").digest != base.digest
    monkeypatch.setattr(snap_mod, "qemu_version_line", lambda binary: "QEMU 10.1.0")
    other = key(tmp_path)
    assert other.digest != base.digest
    assert other.differences(base) == [
        "qemu: 'QEMU emulator version 10.0.2 (Debian 1:10.0.2+ds-2)' -> 'QEMU 10.1.0'"]


def write_snapshot(directory: Path, k: SnapshotKey, *, state: bool = True) -> None:
    directory.mkdir(parents=True)
    (directory / "ssh-key").write_text("key")
    (directory / "ssh-preamble").write_bytes(b"SSH-2.0-dropbear\r\n")
    (directory / "guest.ram").write_bytes(b"\0" * 4096)
    if state:
        (directory / "state").write_bytes(b"\0" * 4096)
    record = {"key": json.loads(json.dumps(k.__dict__)), "readiness": READY,
              "saved_at": 1.0, "save_seconds": 1.2, "boot_seconds": 5.1}
    (directory / RECORD_FILE).write_text(json.dumps(record))


def test_a_snapshot_loads_only_whole_and_for_its_own_key(tmp_path: Path) -> None:
    k = key(tmp_path)
    write_snapshot(tmp_path / "s", k)
    loaded = Snapshot.load(tmp_path / "s", k)
    assert loaded.key == k and loaded.readiness == READY and loaded.boot_seconds == 5.1
    other = key(tmp_path, GuestConfig(cpus=1))
    with pytest.raises(SnapshotError, match=r"made for another guest: config.cpus: 2 -> 1"):
        Snapshot.load(tmp_path / "s", other)
    write_snapshot(tmp_path / "torn", k, state=False)
    with pytest.raises(SnapshotError, match=r"not a complete snapshot \(no state\)"):
        Snapshot.load(tmp_path / "torn", k)
    assert loaded.preamble == b"SSH-2.0-dropbear\r\n" and loaded.disk_bytes >= 4096
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / RECORD_FILE).write_text("{")
    with pytest.raises(SnapshotError, match="not a complete snapshot"):
        Snapshot.load(tmp_path / "bad")


class RestoredGuest:
    """What ``check_restored`` uses of a Guest: ``run`` and ``config``."""

    def __init__(self, stdout: str, config: GuestConfig | None = None) -> None:
        self.stdout = stdout
        self.config = config or GuestConfig()
        self.readiness = Readiness()
        self.clock_offset = 0.0

    def run(self, command: str, **kw: Any) -> Any:
        assert command == f"{GUEST_CLOCK_COMMAND}; echo ==readiness==; . /harness/readiness"
        return SimpleNamespace(stdout=self.stdout)


def report(**changes: str) -> str:
    return "\n".join(f"{k}={v}" for k, v in {**READY, **changes}.items()) + "\n"


def snapshot(tmp_path: Path) -> Snapshot:
    return Snapshot(tmp_path / "trixie-cloud-x-abc", key(tmp_path), READY, 1.0, 1.2, 5.1)


def test_the_restored_guest_must_be_the_one_saved(tmp_path: Path) -> None:
    guest = RestoredGuest(ADJTIMEX + "==readiness==\n" + report(uptime="4.31"))
    check_restored(guest, snapshot(tmp_path))  # type: ignore[arg-type]
    assert guest.readiness.kdump_loaded
    assert guest.clock_offset > 1.7e9       # the host's clock is decades after 1000 s
    moved = RestoredGuest(ADJTIMEX + "==readiness==\n"
                          + report(kexec_crash_loaded="0", kdump_syscall="classic"))
    with pytest.raises(SnapshotError, match=r"not the one saved: kdump_syscall 'file' -> "
                                            r"'classic', kexec_crash_loaded '1' -> '0'"):
        check_restored(moved, snapshot(tmp_path))  # type: ignore[arg-type]
    with pytest.raises(SnapshotError, match="clock is unreadable"):
        lost = RestoredGuest("adjtimex: not found\n==readiness==\n" + report())
        check_restored(lost, snapshot(tmp_path))  # type: ignore[arg-type]


def test_the_guest_clock_is_the_shells_epochrealtime_where_it_has_one() -> None:
    # busybox ash 1.34+ prints it without starting a program; its decimal point may be a
    # comma in other locales (bash does that).
    assert parse_guest_clock("epochrealtime=1796280003.546453\n") == pytest.approx(
        1796280003.546453)
    assert parse_guest_clock("epochrealtime=1796280003,546453") == pytest.approx(
        1796280003.546453)
    assert parse_guest_clock("epochrealtime=\n" + ADJTIMEX) == pytest.approx(1000.25)
    assert parse_guest_clock("epochrealtime=\n") is None
    assert "$EPOCHREALTIME" in GUEST_CLOCK_COMMAND and GUEST_CLOCK_COMMAND.endswith("adjtimex")


def test_a_snapshot_machine_has_its_ram_in_a_file_and_a_forward_for_its_ssh_session(
        tmp_path: Path) -> None:
    spec = MachineSpec(kernel=Path("k"), initrd=Path("i"), append="", qmp_socket=Path("q"),
                       console_path=Path("c"), memory=2 << 30)
    made = replace(spec, snapshot_ram=SnapshotRam(tmp_path / "a,b.ram", shared=True),
                   presession_socket=tmp_path / "pre.sock")
    argv = qemu_args(made)
    assert argv[argv.index("-machine") + 1].endswith(",memory-backend=pc.ram")
    assert (f"memory-backend-file,id=pc.ram,size=2048M,mem-path={tmp_path}/a,,b.ram,share=on"
            in argv)
    assert f"socket,id=sshpre,path={tmp_path}/pre.sock,server=on,wait=off" in argv
    netdev = argv[argv.index("-netdev") + 1]
    assert netdev.endswith(",guestfwd=tcp:10.0.2.100:22-chardev:sshpre")
    assert argv.index("-chardev", argv.index("-mon")) < argv.index("-netdev")
    restored = qemu_args(replace(made, snapshot_ram=SnapshotRam(tmp_path / "r", shared=False)))
    assert f"memory-backend-file,id=pc.ram,size=2048M,mem-path={tmp_path}/r,share=off" in restored
    plain = qemu_args(spec)
    assert not any("pc.ram" in a or "guestfwd" in a for a in plain) and "-d" not in plain
    logged = qemu_args(replace(spec, debug_log=tmp_path / "qemu-debug.log"))
    assert logged[-4:] == ["-d", "cpu_reset,guest_errors", "-D", f"{tmp_path}/qemu-debug.log"]
    with pytest.raises(UsageError, match="needs the guest's network"):
        qemu_args(replace(made, ssh=False))


def test_the_guest_clock_is_read_from_adjtimex_in_micro_or_nanoseconds() -> None:
    assert parse_guest_clock("adjtimex: applet not found") is None
    assert parse_guest_clock(ADJTIMEX) == pytest.approx(1000.25)
    nano = ADJTIMEX.replace("status:       0", "status:       8192").replace(
        "250000", "250000000")
    assert parse_guest_clock(nano) == pytest.approx(1000.25)


def test_every_guest_gets_virtio_rng_and_a_snapshot_vmgenid() -> None:
    spec = MachineSpec(kernel=Path("k"), initrd=Path("i"), append="", qmp_socket=Path("q"),
                       console_path=Path("c"))
    argv = qemu_args(spec)
    assert "virtio-rng-pci,rng=rng0" in argv and "vmgenid,guid=auto" not in argv
    assert "vmgenid,guid=auto" in qemu_args(replace(spec, vmgenid=True))


@pytest.mark.parametrize(("text", "value"), [("on", True), ("1", True), ("yes", True),
                                             ("off", False), ("False", False)])
def test_the_snapshot_setting_is_a_switch(text: str, value: bool) -> None:
    assert resolve("snapshot", cli=text, env={}).value is value
    assert resolve("snapshot", env={"KDUMP_HARNESS_SNAPSHOT": text}).value is value


def test_a_bad_snapshot_setting_names_its_source() -> None:
    with pytest.raises(UsageError, match=r"KDUMP_HARNESS_SNAPSHOT='maybe': expected on or off"):
        resolve("snapshot", env={"KDUMP_HARNESS_SNAPSHOT": "maybe"})
    assert resolve("snapshot", env={}).value is False


def test_prune_removes_snapshots_of_gone_images_other_qemus_formats_and_torn_builds(
        tmp_path: Path) -> None:
    images = tmp_path / "images"
    kept_image, gone_image = images / "trixie-cloud-aaaa", images / "sid-cloud-bbbb"
    for d in (kept_image, gone_image):
        d.mkdir(parents=True)
    root = tmp_path / "snapshots"
    mine = key(tmp_path)
    keys = {"kept": replace(mine, image=kept_image.name),
            "gone": replace(mine, image=gone_image.name),
            "orphan": replace(mine, image="bookworm-cloud-cccc"),
            "old-qemu": replace(mine, image=kept_image.name, qemu="QEMU 9.2.0"),
            "old-format": replace(mine, image=kept_image.name, format=1)}
    for name, k in keys.items():
        write_snapshot(root / name, k)
    (root / "young-torn").mkdir()
    removed = snap_mod.prune_snapshots(tmp_path, binary="qemu-system-x86_64", dry_run=True,
                                       gone_images={gone_image})
    assert sorted(d.name for d, _ in removed) == ["gone", "old-format", "old-qemu", "orphan"]
    assert (root / "gone").is_dir()                     # a dry run removes nothing
    snap_mod.prune_snapshots(tmp_path, binary="qemu-system-x86_64", gone_images={gone_image})
    assert sorted(p.name for p in root.iterdir()) == ["kept", "young-torn"]


def test_prune_unused_for_goes_by_the_last_restore_else_the_making(tmp_path: Path) -> None:
    import os
    import time

    image_dir = tmp_path / "images" / "trixie-cloud-aaaa"
    image_dir.mkdir(parents=True)
    root = tmp_path / "snapshots"
    mine = replace(key(tmp_path), image=image_dir.name)
    for name in ("restored-lately", "made-lately", "stale"):
        write_snapshot(root / name, replace(mine, config={"name": name}))
    ten_days_ago = time.time() - 10 * 86400
    for name in ("restored-lately", "stale"):
        os.utime(root / name / RECORD_FILE, (ten_days_ago, ten_days_ago))
    snap_mod.mark_used(root / "restored-lately")
    assert snap_mod.last_used(root / "stale") == pytest.approx(ten_days_ago)
    # Without --unused-for all three are restorable, so all three stay.
    assert snap_mod.prune_snapshots(tmp_path, binary="qemu-system-x86_64", dry_run=True) == []
    removed = snap_mod.prune_snapshots(tmp_path, binary="qemu-system-x86_64",
                                       unused_for=7 * 86400)
    assert [d.name for d, _ in removed] == ["stale"]
    assert sorted(p.name for p in root.iterdir()) == ["made-lately", "restored-lately"]
    # A torn build keeps its hour of grace (it may still be running), however short
    # --unused-for is.
    (root / "torn").mkdir()
    forty_minutes_ago = time.time() - 40 * 60
    os.utime(root / "torn", (forty_minutes_ago, forty_minutes_ago))
    removed = snap_mod.prune_snapshots(tmp_path, binary="qemu-system-x86_64", unused_for=60)
    assert removed == [] and (root / "torn").is_dir()


@pytest.mark.parametrize("text", ["0", "-3", "soon", "inf", "nan"])
def test_prune_refuses_a_bad_number_of_days(text: str,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    from harness.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(["images", "prune", "--unused-for", text, "--dry-run"])
    assert exit_.value.code == 2
    assert "not a positive number of days" in capsys.readouterr().err


def test_the_observation_before_a_panic_brings_the_guests_clock_offset_up_to_date() -> None:
    from harness.topology import Topology, live

    guest = SimpleNamespace(clock_offset=0.0, run=lambda command, check: SimpleNamespace(
        stdout="@@release\n6.12\n@@clock\n" + ADJTIMEX + "@@end\n"))
    topology = live.observe(guest)  # type: ignore[arg-type]
    assert topology.guest_clock == pytest.approx(1000.25)
    assert guest.clock_offset == pytest.approx(topology.taken_at - 1000.25, abs=1.0)
    assert Topology.from_json_dict(topology.to_json_dict()).guest_clock == topology.guest_clock


def test_a_cached_snapshot_is_reused_and_a_torn_one_made_again(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    built: list[Path] = []

    def build(image: Any, config: GuestConfig, k: SnapshotKey, directory: Path,
              cache_dir: Path | None, evidence: Path | None) -> Snapshot:
        built.append(directory)
        write_snapshot(directory, k)
        return Snapshot.load(directory, k)

    monkeypatch.setattr(snap_mod, "_build", build)
    img, config = image(tmp_path), GuestConfig(snapshot=True)
    cache = tmp_path / "cache"
    first = snap_mod.ensure_snapshot(img, config, accel="tcg", binary="q", cache_dir=cache)
    again = snap_mod.ensure_snapshot(img, config, accel="tcg", binary="q", cache_dir=cache)
    assert again == first and built == [first.directory]
    (first.directory / "guest.ram").unlink()            # torn: made again, not refused
    snap_mod.ensure_snapshot(img, config, accel="tcg", binary="q", cache_dir=cache)
    assert built == [first.directory] * 2
    assert first.directory.name.startswith("trixie-cloud-57d6b348468bb0e7-")


def test_the_readiness_check_on_the_serial_shell_reads_only_its_answer(tmp_path: Path) -> None:
    from harness.guest.console import Console
    from harness.guest.restore import _ask_console, _console_answer

    console = Console(tmp_path / "console", tmp_path / "console.log")
    typed: list[str] = []
    console.send = typed.append  # type: ignore[method-assign]
    guest = SimpleNamespace(console=console)
    console.feed("[    4.1] HARNESS: ready uptime=4.10\n")
    asked = _ask_console(guest)  # type: ignore[arg-type]
    t = asked.token
    # The shell echoes the typed line (the markers quoted: no match), then answers.
    console.feed(f"~ # {typed[0]}\n{t}-begin\n{ADJTIMEX}==readiness==\n{report()}{t}-end\n~ # \n")
    answer = _console_answer(guest, asked, timeout=1)  # type: ignore[arg-type]
    assert answer.out == ADJTIMEX + "==readiness==\n" + report()
    assert asked.sent_wall <= answer.before <= answer.after
    restored = RestoredGuest("unused")
    check_restored(restored, snapshot(tmp_path), answer)  # type: ignore[arg-type]
    assert restored.readiness.kdump_loaded and restored.clock_offset > 1.7e9


def test_a_ram_files_zero_pages_go_back_to_the_file_system(tmp_path: Path) -> None:
    ram = tmp_path / "guest.ram"
    page = 4096
    content = (b"\0" * (256 * page) + b"x" * page + b"\0" * (3 * page) + b"y" + b"\0" * (page - 1)
               + b"\0" * (300 * page))
    ram.write_bytes(content)
    with open(ram, "r+b") as f:
        f.truncate(len(content) + (1 << 20))       # a hole at the end stays one
    before = ram.stat().st_blocks
    freed = snap_mod.dig_holes(ram)
    assert freed == (256 + 3 + 300) * page
    assert ram.read_bytes()[:len(content)] == content
    assert ram.stat().st_blocks * 512 <= before * 512 - freed + page
    assert snap_mod.dig_holes(ram) == 0            # one pass finds them all
