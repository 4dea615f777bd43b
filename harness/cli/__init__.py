"""The ``kdump-harness`` command line.

Each command group lives in its own module with a ``register(subparsers)`` function;
errors the harness raises on purpose are printed as one clear line (plus evidence) and
never as a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import importlib
import io
import os
import sys
from collections.abc import Callable, Sequence

from .. import settings
from ..errors import GuestError, HarnessError, InfrastructureError, UsageError

#: Command modules, in the order their commands appear in ``--help``.
COMMAND_MODULES = ("run", "repro", "matrix", "report", "boot", "swarm", "crash", "vmcore", "images",
                   "doctor", "bench")

EXIT_OK = 0
EXIT_FINDING = 1      # the guest or the dump is wrong: a result, not a crash
EXIT_USAGE = 2
EXIT_INFRA = 3        # the harness, QEMU or the host failed: says nothing about the kernel


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kdump-harness",
        description="Boot Linux guests under QEMU, hot-plug DIMMs and vCPUs, panic them, "
                    "capture a vmcore with kdump and check it against the topology.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"{__name__}.{name}":
                continue  # a command group not built yet
            raise
        register: Callable[[argparse._SubParsersAction[argparse.ArgumentParser]], None] = (
            module.register)
        register(sub)
    return parser


@functools.cache
def _shared_parser() -> argparse.ArgumentParser:
    return build_parser()


def parse_run_options(argv: Sequence[str], where: str) -> argparse.Namespace:
    """``argv`` as ``kdump-harness run`` parses it, refused as ``UsageError`` naming
    ``where`` with argparse's complaint (recipes and matrix cells; the parser is built
    once: ~45 ms each time would add seconds to a matrix of a hundred cells)."""
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            return _shared_parser().parse_args(["run", *argv])
    except SystemExit:
        complaint = [line for line in err.getvalue().splitlines() if line.strip()]
        reason = complaint[-1].split("error: ", 1)[-1] if complaint else "not run options"
        raise UsageError(f"{where}: {reason} (in: {' '.join(argv) or '(none)'})") from None


def _setting_options(args: argparse.Namespace) -> dict[str, str | None]:
    """The command line's say in the harness's settings (None: not given)."""
    return {"accel": getattr(args, "accel", None), "mirror": getattr(args, "mirror", None),
            "tcg_threads": getattr(args, "tcg_threads", None),
            "lock": "strict" if getattr(args, "locked", False) else None}


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    # The words as typed: ``repro`` passes its recipe's on to every iteration.
    args.argv = list(argv) if argv is not None else sys.argv[1:]
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_USAGE
    try:
        with settings.configured(settings.from_sources(cli=_setting_options(args))):
            return int(args.func(args))
    except UsageError as exc:
        print(f"kdump-harness: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except InfrastructureError as exc:
        print(f"kdump-harness: harness error: {exc}", file=sys.stderr)
        return EXIT_INFRA
    except GuestError as exc:
        print(f"kdump-harness: {exc}", file=sys.stderr)
        return EXIT_FINDING
    except HarnessError as exc:
        print(f"kdump-harness: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("kdump-harness: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (`... | head`): stop quietly, as other tools do.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


if __name__ == "__main__":
    sys.exit(main())
