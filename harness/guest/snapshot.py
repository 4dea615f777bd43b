"""Snapshots of kdump-ready guests: made once, restored by every run that asks for one.

A snapshot is a guest stopped right after it became kdump-ready: its RAM as a file (the
snapshot's machine has file-backed RAM, shared while it is made, so the guest itself
writes it; restores map it privately, copy-on-write), QEMU's migration stream of
everything else (``x-ignore-shared``: without that RAM, ~0.5 MiB), and the first words of
its pre-connected SSH session (``presession.py``), beside the SSH key its ``/init`` trusts,
its readiness record and its boot console.  It is keyed like an
image: the image's own key, every ``GuestConfig`` field that shapes the machine or the
guest's boot, QEMU's version line and the accelerator; a restore needs QEMU's command line
to be the snapshot's (``restore.py``), so anything else would be refused by QEMU or, worse,
run a guest that is not the one asked for.

Layout under the cache root (``harness.images.cache``)::

    snapshots/<image dir>-<key16>/   snapshot.json (last), guest.ram, state, ssh-preamble,
                                     ssh-key, console-boot.log, readiness.json,
                                     qemu-cmdline.txt
    locks/snapshot-<key16>.lock      one builder per snapshot (xdist workers, parallel runs)
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import SnapshotError
from ..images.cache import Cache
from ..model import Accel
from ..timeouts import wait_until
from .accel import qemu_version_output
from .config import GuestConfig, ImageLike
from .presession import start_presession
from .qemu_args import SnapshotRam

if TYPE_CHECKING:
    from .machine import Guest

log = logging.getLogger(__name__)

#: Bump when the layout or the way a snapshot is made changes.  2: RAM file, device state
#: and the pre-connected SSH session (was 1: one mapped-ram stream, SSH after the restore).
#: 3: TCG guests' first kernel boots with no_ipi_broadcast=1 (qemu_args.GuestKernelOptions).
SNAPSHOT_FORMAT = 3
#: GuestConfig fields that do not shape the snapshot (the accelerator is keyed by the one
#: that actually runs, never ``auto``).
_PER_RUN = ("snapshot", "boot_retries", "accel", "cpu_unplug")
RAM_FILE = "guest.ram"
STATE_FILE = "state"
PREAMBLE_FILE = "ssh-preamble"
RECORD_FILE = "snapshot.json"
#: Touched at every restore: its time is the snapshot's last use (``prune --unused-for``).
USED_FILE = "last-used"
#: The RAM is the file the guest wrote: the stream holds everything else.  Restoring it
#: costs no copy (a mapped-ram stream of the same guest: 151 MiB read into fresh memory,
#: QEMU start to running 0.095 s; now 0.057 s, QEMU 10.0).
CAPABILITIES = [{"capability": "x-ignore-shared", "state": True}]


def qemu_version_line(binary: str) -> str:
    """QEMU's own version line (Debian's package version included): a snapshot is only
    restored by the QEMU build that wrote it."""
    out = qemu_version_output(binary)
    return out.splitlines()[0].strip() if out else "unknown"


@dataclass(frozen=True)
class SnapshotKey:
    """Everything that must match for a restore to give the guest that was asked for."""

    image: str            # the image's directory name (profile, flavour, content key)
    image_key: str
    config: dict[str, Any]
    qemu: str
    accel: str
    format: int = SNAPSHOT_FORMAT

    @classmethod
    def of(cls, image: ImageLike, config: GuestConfig, *, accel: str,
           binary: str) -> SnapshotKey:
        shape = {k: v for k, v in json.loads(json.dumps(config.to_json_dict())).items()
                 if k not in _PER_RUN}
        directory = Path(getattr(image, "directory", image.kernel_path.parent))
        return cls(image=directory.name, image_key=str(getattr(image, "key", directory.name)),
                   config=shape, qemu=qemu_version_line(binary), accel=accel)

    @property
    def digest(self) -> str:
        text = json.dumps(asdict(self), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()

    def differences(self, other: SnapshotKey) -> list[str]:
        """What differs, field by field (config fields by name), for error messages."""
        mine, theirs = asdict(self), asdict(other)
        out = [f"{k}: {theirs[k]!r} -> {mine[k]!r}" for k in mine
               if k != "config" and mine[k] != theirs[k]]
        keys = sorted(set(self.config) | set(other.config))
        out += [f"config.{k}: {other.config.get(k)!r} -> {self.config.get(k)!r}"
                for k in keys if self.config.get(k) != other.config.get(k)]
        return out


@dataclass(frozen=True)
class Snapshot:
    """A complete snapshot on disk (``snapshot.json`` is written last)."""

    directory: Path
    key: SnapshotKey
    readiness: dict[str, str]
    saved_at: float              # host wall clock when the guest was stopped
    save_seconds: float          # stop to the state file written
    boot_seconds: float          # the cold boot it saved (QEMU start to kdump-ready)

    @property
    def state_path(self) -> Path:
        return self.directory / STATE_FILE

    @property
    def ram_path(self) -> Path:
        return self.directory / RAM_FILE

    @property
    def preamble(self) -> bytes:
        return (self.directory / PREAMBLE_FILE).read_bytes()

    @property
    def ssh_key_path(self) -> Path:
        return self.directory / "ssh-key"

    @property
    def disk_bytes(self) -> int:
        """What the RAM and state files take on disk (the RAM file is sparse: its
        ``st_size`` is all of RAM, its blocks what the guest ever wrote)."""
        return sum(p.stat().st_blocks * 512 for p in (self.ram_path, self.state_path))

    def to_json_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["directory"] = str(self.directory)
        return d

    @classmethod
    def load(cls, directory: Path, expected: SnapshotKey | None = None) -> Snapshot:
        """Read a snapshot; ``SnapshotError`` when it is incomplete or ``expected`` differs."""
        try:
            data = json.loads((directory / RECORD_FILE).read_text())
            snap = cls(directory=directory, key=SnapshotKey(**data["key"]),
                       readiness=dict(data["readiness"]), saved_at=float(data["saved_at"]),
                       save_seconds=float(data["save_seconds"]),
                       boot_seconds=float(data["boot_seconds"]))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise SnapshotError(f"{directory} is not a complete snapshot ({exc})") from exc
        missing = [p.name for p in (snap.state_path, snap.ram_path, snap.ssh_key_path,
                                     directory / PREAMBLE_FILE) if not p.is_file()]
        if missing:
            raise SnapshotError(f"{directory} is not a complete snapshot (no "
                                f"{', '.join(missing)})")
        if expected is not None and snap.key != expected:
            raise SnapshotError(f"snapshot {directory} was made for another guest: "
                                + "; ".join(expected.differences(snap.key)))
        return snap


def snapshot_dir(cache: Cache, key: SnapshotKey) -> Path:
    return cache.root / "snapshots" / f"{key.image}-{key.digest[:16]}"


def ensure_snapshot(image: ImageLike, config: GuestConfig, *, accel: str, binary: str,
                    cache_dir: Path | None = None, evidence: Path | None = None) -> Snapshot:
    """The snapshot for this guest: from the cache, else made now (under a lock, so
    parallel workers make it once).  A cached one that does not load is made again.  A
    build that fails leaves its guest's evidence in ``evidence``."""
    cache = Cache(cache_dir)
    key = SnapshotKey.of(image, config, accel=accel, binary=binary)
    directory = snapshot_dir(cache, key)
    with cache.lock(f"snapshot-{key.digest[:16]}"):
        if directory.exists():
            try:
                return Snapshot.load(directory, key)
            except SnapshotError:
                shutil.rmtree(directory, ignore_errors=True)   # stale or torn: make anew
        return _build(image, config, key, directory, cache_dir, evidence)


def _build(image: ImageLike, config: GuestConfig, key: SnapshotKey, directory: Path,
           cache_dir: Path | None, evidence: Path | None = None) -> Snapshot:
    """Boot the guest cold, stop it kdump-ready and save it into ``directory``."""
    from .machine import Guest  # machine imports restore, which imports this module

    directory.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{directory.name}-", dir=directory.parent))
    cold = replace(config, snapshot=False, accel=Accel(key.accel))
    guest = Guest(image, cold, scratch / "boot", cache_dir=cache_dir, restorable=True)
    guest.snapshot_ram = SnapshotRam(scratch / RAM_FILE, shared=True)
    try:
        guest.launch()
        host_end, preamble = start_presession(guest, guest.timeouts.ssh_connect)
        (scratch / PREAMBLE_FILE).write_bytes(preamble)
        with host_end:  # connected until the state is saved: nothing the guest sends is lost
            saved_at, seconds = save_state(guest, scratch / STATE_FILE)
        boot = guest.workdir
        shutil.copyfile(boot / "ssh-key", scratch / "ssh-key")
        os.chmod(scratch / "ssh-key", 0o600)
        for name in ("readiness.json", "qemu-cmdline.txt"):
            shutil.copyfile(boot / name, scratch / name)
        shutil.copyfile(boot / "console.log", scratch / "console-boot.log")
        snap = Snapshot(directory, key, dict(guest.readiness.values), saved_at, seconds,
                        guest.times.kdump_ready or 0.0)
    except BaseException:
        guest.shutdown()
        if evidence is not None and (scratch / "boot").exists():
            shutil.move(scratch / "boot", evidence)
        shutil.rmtree(scratch, ignore_errors=True)
        raise
    guest.shutdown()
    shutil.rmtree(scratch / "boot", ignore_errors=True)
    try:
        dig_holes(scratch / RAM_FILE)
    except OSError as exc:  # a file system without holes: a larger file, still a snapshot
        log.warning("the snapshot's RAM file keeps its zero pages: %s", exc)
    record = snap.to_json_dict()
    del record["directory"]
    (scratch / RECORD_FILE).write_text(json.dumps(record, indent=2) + "\n")
    os.rename(scratch, directory)
    return snap


#: fallocate(2) flags (linux/falloc.h): free the range, keep the file's size.
_PUNCH_HOLE = 0x02 | 0x01
_PAGE = 4096
_CHUNK = 1 << 20


def dig_holes(path: Path) -> int:
    """Give the zero pages of a RAM file back to the file system; returns the bytes freed.
    The file holds every page the guest ever wrote, a third of them zero again (trixie:
    296 -> 165 MiB, 0.2 s).  Not util-linux's ``fallocate --dig-holes``: on the file
    QEMU had just written it left a third of them until a second pass (2.38)."""
    libc = ctypes.CDLL(None, use_errno=True)
    freed = 0
    with open(path, "r+b") as f:
        fd = f.fileno()

        def punch(start: int, stop: int) -> None:
            nonlocal freed
            if libc.fallocate(fd, _PUNCH_HOLE, ctypes.c_long(start),
                              ctypes.c_long(stop - start)) != 0:
                raise OSError(ctypes.get_errno(), f"punching a hole in {path}")
            freed += stop - start

        for start, stop in _data_extents(fd):
            zero_from: int | None = None
            for pos in range(start, stop, _CHUNK):
                data = os.pread(fd, min(_CHUNK, stop - pos), pos)
                for i in range(0, len(data) - _PAGE + 1, _PAGE):
                    if data.count(0, i, i + _PAGE) == _PAGE:
                        zero_from = pos + i if zero_from is None else zero_from
                    elif zero_from is not None:
                        punch(zero_from, pos + i)
                        zero_from = None
            if zero_from is not None:
                punch(zero_from, stop)
    return freed


def _data_extents(fd: int) -> list[tuple[int, int]]:
    """The file's data ranges (``SEEK_DATA``/``SEEK_HOLE``), found before any is punched."""
    size, pos, out = os.fstat(fd).st_size, 0, []
    while pos < size:
        try:
            pos = os.lseek(fd, pos, os.SEEK_DATA)
        except OSError:         # ENXIO: no data after pos
            break
        end = os.lseek(fd, pos, os.SEEK_HOLE)
        out.append((pos, end))
        pos = end
    return out


def save_state(guest: Guest, path: Path) -> tuple[float, float]:
    """Stop ``guest`` and write its state to ``path``; returns (host wall clock at the
    stop, seconds it took).  The guest stays stopped: only ``quit`` is left for it."""
    # A restored guest's SSH peer would be gone: leave no session open inside it.
    guest.ssh.close()
    t0 = time.monotonic()
    guest.qmp.execute("stop")
    saved_at = time.time()
    guest.qmp.execute("migrate-set-capabilities", {"capabilities": CAPABILITIES})
    guest.qmp.execute("migrate", {"uri": f"file:{path}"})
    wait_migration(guest, guest.timeouts.snapshot_save, "saving the guest to a snapshot")
    return saved_at, time.monotonic() - t0


def wait_migration(guest: Guest, timeout: float, what: str) -> None:
    """Until ``query-migrate`` says completed; a failed migration says QEMU's reason."""
    last: dict[str, Any] = {}

    def done() -> bool:
        last.clear()
        last.update(guest.qmp.execute("query-migrate") or {})
        status = last.get("status")
        if status in ("failed", "cancelled"):
            raise SnapshotError(f"{what}: migration {status}: "
                                f"{last.get('error-desc', 'QEMU gave no reason')}")
        return status == "completed"

    wait_until(done, timeout=timeout, what=what, interval=0.01,
               describe=lambda: f"query-migrate: {json.dumps(last)}",
               health=lambda: guest.check_health(what, grace=0))


def mark_used(directory: Path) -> None:
    """Note a restore of the snapshot in ``directory`` (a file's time)."""
    try:
        (directory / USED_FILE).touch()
    except OSError:
        pass                    # a read-only cache restores all the same


def last_used(directory: Path) -> float:
    """When the snapshot was last restored, else made (host wall clock; ``OSError`` for a
    torn one, which has neither file)."""
    try:
        return (directory / USED_FILE).stat().st_mtime
    except FileNotFoundError:
        return (directory / RECORD_FILE).stat().st_mtime


def prune_snapshots(cache_dir: Path | None = None, *, binary: str | None = None,
                    gone_images: set[Path] | frozenset[Path] = frozenset(),
                    unused_for: float | None = None,
                    dry_run: bool = False) -> list[tuple[Path, int]]:
    """Remove snapshots nothing can restore any more: of an image no longer cached (or in
    ``gone_images``, about to go), of another QEMU build than ``binary`` or another
    ``SNAPSHOT_FORMAT``, or torn (no
    ``snapshot.json``: a build that died; only when an hour old, it may be running).
    With ``unused_for`` (seconds), also those not restored (nor made) for that long: a
    configuration no test uses any more keeps its snapshot, ~150 MiB, until its image goes.
    Returns (directory, bytes on disk) of each."""
    cache = Cache(cache_dir)
    root = cache.root / "snapshots"
    qemu = qemu_version_line(binary) if binary else None
    images = cache.images_dir()
    removed: list[tuple[Path, int]] = []
    with cache.lock("prune-snapshots"):
        for directory in sorted(root.iterdir()) if root.is_dir() else []:
            try:
                data = json.loads((directory / RECORD_FILE).read_text())
                image, made_by = images / data["key"]["image"], data["key"]["qemu"]
                keep = (image.is_dir() and image not in gone_images
                        and data["key"].get("format", 1) == SNAPSHOT_FORMAT
                        and (qemu is None or made_by == qemu)
                        and (unused_for is None
                             or time.time() - last_used(directory) < unused_for))
            except (OSError, ValueError, KeyError, TypeError):
                keep = time.time() - directory.stat().st_mtime < 3600
            if keep:
                continue
            size = sum(f.stat().st_blocks * 512 for f in directory.rglob("*") if f.is_file())
            removed.append((directory, size))
            if not dry_run:
                shutil.rmtree(directory, ignore_errors=True)
    return removed


__all__ = ["SNAPSHOT_FORMAT", "USED_FILE", "Snapshot", "SnapshotError", "SnapshotKey", "dig_holes",
           "ensure_snapshot", "last_used", "mark_used", "prune_snapshots", "qemu_version_line",
           "save_state", "snapshot_dir", "wait_migration"]
