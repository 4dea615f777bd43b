"""``kdump-harness vmcore``: inspect a dump, verify it against a topology snapshot.

It uses the pure dump layer (``harness.vmcore``) alone, not the whole API: no guest
machinery is loaded, so it starts in well under 100 ms.

Exit status: 0 the dump is accurate (or inspect succeeded), 1 it is not, 2 bad input (a
malformed dump, a missing file, a snapshot that does not load), reported as one line on
standard error naming the file, and for dumps the offset and field.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import VmcoreFormatError
from ..vmcore.constants import DumpFormat

if TYPE_CHECKING:    # each command loads what it uses: inspect needs no verifier
    from ..topology import Topology
    from ..vmcore import Dump

EXIT_ACCURATE = 0
EXIT_NOT_ACCURATE = 1
EXIT_BAD_INPUT = 2

FORMAT_CHOICES = ("auto", *(f.value for f in DumpFormat))
_PROG = "kdump-harness vmcore"


class _BadInput(Exception):
    """A one-line reason the command cannot run on its input."""


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``vmcore`` command (``inspect``, ``verify``, ``rebuild``) to a CLI."""
    parser = subparsers.add_parser(
        "vmcore", help="inspect crash dumps and verify them against a topology",
        description="Read ELF, kdump-compressed and flattened dumps, or a raw elfcorehdr, "
                    "and check them against the topology the guest had at the panic.")
    sub = parser.add_subparsers(dest="vmcore_command", metavar="SUBCOMMAND")
    parser.set_defaults(func=lambda args: _print_help(parser))

    inspect = sub.add_parser("inspect", help="print what a dump holds (headers only)",
                             description="Print a dump's format, CPU notes, VMCOREINFO and the "
                                         "memory it describes. Reads headers only.")
    inspect.add_argument("file", type=Path, metavar="FILE")
    _add_format_option(inspect)
    inspect.add_argument("--json", action="store_true", help="machine-readable output")
    inspect.set_defaults(func=cmd_inspect)

    check = sub.add_parser("verify", help="check a dump against a topology snapshot",
                           description="Compare a dump's CPU notes, memory ranges and "
                                       "VMCOREINFO with the topology snapshot taken just "
                                       "before the panic. Exit 0 if accurate, 1 if not.")
    check.add_argument("file", type=Path, metavar="FILE")
    check.add_argument("--topology", type=Path, required=True, metavar="SNAPSHOT.json",
                       help="the observed topology snapshot taken before the panic")
    check.add_argument("--expected", type=Path, metavar="SNAPSHOT.json",
                       help="the QMP (expected) snapshot: names DIMMs the guest view lacks, "
                            "and its devices are cross-checked with the guest's System RAM")
    check.add_argument("--raw-header", type=Path, metavar="FILE",
                       help="the first kernel's elfcorehdr read from guest memory")
    check.add_argument("--dmesg", type=Path, metavar="FILE",
                       help="the kernel log extracted from the dump (makedumpfile --dump-dmesg)")
    check.add_argument("--panic-window", nargs=2, type=float, metavar=("START", "END"),
                       help="host wall-clock seconds (Unix time) around the panic trigger")
    check.add_argument("--panic-cpu", type=int, metavar="N",
                       help="the CPU that panicked, if known (its note must not be idle)")
    check.add_argument("--require-memory", action="store_true",
                       help="PT_LOAD data missing from the file is an error (default: a "
                            "headers-only copy is fine)")
    _add_format_option(check)
    check.add_argument("--json", action="store_true",
                       help="machine-readable output (always every finding)")
    check.add_argument("--verbose", "-v", action="store_true",
                       help="list every finding by area, not only the causes, warnings and a "
                            "summary of what matched")
    check.set_defaults(func=cmd_verify)

    rebuild = sub.add_parser("rebuild", help="rebuild a flattened dump (makedumpfile -R)",
                             description="Turn a makedumpfile -F stream into the regular file "
                                         "(streaming, bounded memory; FLAT may be - for stdin).")
    rebuild.add_argument("flat", metavar="FLAT")
    rebuild.add_argument("out", type=Path, metavar="OUT")
    rebuild.set_defaults(func=cmd_rebuild)


def _add_format_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--format", default="auto", choices=FORMAT_CHOICES,
                        help="the dump's format (default: detect from the content)")


def _print_help(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return EXIT_BAD_INPUT


def _fail(exc: BaseException | str) -> int:
    print(f"{_PROG}: error: {exc}", file=sys.stderr)
    return EXIT_BAD_INPUT


def _open(path: Path, fmt: str) -> Dump:
    from ..vmcore import open_dump

    try:
        return open_dump(path, format=fmt)
    except OSError as exc:
        raise _BadInput(f"{path}: {exc.strerror or exc}") from exc


def _load_topology(path: Path) -> Topology:
    from ..topology import Topology

    try:
        data: Any = json.loads(path.read_text())
        if not isinstance(data, dict):
            raise TypeError("the top level is not an object")
        return Topology.from_json_dict(data)
    except OSError as exc:
        raise _BadInput(f"{path}: {exc.strerror or exc}") from exc
    except (ValueError, KeyError, TypeError) as exc:
        raise _BadInput(f"{path}: not a topology snapshot ({type(exc).__name__}: {exc})") from exc


def _read_text(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError as exc:
        raise _BadInput(f"{path}: {exc.strerror or exc}") from exc


def cmd_inspect(args: argparse.Namespace) -> int:
    """``vmcore inspect FILE``."""
    try:
        dump = _open(args.file, args.format)
    except (VmcoreFormatError, _BadInput) as exc:
        return _fail(exc)
    if args.json:
        print(json.dumps(dump.to_json_dict(), indent=2, sort_keys=True))
    else:
        from ..vmcore import describe_dump

        print(describe_dump(dump))
    return EXIT_ACCURATE


def cmd_verify(args: argparse.Namespace) -> int:
    """``vmcore verify FILE --topology SNAPSHOT.json``."""
    from ..vmcore import verify

    try:
        topology = _load_topology(args.topology)
        expected = _load_topology(args.expected) if args.expected else None
        dump = _open(args.file, args.format)
        raw = _open(args.raw_header, DumpFormat.RAW_ELFCOREHDR.value) if args.raw_header else None
        dmesg = _read_text(args.dmesg) if args.dmesg else None
        window = None
        if args.panic_window:
            start, end = args.panic_window
            if end < start:
                raise _BadInput(f"--panic-window: END {end} is before START {start}")
            window = (start, end)
    except (VmcoreFormatError, _BadInput) as exc:
        return _fail(exc)
    try:
        report = verify(dump, topology, panic_window=window, raw_header=raw, dmesg=dmesg,
                        panic_cpu=args.panic_cpu, require_memory=args.require_memory,
                        expected=expected)
    except ValueError as exc:      # e.g. the two snapshots' devices overlap once combined
        return _fail(f"{args.topology}: {exc}")
    if args.json:
        print(json.dumps(report.to_json_dict(), indent=2, sort_keys=True))
    else:
        print(report.to_text(verbose=args.verbose))
    return EXIT_ACCURATE if report.accurate else EXIT_NOT_ACCURATE


def cmd_rebuild(args: argparse.Namespace) -> int:
    """``vmcore rebuild FLAT OUT``."""
    from ..vmcore.flattened import rebuild_flattened_file

    try:
        size = rebuild_flattened_file(args.flat, args.out)
    except VmcoreFormatError as exc:
        return _fail(exc)
    except OSError as exc:
        return _fail(f"{exc.filename or args.flat}: {exc.strerror or exc}")
    print(f"{args.out}: {size} bytes", file=sys.stderr)
    return EXIT_ACCURATE
