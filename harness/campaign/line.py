"""One result line per iteration: what ``repro`` and ``matrix run`` write and ``report`` reads.

A campaign (a repro run, one shard of a night) appends one JSON object per line to
``results.jsonl`` in its results directory.  The line is self-contained: the report merges
lines from many shards and many nights without any other file, and a line names the seed
and the command that replay it and where its evidence is.

``SCHEMA`` is bumped on any incompatible change; readers refuse lines of a newer schema
and name the file and line (bad input gets a clear error and loses nothing).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from ..errors import UsageError
from ..results import Family, Result

SCHEMA = 1
RESULTS_FILE = "results.jsonl"


class Kind(StrEnum):
    """What one iteration did to reach its result."""

    CRASH = "crash"      # the main job: swarm, panic, capture, verify the vmcore
    AUDIT = "audit"      # a swarm on a long-lived guest, then the live elfcorehdr audit


@dataclass(frozen=True)
class Staleness:
    """How far a stale (or otherwise wrong) header is off: the verifier's error findings."""

    mib: float = 0.0       # RAM missing from or extra in the header
    dimms: int = 0         # DIMMs the header describes wrongly
    cpus: int = 0          # CPU notes missing or extra


@dataclass(frozen=True)
class ResultLine:
    """One iteration's outcome (see the module docstring)."""

    campaign: str                  # the run's id: "repro-20261202-0155-1234", "nightly-…"
    cell: str                      # the recipe or matrix cell name
    iteration: int
    kind: Kind
    result: Result
    expected: Result
    profile: str
    kernel_release: str
    seed: int | None = None
    accel: str = ""
    qemu: str = ""
    reason: str = ""               # first line of the result's reason
    started: str = ""              # ISO 8601, UTC
    host: str = ""
    snapshot: bool = False
    trylock_failures: int | None = None
    staleness: Staleness = field(default_factory=Staleness)
    times: dict[str, float | None] = field(default_factory=dict)
    #: The cell's dimensions (shape, trigger, kexec, contention, update, mode, ...).
    config: dict[str, str] = field(default_factory=dict)
    evidence: str | None = None    # kept evidence directory (failures, or --keep-evidence)
    replay: str = ""               # the command line that runs this iteration again
    schema: int = SCHEMA

    @property
    def passed(self) -> bool:
        return self.result is self.expected

    @property
    def family(self) -> Family:
        return self.result.family

    def to_json_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.update(kind=self.kind.value, result=self.result.value, expected=self.expected.value,
                 family=self.family.value, passed=self.passed)
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_json_dict(), sort_keys=True, default=str)

    @classmethod
    def from_json_dict(cls, d: dict[str, Any]) -> ResultLine:
        schema = int(d.get("schema", 0))
        if schema > SCHEMA or schema < 1:
            raise ValueError(f"schema {schema} (this harness reads 1..{SCHEMA})")
        st = d.get("staleness") or {}
        return cls(
            campaign=str(d["campaign"]), cell=str(d["cell"]), iteration=int(d["iteration"]),
            kind=Kind(d["kind"]), result=Result(d["result"]), expected=Result(d["expected"]),
            profile=str(d.get("profile", "")), kernel_release=str(d.get("kernel_release", "")),
            seed=None if d.get("seed") is None else int(d["seed"]),
            accel=str(d.get("accel", "")), qemu=str(d.get("qemu", "")),
            reason=str(d.get("reason", "")), started=str(d.get("started", "")),
            host=str(d.get("host", "")), snapshot=bool(d.get("snapshot", False)),
            trylock_failures=(None if d.get("trylock_failures") is None
                              else int(d["trylock_failures"])),
            staleness=Staleness(mib=float(st.get("mib", 0.0)), dimms=int(st.get("dimms", 0)),
                                cpus=int(st.get("cpus", 0))),
            times={str(k): (None if v is None else float(v))
                   for k, v in (d.get("times") or {}).items()},
            config={str(k): str(v) for k, v in (d.get("config") or {}).items()},
            evidence=d.get("evidence"), replay=str(d.get("replay", "")), schema=schema)


def write_lines(path: Path, lines: Iterable[ResultLine]) -> None:
    """Append ``lines`` to ``path`` (one JSON object each, flushed per line)."""
    with path.open("a", encoding="utf-8") as f:
        for line in lines:
            f.write(line.to_json() + "\n")
            f.flush()


def result_files(paths: Iterable[Path]) -> list[Path]:
    """The ``results.jsonl`` files under each path (a file is taken as it is), sorted;
    not every ``*.jsonl``: evidence directories hold QMP transcripts (``qmp.jsonl``)."""
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found += sorted(path.rglob(RESULTS_FILE))
        elif path.is_file():
            found.append(path)
        else:
            raise UsageError(f"{path}: no such file or directory")
    return found


def read_lines(paths: Iterable[Path]) -> Iterator[ResultLine]:
    """Every result line under ``paths``; a malformed line is refused naming file and line."""
    for path in result_files(paths):
        with path.open(encoding="utf-8") as f:
            for number, text in enumerate(f, 1):
                if not text.strip():
                    continue
                try:
                    yield ResultLine.from_json_dict(json.loads(text))
                except (ValueError, KeyError, TypeError) as exc:
                    raise UsageError(f"{path}:{number}: not a result line: {exc}") from exc
