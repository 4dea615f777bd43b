"""Read result lines from many campaigns and group them by (kernel release, cell).

Shards of one night and several nights arrive as directories or files; a file named twice
(``DIR`` and ``DIR/results.jsonl``) is read once, and an iteration written twice (a shard
re-read after a copy) counts once.  Relative evidence paths are resolved against the
directory of the ``results.jsonl`` that names them: that is where the campaign wrote them.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..campaign.line import RESULTS_FILE, ResultLine, read_lines
from ..errors import UsageError
from ..results import Family, Result

#: Results that mean no dump was written at all (the kernel rates' "no-dump" column).
NO_DUMP = frozenset({Result.KDUMP_DID_NOT_OCCUR, Result.CAPTURE_FAILED})
#: (campaign, cell, kernel release, iteration, kind): one iteration, wherever it was read.
Identity = tuple[str, str, str, int, str]


@dataclass(frozen=True, order=True)
class CellKey:
    """What a figure is computed over: one kernel release in one cell (configuration)."""

    kernel: str
    cell: str

    def text(self) -> str:
        return f"{self.kernel} / {self.cell}"


@dataclass(frozen=True)
class Loaded:
    """One result line and the file it came from."""

    line: ResultLine
    source: Path

    @property
    def key(self) -> CellKey:
        return CellKey(self.line.kernel_release or "?", self.line.cell)

    @property
    def identity(self) -> Identity:
        """Unique in a ``LineSet`` (a duplicate of an iteration is dropped on loading)."""
        return _identity(self.line)

    @property
    def is_harness_error(self) -> bool:
        return self.line.family is Family.HARNESS

    @property
    def failed(self) -> bool:
        """A kernel or guest result other than the expected one (harness errors apart)."""
        return not self.line.passed and not self.is_harness_error

    @property
    def evidence_path(self) -> Path | None:
        if not self.line.evidence:
            return None
        path = Path(self.line.evidence)
        return path if path.is_absolute() else self.source.parent / path


@dataclass(frozen=True)
class LineSet:
    """Every line read, the files they came from and how many duplicates were dropped."""

    lines: tuple[Loaded, ...]
    files: tuple[Path, ...]
    duplicates: int = 0

    def __len__(self) -> int:
        return len(self.lines)

    def by_cell(self) -> dict[CellKey, list[Loaded]]:
        return group(self.lines)

    def campaigns(self) -> list[str]:
        """Campaign ids, ordered by the earliest ``started`` of each (a night's order)."""
        first: dict[str, str] = {}
        for item in self.lines:
            c, started = item.line.campaign, item.line.started
            if c not in first or (started and (not first[c] or started < first[c])):
                first[c] = started
        return sorted(first, key=lambda c: (first[c] or "~", c))


def _identity(line: ResultLine) -> Identity:
    return (line.campaign, line.cell, line.kernel_release, line.iteration, line.kind.value)


def result_files(paths: Iterable[Path]) -> list[Path]:
    """Each directory's ``results.jsonl`` files (any depth), each file as it is; a file
    named twice is read once.  Not every ``*.jsonl``: evidence directories under a results
    directory hold ``qmp.jsonl`` transcripts, which are not result lines."""
    found: list[Path] = []
    seen: set[Path] = set()
    for path in paths:
        if path.is_dir():
            candidates = sorted(path.rglob(RESULTS_FILE))
        elif path.is_file():
            candidates = [path]
        else:
            raise UsageError(f"{path}: no such file or directory")
        for f in candidates:
            if f.resolve() not in seen:
                seen.add(f.resolve())
                found.append(f)
    return found


def load(paths: Sequence[Path], *, what: str = "input") -> LineSet:
    """Every result line under ``paths``; ``UsageError`` names file and line of a bad one,
    and refuses an input with no lines at all."""
    if not paths:
        raise UsageError(f"{what}: no results directory or file given")
    files = result_files(paths)
    lines: list[Loaded] = []
    seen: set[Identity] = set()
    duplicates = 0
    for f in files:
        for line in read_lines([f]):
            ident = _identity(line)
            if ident in seen:
                duplicates += 1
                continue
            seen.add(ident)
            lines.append(Loaded(line, f))
    if not lines:
        names = ", ".join(str(p) for p in paths)
        raise UsageError(f"{what}: no result lines in {names} ({len(files)} {RESULTS_FILE} files "
                         "found): run a campaign first (kdump-harness repro / matrix run)")
    return LineSet(tuple(lines), tuple(files), duplicates)


def group(lines: Iterable[Loaded]) -> dict[CellKey, list[Loaded]]:
    """Lines by (kernel, cell), keys sorted, each group in (campaign, iteration) order."""
    groups: dict[CellKey, list[Loaded]] = defaultdict(list)
    for item in lines:
        groups[item.key].append(item)
    return {k: sorted(groups[k], key=lambda i: (i.line.campaign, i.line.iteration))
            for k in sorted(groups)}


def by_campaign(lines: Iterable[Loaded]) -> dict[str, list[Loaded]]:
    groups: dict[str, list[Loaded]] = defaultdict(list)
    for item in lines:
        groups[item.line.campaign].append(item)
    return dict(groups)
