"""Each benchmark run's evidence: kept for the runs worth a look, dropped for the rest.

A benchmark boots guests in a directory per run.  Dropping them all left an outlier
unexplainable (one ``bench boot`` took 12.1 s to kdump-ready between runs of 5.1-5.4 s, and
nothing said why).  Now a run that failed, or whose measure is ``OUTLIER_FACTOR`` times the
median or more, keeps its directory (console logs, QEMU command line, readiness record)
with ``host-load.json``, what the host did meanwhile; the report says where.  ``keep``
keeps every run's.
"""

from __future__ import annotations

import json
import shutil
import statistics
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from .host_load import HostLoad, HostLoadMeter

#: A run this many times the median of its benchmark's runs, or more, is an outlier.
OUTLIER_FACTOR = 1.5


@dataclass
class RunRecord:
    """One run: where its evidence is, its headline measure, the host meanwhile."""

    index: int                      # 1-based, as the report numbers runs
    workdir: Path
    value: float | None = None      # seconds; None: the run gave no measure
    load: HostLoad | None = None
    failed: str = ""


def outliers(values: Sequence[float | None], factor: float = OUTLIER_FACTOR) -> list[int]:
    """Indexes of the runs without a measure, and of those ``factor`` x the median or more."""
    measured = [v for v in values if v is not None]
    median = statistics.median(measured) if len(measured) >= 2 else None
    return [i for i, v in enumerate(values)
            if v is None or (median is not None and median > 0 and v >= factor * median)]


class BenchEvidence:
    """``with BenchEvidence("boot", report) as ev:`` then ``with ev.run(i) as r:`` per run."""

    def __init__(self, what: str, report: Callable[[str], None],
                 keep: Path | None = None) -> None:
        self.what = what
        self._report = report
        self._keep = keep
        self.root = Path()
        self.records: list[RunRecord] = []

    def __enter__(self) -> BenchEvidence:
        if self._keep is not None:
            self._keep.mkdir(parents=True, exist_ok=True)
            self.root = self._keep
        else:
            self.root = Path(tempfile.mkdtemp(prefix=f"kh-bench-{self.what}-"))
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.finish(broken=error is not None)

    @contextmanager
    def run(self, index: int) -> Iterator[RunRecord]:
        """The run's directory (made by whoever boots into it) and its host load."""
        record = RunRecord(index, self.root / f"run-{index}")
        meter = HostLoadMeter()
        try:
            with meter:
                yield record
        except BaseException as e:
            record.failed = f"{type(e).__name__}: {e}"
            raise
        finally:
            record.load = meter.load
            self.records.append(record)
            if record.workdir.is_dir() and record.load is not None:
                (record.workdir / "host-load.json").write_text(
                    json.dumps({"value": record.value, "failed": record.failed,
                                **record.load.as_dict()}, indent=1) + "\n")

    def finish(self, broken: bool = False) -> None:
        """Drop the evidence of ordinary runs; say where the kept runs' is.  ``broken``:
        the benchmark stopped on an error, and its directory stays whole."""
        values = [r.value for r in self.records]
        kept = {self.records[i].index for i in outliers(values)}
        measured = [v for v in values if v is not None]
        median = statistics.median(measured) if measured else None
        for record in self.records:
            if record.index in kept:
                self._report(f"  run {record.index} kept: {_why(record, median)}; "
                             f"evidence in {record.workdir}")
            elif self._keep is None and not broken:
                shutil.rmtree(record.workdir, ignore_errors=True)
        if self._keep is not None or broken:
            self._report(f"  evidence of every run in {self.root}")
        elif not kept:
            shutil.rmtree(self.root, ignore_errors=True)


def _why(record: RunRecord, median: float | None) -> str:
    host = f"host: {record.load.text()}" if record.load else "host: not measured"
    if record.value is None:
        return f"{record.failed or 'no measure'}; {host}"
    ratio = f", {record.value / median:.1f}x the median {median:.2f} s" if median else ""
    return f"{record.value:.2f} s{ratio}; {host}"


__all__ = ["OUTLIER_FACTOR", "BenchEvidence", "RunRecord", "outliers"]
