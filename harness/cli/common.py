"""Options shared by the commands that boot a guest, and the run-directory convention."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import UsageError
from ..model import Accel, CaptureMode, Flavour, KexecMode, Trigger, values
from ..settings import TcgThreads

if TYPE_CHECKING:    # the parser is built without loading the guest machinery
    from ..api import GuestConfig



def add_image_options(p: argparse.ArgumentParser) -> None:
    from ..images.profiles import load_profiles

    profiles = load_profiles()     # guest-images/profiles.toml names them, once
    g = p.add_argument_group("guest image")
    g.add_argument("--profile", default=profiles.default_profile,
                   choices=tuple(profiles.profiles),
                   help="Debian kernel and userspace: " + ", ".join(
                       f"{p.name} ({p.kernel_series})" for p in profiles.profiles.values()))
    g.add_argument("--flavour", default="cloud", choices=values(Flavour),
                   help="kernel flavour (cloud boots faster)")
    g.add_argument("--kernel", type=Path, help="your own bzImage instead of the profile's kernel")
    g.add_argument("--modules", type=Path,
                   help="modules tree for --kernel (INSTALL_MOD_PATH of make modules_install)")
    g.add_argument("--config", type=Path, help="the .config of --kernel, checked before booting")
    g.add_argument("--mirror", help="Debian mirror URI (default: the host's apt configuration)")
    g.add_argument("--locked", action="store_true",
                   help="fail if the archive no longer has a version packages.lock.json pins "
                        "(default: build from the suite's current version and say so; "
                        "also KDUMP_HARNESS_LOCK=strict)")


def add_guest_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("guest machine")
    g.add_argument("--memory", default="1G", help="boot memory (default 1G)")
    g.add_argument("--boot-cpus", dest="cpus", type=int, default=2,
                   help="vCPUs at boot (default 2)")
    g.add_argument("--cpus", dest="cpus", type=int, action=Deprecated, new="--boot-cpus",
                   help=argparse.SUPPRESS)
    g.add_argument("--maxcpus", type=int, default=8, help="vCPU slots for hot-plug (default 8)")
    g.add_argument("--slots", type=int, default=64, help="DIMM slots (default 64)")
    g.add_argument("--maxmem", default="20G", help="memory ceiling for hot-plug (default 20G)")
    g.add_argument("--crashkernel", default="256M", help="crashkernel= reservation (default 256M)")
    g.add_argument("--kexec", default="file", choices=values(KexecMode),
                   help="how to load the capture kernel: file (kexec_file_load), "
                        "classic (kexec_load --hotplug) or none")
    g.add_argument("--no-kexec-hotplug", action="store_true",
                   help="with --kexec classic: do not pass --hotplug")
    g.add_argument("--accel", default=None, choices=values(Accel),
                   help="auto tries KVM with a probe boot and falls back to TCG (default: "
                        "KDUMP_HARNESS_ACCEL, else auto)")
    g.add_argument("--tcg-threads", default=None, choices=values(TcgThreads),
                   help="TCG: a host thread per vCPU (multi) or one for all (single); auto: "
                        "single when the other guests' vCPUs and this guest's exceed the "
                        "host's cores (default: KDUMP_HARNESS_TCG_THREADS, else auto)")
    g.add_argument("--memhp-default-state", default="online_movable",
                   help="how hot-added memory comes online (online, online_movable, offline)")
    g.add_argument("--append", action="append", default=[], metavar="ARG",
                   help="extra first-kernel command line word (repeatable)")
    g.add_argument("--snapshot", action="store_true", default=None,
                   help="start from a cached snapshot of this guest taken kdump-ready (made "
                        "on first use; default: KDUMP_HARNESS_SNAPSHOT, else off)")
    g.add_argument("--out", type=Path, help="run directory for the evidence "
                                            "(default: ./runs/<command>-<time>)")
    g.add_argument("--json", action="store_true", help="machine-readable output")


def add_panic_options(p: argparse.ArgumentParser) -> argparse._ArgumentGroup:
    """The panic and capture option group (``crash`` and ``run``); returns it for more."""
    c = p.add_argument_group("panic and capture")
    c.add_argument("--trigger", default="sysrq", choices=values(Trigger),
                   help="sysrq (echo c > /proc/sysrq-trigger), nmi (QMP inject-nmi: the boot "
                        "CPU panics in NMI context), sysrq-multi (sysrq on several CPUs at "
                        "once: simultaneous panics)")
    c.add_argument("--cpu", type=int, action="append", default=[], metavar="N",
                   help="CPU to trigger on (repeat for sysrq-multi); with sysrq, the verifier "
                        "checks that this CPU's note shows the panic")
    c.add_argument("--during-reload", action="store_true",
                   help="panic while a kdump reload is in flight (the kexec lock is held)")
    c.add_argument("--mode", default="headers", choices=values(CaptureMode),
                   help="what the capture kernel saves: headers (default), elf, compressed, "
                        "full")
    return c


class Deprecated(argparse.Action):
    """An old spelling that still works, with a warning naming the new one.

    ``--cpus`` meant the boot count in boot/crash and the hot-add count in swarm/run; the
    two are now ``--boot-cpus`` and ``--add-cpus`` everywhere (the old spelling keeps the
    meaning it had in each command).
    """

    def __init__(self, option_strings: list[str], dest: str, *, new: str,
                 **kwargs: Any) -> None:
        super().__init__(option_strings, dest, **kwargs)
        self.new = new

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: str | None = None) -> None:
        print(f"kdump-harness: warning: {option_string} is deprecated here; use {self.new}",
              file=sys.stderr)
        setattr(namespace, self.dest, values)


def guest_config(args: argparse.Namespace, *, extra_kernel_args: tuple[str, ...] = (),
                 **overrides: Any) -> GuestConfig:
    """Build a validated ``GuestConfig`` from parsed options (``--append`` words first,
    then ``extra_kernel_args``)."""
    from ..api import GuestConfig
    from ..settings import current
    from ..units import parse_size

    capture = overrides.pop("capture_mode", getattr(args, "mode", "headers"))
    if capture not in values(CaptureMode):
        raise UsageError(f"--mode must be one of {', '.join(values(CaptureMode))}")
    cfg = GuestConfig(
        memory=parse_size(args.memory), cpus=args.cpus, max_cpus=args.maxcpus,
        memory_slots=args.slots, max_memory=parse_size(args.maxmem),
        crashkernel=args.crashkernel, kexec=args.kexec,
        kexec_hotplug=not args.no_kexec_hotplug, capture_mode=capture, accel=current().accel,
        memhp_default_state=args.memhp_default_state or None,
        kernel_args=(*args.append, *extra_kernel_args),
        snapshot=(current()["snapshot"] if getattr(args, "snapshot", None) is None
                  else args.snapshot),
        **overrides)
    cfg.validate()
    return cfg


def build_image_from_args(args: argparse.Namespace) -> Any:
    """Build (or take from the cache) the image the options ask for."""
    from ..api import build_image

    if (args.modules or args.config) and not args.kernel:
        raise UsageError("--modules and --config go with --kernel")
    from ..campaign.progress import long_step

    what = f"guest image for {args.profile}" + (f" with {args.kernel}" if args.kernel else "")
    with long_step(what, enabled=not getattr(args, "json", False)):
        image = build_image(args.profile, flavour=args.flavour, kernel=args.kernel,
                            modules_dir=args.modules, config=args.config, mirror=args.mirror,
                            lock="strict" if args.locked else None)
    if image.lock_drift:
        print(f"kdump-harness: note: {image.drift_summary()}", file=sys.stderr)
    return image


def run_dir(args: argparse.Namespace, command: str) -> Path:
    if args.out:
        path = Path(args.out)
    else:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        path = Path("runs") / f"{command}-{stamp}-{os.getpid()}"
    path.mkdir(parents=True, exist_ok=True)
    return path.resolve()


def print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, sort_keys=True, default=str))


def fmt_seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:6.2f} s"
