"""Which artefact a check looks at: the dump, or the raw elfcorehdr handed in beside it.

The same memory and device checks run on both; findings about the header beside a dump say
so (``in_header`` and a ``header: `` prefix), so a reader can tell the two apart.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .findings import HEADER_PREFIX, Finding, FindingCode, Severity, Verdict
from .model import Dump


@dataclass(frozen=True, slots=True)
class Subject:
    """A dump under check; ``in_header`` when it is the raw header passed beside a dump."""

    dump: Dump
    in_header: bool = False

    @property
    def what(self) -> str:
        return "the crash header" if self.dump.is_raw_header else "the dump"

    @property
    def prefix(self) -> str:
        return HEADER_PREFIX if self.in_header else ""

    def _make(self, severity: Severity, code: FindingCode, message: str,
              verdict: Verdict | None, where: dict[str, Any]) -> Finding:
        return Finding(severity, code, self.prefix + message, verdict,
                       in_header=self.in_header, **where)

    def error(self, code: FindingCode, verdict: Verdict, message: str, **where: Any) -> Finding:
        return self._make(Severity.ERROR, code, message, verdict, where)

    def warning(self, code: FindingCode, message: str, **where: Any) -> Finding:
        return self._make(Severity.WARNING, code, message, None, where)

    def info(self, code: FindingCode, message: str, **where: Any) -> Finding:
        return self._make(Severity.INFO, code, message, None, where)
