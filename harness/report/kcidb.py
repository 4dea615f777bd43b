"""The results in KernelCI's KCIDB I/O format (schema v5.3), one test per iteration.

Checkouts are kernel releases (the harness tests built kernels, not git trees: no commit
is known), builds are (release, guest profile) pairs, tests are iterations with path
``kdump_hotplug.<cell>``.  Status: a harness error is ``ERROR`` (the tested code's status
is unknown), the expected result ``PASS``, anything else ``FAIL``.  ``kcidb_io`` is not a
run-time dependency; tests/test_report.py validates this output with it and checks that
``VERSION`` is still its latest.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ..results import Family
from .load import LineSet, Loaded

ORIGIN = "kdump_harness"
VERSION = (5, 3)
TEST_ROOT = "kdump_hotplug"
ARCH = "x86_64"
_PATH_UNSAFE = re.compile(r"[^a-zA-Z0-9_-]+")


def _id(*parts: object) -> str:
    return f"{ORIGIN}:" + ":".join(str(p) for p in parts)


def kcidb_path(cell: str) -> str:
    """``kdump_hotplug.<cell>``, the cell made a valid KCIDB path node (dots would nest)."""
    return f"{TEST_ROOT}.{_PATH_UNSAFE.sub('_', cell).strip('_') or 'unnamed'}"


def _time(text: str) -> str | None:
    """RFC 3339 with an offset (KCIDB's date-time), or None when unreadable."""
    if not text:
        return None
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        return None
    return (when if when.tzinfo else when.replace(tzinfo=UTC)).isoformat()


def status(item: Loaded) -> str:
    if item.line.family is Family.HARNESS:
        return "ERROR"
    return "PASS" if item.line.passed else "FAIL"


def _test(item: Loaded) -> dict[str, Any]:
    line = item.line
    test: dict[str, Any] = {
        "id": _id(line.campaign, line.cell, line.kernel_release, line.iteration),
        "origin": ORIGIN, "build_id": _id(line.kernel_release, line.profile or "unknown"),
        "path": kcidb_path(line.cell), "status": status(item),
        "comment": f"{line.cell} #{line.iteration}: {line.result.value} "
                   f"(expected {line.expected.value})",
        "environment": {"comment": f"{line.host or '?'}: QEMU {line.qemu or '?'} "
                                   f"({line.accel or '?'})"},
        "misc": {"result": line.result.value, "expected": line.expected.value,
                 "family": line.family.value, "seed": line.seed, "campaign": line.campaign,
                 "iteration": line.iteration, "kind": line.kind.value, "reason": line.reason,
                 "replay": line.replay, "config": dict(line.config),
                 "trylock_failures": line.trylock_failures,
                 "staleness": {"mib": line.staleness.mib, "dimms": line.staleness.dimms,
                               "cpus": line.staleness.cpus},
                 "evidence": line.evidence},
    }
    if (started := _time(line.started)) is not None:
        test["start_time"] = started
    if (total := line.times.get("total")) is not None:
        test["duration"] = total
    return test


def to_kcidb(lines: LineSet) -> dict[str, Any]:
    """The whole input as one KCIDB I/O document."""
    releases = sorted({i.key.kernel for i in lines.lines})
    builds = sorted({(i.key.kernel, i.line.profile or "unknown") for i in lines.lines})
    return {
        "version": {"major": VERSION[0], "minor": VERSION[1]},
        "checkouts": [{"id": _id(r), "origin": ORIGIN, "valid": True,
                       "comment": f"kernel release {r}", "misc": {"kernel_release": r}}
                      for r in releases],
        "builds": [{"id": _id(r, p), "origin": ORIGIN, "checkout_id": _id(r),
                    "architecture": ARCH, "config_name": p, "status": "PASS",
                    "comment": f"{r} ({p} guest image)"} for r, p in builds],
        "tests": [_test(i) for i in lines.lines],
    }


def write_kcidb(lines: LineSet, path: Path) -> None:
    path.write_text(json.dumps(to_kcidb(lines), indent=1, sort_keys=True) + "\n",
                    encoding="utf-8")
