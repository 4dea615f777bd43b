"""The Markdown form: the same summary as the HTML page, tables only, for a CI job page
(``$GITHUB_STEP_SUMMARY``, which caps a step's summary at 1 MiB: the failure list is cut
at ``MAX_FAILURES`` rows and says how many more the HTML form lists)."""

from __future__ import annotations

from pathlib import Path

from .build import Report
from .html import environment

MAX_FAILURES = 50


def render_markdown(report: Report, *, max_failures: int = MAX_FAILURES) -> str:
    text = environment().get_template("summary.md.j2").render(report=report,
                                                              max_failures=max_failures)
    # Blank runs left by skipped sections: one blank line between blocks is enough.
    lines: list[str] = []
    for line in text.splitlines():
        if line.strip() or (lines and lines[-1].strip()):
            lines.append(line.rstrip())
    return "\n".join(lines).strip() + "\n"


def write_markdown(report: Report, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render_markdown(report), encoding="utf-8")
