"""``kdump-harness crash``: boot, panic, collect, and print the outcome."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from .common import (
    add_guest_options,
    add_image_options,
    add_panic_options,
    build_image_from_args,
    fmt_seconds,
    guest_config,
    print_json,
    run_dir,
)

if TYPE_CHECKING:    # the parser is built without loading the guest machinery
    from ..api import CaptureResult


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("crash", help="boot a guest, panic it and collect the vmcore",
                       description="Boot a kdump-ready guest, panic it, follow the capture "
                                   "kernel and collect the dump. Exit status 0 only when a "
                                   "vmcore was captured.")
    add_image_options(p)
    add_guest_options(p)
    add_panic_options(p)
    p.set_defaults(func=cmd_crash)


def print_capture(result: CaptureResult, out: object) -> None:
    from ..api import Outcome

    t = result.times
    print(f"outcome: {result.outcome.value}: {result.reason}")
    if result.panic_message:
        print(f"panic:   {result.panic_message}")
    print(f"  trigger to panic               {fmt_seconds(t.panic)}\n"
          f"  panic to capture userspace     {fmt_seconds(t.capture_userspace)}\n"
          f"  dump written (in guest)        {fmt_seconds(t.dump_written)}\n"
          f"  written to collected on host   {fmt_seconds(t.collected)}")
    for name, path in sorted(result.files.items()):
        print(f"  {name:30} {path}")
    print(f"  evidence                       {out}")
    if result.outcome is not Outcome.CAPTURED:
        print("console tail:\n" + result.console_tail, file=sys.stderr)


def cmd_crash(args: argparse.Namespace) -> int:
    from ..api import Guest, check_trigger, panic_and_capture

    config = guest_config(args, capture_mode=args.mode)
    check_trigger(args.trigger, tuple(args.cpu), max_cpus=config.max_cpus)
    image = build_image_from_args(args)
    out = run_dir(args, "crash")
    with Guest(image, config, out) as guest:
        result = panic_and_capture(guest, trigger=args.trigger, cpus=tuple(args.cpu), out=out,
                                   during_reload=args.during_reload)
    if args.json:
        print_json(result.to_json_dict() | {"run_dir": str(out)})
    else:
        print_capture(result, out)
    return 0 if result.captured else 1
