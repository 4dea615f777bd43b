"""``kdump-harness boot``: boot a kdump-ready guest, report, then run a command or a shell."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from .common import (
    add_guest_options,
    add_image_options,
    build_image_from_args,
    fmt_seconds,
    guest_config,
    print_json,
    run_dir,
)

if TYPE_CHECKING:    # the parser is built without loading the guest machinery
    from ..api import Guest


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("boot", help="boot a kdump-ready guest and run a command or a shell",
                       description="Boot a guest, load the capture kernel, print readiness and "
                                   "phase timings, then run CMD (its exit status is passed on) "
                                   "or open an interactive shell.")
    add_image_options(p)
    add_guest_options(p)
    p.add_argument("--run", metavar="CMD", help="command to run in the guest")
    p.set_defaults(func=cmd_boot)


def cmd_boot(args: argparse.Namespace) -> int:
    from ..api import Guest

    image = build_image_from_args(args)
    config = guest_config(args)
    out = run_dir(args, "boot")
    with Guest(image, config, out) as guest:
        report = {
            "profile": image.profile, "kernel_release": image.kernel_release,
            "accel": guest.accel.name, "accel_reason": guest.accel.reason,
            "readiness": guest.readiness.values, "times": guest.times.as_dict(),
            "image_cached": getattr(image, "cached", None), "run_dir": str(out),
            "boot_faults": guest.boot_faults,
        }
        if args.json and not args.run:
            print_json(report)
            return 0
        if not args.json:
            print(f"guest booted: {image.profile} {image.kernel_release} "
                  f"({guest.accel.name}: {guest.accel.reason})", file=sys.stderr)
            print(guest.readiness.summary(), file=sys.stderr)
            for fault in guest.boot_faults:
                print(f"  note: {fault}", file=sys.stderr)
            t = guest.times
            print(f"  boot to userspace      {fmt_seconds(t.userspace)}\n"
                  f"  boot to SSH            {fmt_seconds(t.ssh_ready)}\n"
                  f"  kdump load (in guest)  {fmt_seconds(t.guest_kdump_load)}\n"
                  f"  boot to kdump-ready    {fmt_seconds(t.kdump_ready)}\n"
                  f"  evidence               {out}", file=sys.stderr)
        if args.run:
            result = guest.run(args.run)
            sys.stdout.write(result.stdout)
            sys.stderr.write(result.stderr)
            if args.json:
                report["command"] = {"status": result.status, "elapsed": result.elapsed}
                print_json(report)
            return result.status
        return interactive_shell(guest)


def interactive_shell(guest: Guest) -> int:
    """A raw-terminal shell over the guest's SSH channel (paramiko has no ready-made one)."""
    import os
    import select
    import termios
    import tty

    if not sys.stdin.isatty():
        print("no terminal: use --run CMD to run a command in the guest", file=sys.stderr)
        return 2
    transport = guest.ssh._transport
    assert transport is not None
    size = os.get_terminal_size()
    chan = transport.open_session()
    chan.get_pty(term=os.environ.get("TERM", "vt100"), width=size.columns, height=size.lines)
    chan.invoke_shell()
    old = termios.tcgetattr(sys.stdin)
    try:
        tty.setraw(sys.stdin.fileno())
        while True:
            r, _, _ = select.select([chan, sys.stdin], [], [])
            if chan in r:
                data = chan.recv(4096)
                if not data:
                    break
                os.write(sys.stdout.fileno(), data)
            if sys.stdin in r:
                data = os.read(sys.stdin.fileno(), 1024)
                if not data:
                    break
                chan.send(data)
    finally:
        termios.tcsetattr(sys.stdin, termios.TCSADRAIN, old)
    return chan.recv_exit_status() if chan.exit_status_ready() else 0
