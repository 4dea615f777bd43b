"""``kdump-harness images``: build, list, locate and lock guest images."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import UsageError
from ..model import Flavour, values

if TYPE_CHECKING:    # the parser is built without loading the image builder
    from ..images.builder import GuestImage

HELP_PROFILE = "guest profile: bookworm (Linux 6.1), trixie (6.12), sid (7.x); default trixie"
HELP_FLAVOUR = "Debian kernel flavour: cloud (default, smaller, boots faster) or generic"
HELP_MIRROR = "Debian archive URI (default: the first Debian archive in the host's apt sources)"


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``images`` and its subcommands to the top-level parser."""
    p = sub.add_parser("images", help="build and manage guest images",
                       description="Guest images: a Debian (or your own) kernel plus a busybox "
                                   "initramfs with kexec, makedumpfile and dropbear, built "
                                   "from packages pinned in guest-images/packages.lock.json.")
    images = p.add_subparsers(dest="images_command", metavar="SUBCOMMAND")
    p.set_defaults(func=lambda args: _help(p))

    build = images.add_parser("build", help="build an image (or reuse the cached one)")
    _add_selection(build)
    build.add_argument("--mirror", help=HELP_MIRROR)
    build.add_argument("--rebuild", action="store_true",
                       help="build again even if the image is cached")
    build.add_argument("--locked", action="store_true",
                       help="fail if the archive no longer has a pinned version (default: "
                            "build from the suite's current one and list the differences)")
    build.add_argument("--json", action="store_true", help="print the image as JSON")
    build.set_defaults(func=cmd_build)

    listing = images.add_parser("list", help="list cached images")
    listing.add_argument("--json", action="store_true", help="machine-readable output")
    listing.set_defaults(func=cmd_list)

    path = images.add_parser("path", help="print the cache directory of an image")
    _add_selection(path)
    path.set_defaults(func=cmd_path)

    prune = images.add_parser("prune", help="remove cached images nothing uses any more",
                              description="Remove every cached image except the current one "
                                          "of each Debian profile and flavour (builder, "
                                          "rootfs and lock changes leave old ones behind, "
                                          "~100 MiB each), and the guest snapshots of "
                                          "images gone or of another QEMU build "
                                          "(with --unused-for, also those not used "
                                          "for that long). "
                                          "Downloaded packages stay.")
    prune.add_argument("--keep-custom", action="store_true",
                       help="keep images of your own kernels too")
    prune.add_argument("--unused-for", type=_days, metavar="DAYS",
                       help="also remove snapshots not restored (nor made) for DAYS days: "
                            "those of configurations no test uses any more")
    prune.add_argument("--dry-run", action="store_true", help="only say what would go")
    prune.set_defaults(func=cmd_prune)

    update = images.add_parser("update", help="re-pin packages to the suites' current versions",
                               description="Run apt-get update in a private apt state, pin the "
                                           "current version, pool file and SHA256 of every "
                                           "package of the profile(s), download and verify "
                                           "them, and rewrite the lock file.")
    update.add_argument("--profile", help="only this profile (default: all)")
    update.add_argument("--mirror", help=HELP_MIRROR)
    update.add_argument("--no-download", action="store_true",
                        help="take the SHA256 from the signed index without downloading")
    update.set_defaults(func=cmd_update)


def _help(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2


def _add_selection(p: argparse.ArgumentParser) -> None:
    p.add_argument("--profile", help=HELP_PROFILE)
    p.add_argument("--flavour", default="cloud", choices=values(Flavour), help=HELP_FLAVOUR)
    p.add_argument("--kernel", type=Path, metavar="BZIMAGE",
                   help="your own kernel (arch/x86/boot/bzImage) instead of Debian's")
    p.add_argument("--modules", type=Path, metavar="DIR",
                   help="with --kernel: INSTALL_MOD_PATH of `make modules_install`")
    p.add_argument("--config", type=Path, metavar="FILE",
                   help="with --kernel: its .config, checked before anything boots")
    p.add_argument("--rootfs", type=Path, metavar="DIR",
                   help="guest scripts tree (default: guest-images/rootfs)")


def _selection(args: argparse.Namespace) -> dict[str, Any]:
    if (args.modules or args.config) and not args.kernel:
        raise UsageError("--modules and --config go with --kernel")
    from ..images.profiles import load_profiles

    profile = args.profile or load_profiles().default_profile
    return {"profile": profile, "flavour": args.flavour, "kernel": args.kernel,
            "modules_dir": args.modules, "config": args.config, "rootfs": args.rootfs}


def _progress_to_stderr() -> None:
    """Show the builder's progress (downloads, builds) unless logging is set up already."""
    import logging

    logger = logging.getLogger("harness.images")
    if not logger.handlers and not logging.getLogger().handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("kdump-harness: %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)


def _mib(size: int) -> str:
    return f"{size / (1 << 20):.1f} MiB"


def describe(image: GuestImage) -> str:
    """A short human summary of an image."""
    lines = [
        (f"{image.profile}/{image.flavour}: Linux {image.kernel_release}"
        f" ({'cached' if image.cached else f'built in {image.build_seconds:.1f} s'})"),
        f"  kernel          {image.kernel_path}",
        f"  initrd          {image.initrd_path}",
        f"  capture initrd  {image.capture_initrd_path}",
        f"  crash hot-plug  {'yes' if image.crash_hotplug else 'no'}",
    ]
    for group, modules in image.module_groups.items():
        state = f"{len(modules)} modules" if modules else "nothing to load"
        if image.builtin_modules.get(group):
            state += f"; built in: {', '.join(image.builtin_modules[group])}"
        if image.unavailable_modules.get(group):
            state += f"; not in this kernel: {', '.join(image.unavailable_modules[group])}"
        lines.append(f"  modules {group:<7} {state}")
    if image.sizes:
        lines.append("  sizes           " + ", ".join(f"{name} {_mib(size)}"
                                                  for name, size in image.sizes.items()))
    for name, (locked, used) in sorted(image.lock_drift.items()):
        lines.append(f"  not as locked   {name}: {locked or '-'} -> {used or '-'}")
    return "\n".join(lines)


def _json(image: GuestImage) -> dict[str, Any]:
    data = image.to_json()
    data.update(cached=image.cached, directory=str(image.directory),
                kernel_path=str(image.kernel_path), initrd_path=str(image.initrd_path),
                capture_initrd_path=str(image.capture_initrd_path))
    return data


def cmd_build(args: argparse.Namespace) -> int:
    from ..images import build_image

    _progress_to_stderr()
    image = build_image(**_selection(args), mirror=args.mirror, rebuild=args.rebuild,
                        lock="strict" if args.locked else None)
    if args.json:
        print(json.dumps(_json(image), indent=2, sort_keys=True))
    else:
        print(describe(image))
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    from ..images import list_images

    images = list_images()
    if args.json:
        print(json.dumps([_json(i) for i in images], indent=2, sort_keys=True))
        return 0
    if not images:
        print("no images cached yet: run `kdump-harness images build`", file=sys.stderr)
        return 0
    for image in images:
        size = image.sizes.get("initrd.cpio", 0) + image.sizes.get("vmlinuz", 0)
        print(f"{image.profile:<9} {image.flavour:<8} {image.kernel_release:<28} "
              f"{_mib(size):>10}  {image.directory}")
    return 0


def cmd_path(args: argparse.Namespace) -> int:
    from ..images import image_path

    path = image_path(**_selection(args))
    print(path)
    if not (path / "image.json").is_file():
        print("kdump-harness: that image is not built yet: run `kdump-harness images build` "
              "with the same options", file=sys.stderr)
        return 1
    return 0


def _days(text: str) -> float:
    try:
        days = float(text)
    except ValueError:
        days = -1.0
    if not days > 0 or days == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number of days")
    return days


def cmd_prune(args: argparse.Namespace) -> int:
    from ..guest.accel import qemu_binary
    from ..guest.snapshot import prune_snapshots
    from ..images.builder import prune_images

    removed = prune_images(keep_custom=args.keep_custom, dry_run=args.dry_run)
    verb = "would remove" if args.dry_run else "removed"
    for directory, size in removed:
        print(f"{verb} {directory} ({_mib(size)})")
    print(f"{verb} {len(removed)} image(s), {_mib(sum(size for _, size in removed))}")
    # Snapshots of those images, or of another QEMU build, can never be restored.
    unused_for = args.unused_for * 86400 if args.unused_for is not None else None
    snapshots = prune_snapshots(binary=qemu_binary(), dry_run=args.dry_run,
                                gone_images={directory for directory, _ in removed},
                                unused_for=unused_for)
    for directory, size in snapshots:
        print(f"{verb} {directory} ({_mib(size)})")
    print(f"{verb} {len(snapshots)} snapshot(s), {_mib(sum(size for _, size in snapshots))}")
    return 0


def cmd_update(args: argparse.Namespace) -> int:
    from ..images.builder import lock_file_path
    from ..images.cache import Cache
    from ..images.lockfile import load_lock, save_lock
    from ..images.packages import update_lock

    _progress_to_stderr()
    from ..images.profiles import load_profiles

    profiles = load_profiles()
    chosen = [profiles.get(args.profile)] if args.profile else list(profiles.profiles.values())
    path = lock_file_path()
    lock = update_lock(load_lock(path), chosen, Cache(), args.mirror,
                       download=not args.no_download)
    save_lock(lock, path)
    for profile in chosen:
        for flavour, locked in lock.profiles[profile.name].flavours.items():
            print(f"{profile.name}/{flavour}: Linux {locked.kernel.release}, "
                  f"{len(locked.packages)} packages pinned")
    print(f"wrote {path}")
    return 0
