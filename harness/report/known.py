"""Known failures: a night read as a diff against ``ci/known-failures.toml``.

Each ``[[failure]]`` names a kernel-release glob, a cell glob, optional configuration globs
(``config = { update = "none" }``) and the result the kernel shows there, with why and its
upstream status.  Against a set of result lines:

``new``    a failing line (a kernel or guest result other than the expected one) that no
           entry describes: the news of the night
``known``  an entry whose result showed again (failing, or expected by a negative control)
``fixed``  an entry whose (kernel, cell) iterations ran, all passed, and none showed its
           result: the day a kernel fixes it, the file should lose the entry
``unseen`` an entry whose kernel and cell did not run (or ran into other failures only)
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

from ..errors import UsageError
from ..results import Result
from .load import CellKey, Identity, Loaded

FIELDS = ("kernel", "cell", "result", "reason", "upstream", "config")


class Status(StrEnum):
    NEW = "new"
    KNOWN = "known"
    FIXED = "fixed"
    UNSEEN = "unseen"


@dataclass(frozen=True)
class KnownFailure:
    kernel: str                  # fnmatch glob on kernel_release
    cell: str                    # fnmatch glob on the cell name
    result: Result
    reason: str
    upstream: str = ""
    config: tuple[tuple[str, str], ...] = ()   # (dimension, glob) pairs, all must match

    def covers(self, item: Loaded) -> bool:
        """The entry's kernel, cell and configuration describe this line (any result)."""
        line = item.line
        return (fnmatchcase(line.kernel_release, self.kernel) and fnmatchcase(line.cell, self.cell)
                and all(fnmatchcase(line.config.get(k, ""), g) for k, g in self.config))

    def matches(self, item: Loaded) -> bool:
        return self.covers(item) and item.line.result is self.result

    def text(self) -> str:
        conf = ", ".join(f"{k}={g}" for k, g in self.config)
        return f"{self.kernel} / {self.cell}" + (f" ({conf})" if conf else "")


@dataclass(frozen=True)
class Finding:
    """New failures of one (kernel, cell, result), or one entry's state tonight."""

    status: Status
    key: CellKey | None = None
    result: Result | None = None
    entry: KnownFailure | None = None
    lines: tuple[Loaded, ...] = ()     # the lines that show it (new, known)
    covered: int = 0                   # iterations of the entry's kernel/cell (fixed, known)


@dataclass(frozen=True)
class KnownDiff:
    new: tuple[Finding, ...] = ()
    known: tuple[Finding, ...] = ()
    fixed: tuple[Finding, ...] = ()
    unseen: tuple[Finding, ...] = ()
    entries: int = 0
    source: str = ""
    labels: Mapping[Identity, Status] = field(default_factory=dict)   # failing lines

    def status_of(self, item: Loaded) -> Status | None:
        return self.labels.get(item.identity)


def _entry(path: Path, number: int, raw: Any) -> KnownFailure:
    where = f"{path}: [[failure]] #{number}"
    if not isinstance(raw, dict):
        raise UsageError(f"{where}: not a table")
    unknown = set(raw) - set(FIELDS)
    missing = {"kernel", "cell", "result", "reason"} - set(raw)
    if unknown or missing:
        raise UsageError(f"{where}: " + "; ".join(
            ([f"unknown keys {sorted(unknown)}"] if unknown else [])
            + ([f"missing keys {sorted(missing)}"] if missing else [])))
    try:
        result = Result(raw["result"])
    except ValueError:
        raise UsageError(f"{where}: result {raw['result']!r} is not a result "
                         f"({', '.join(r.value for r in Result)})") from None
    config = raw.get("config", {})
    if not isinstance(config, dict):
        raise UsageError(f"{where}: config must be a table of dimension = glob")
    return KnownFailure(kernel=str(raw["kernel"]), cell=str(raw["cell"]), result=result,
                        reason=str(raw["reason"]), upstream=str(raw.get("upstream", "")),
                        config=tuple(sorted((str(k), str(v)) for k, v in config.items())))


def load_known(path: Path) -> tuple[KnownFailure, ...]:
    """The entries of a known-failures file; ``UsageError`` names the file and entry."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise UsageError(f"{path}: cannot read the known-failures file: {exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"{path}: not TOML: {exc}") from exc
    entries = data.get("failure", [])
    if not isinstance(entries, list):
        raise UsageError(f"{path}: 'failure' must be an array of tables ([[failure]])")
    return tuple(_entry(path, n, raw) for n, raw in enumerate(entries, 1))


def _entry_state(entry: KnownFailure, items: Sequence[Loaded]) -> Finding:
    covered = [i for i in items if entry.covers(i) and not i.is_harness_error]
    showing = tuple(i for i in covered if i.line.result is entry.result)
    if showing:
        return Finding(Status.KNOWN, result=entry.result, entry=entry, lines=showing,
                       covered=len(covered))
    if covered and all(i.line.passed for i in covered):
        return Finding(Status.FIXED, result=entry.result, entry=entry, covered=len(covered))
    return Finding(Status.UNSEEN, result=entry.result, entry=entry, covered=len(covered))


def diff(items: Sequence[Loaded], entries: Sequence[KnownFailure], source: str = "") -> KnownDiff:
    """Tonight's lines against the known failures (see the module docstring)."""
    labels: dict[Identity, Status] = {}
    new: dict[tuple[CellKey, Result], list[Loaded]] = {}
    for item in items:
        if not item.failed:
            continue
        if any(e.matches(item) for e in entries):
            labels[item.identity] = Status.KNOWN
        else:
            labels[item.identity] = Status.NEW
            new.setdefault((item.key, item.line.result), []).append(item)
    states = [_entry_state(e, items) for e in entries]
    return KnownDiff(
        new=tuple(Finding(Status.NEW, key=k, result=r, lines=tuple(v))
                  for (k, r), v in sorted(new.items(), key=lambda kv: (kv[0][0], kv[0][1].value))),
        known=tuple(s for s in states if s.status is Status.KNOWN),
        fixed=tuple(s for s in states if s.status is Status.FIXED),
        unseen=tuple(s for s in states if s.status is Status.UNSEEN),
        entries=len(entries), source=source, labels=labels)
