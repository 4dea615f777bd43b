"""The HTML form: one static page (inline SVG plots, no scripts, no network) by jinja2.

Templates are package data (``templates/*.j2``); autoescape is on for ``*.html.j2`` (every
string from a result line is untrusted text: a reason may quote the console), off for the
Markdown template, which escapes table cells itself.
"""

from __future__ import annotations

import math
import os
from functools import cache
from pathlib import Path
from urllib.parse import quote

import jinja2
from markupsafe import Markup

from ..campaign.stats import Rate
from .build import Failure, Report
from .compare import format_p


def pct(r: Rate) -> str:
    return f"{100 * r.value:.1f}%" if r.n else "-"


def interval(r: Rate) -> str:
    return f"[{100 * r.low:.1f}, {100 * r.high:.1f}]" if r.n else ""


def num(value: float | None, digits: int = 1) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:.{digits}f}"


@cache
def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("harness.report", "templates"),
        autoescape=jinja2.select_autoescape(enabled_extensions=("html.j2",),
                                            default_for_string=True),
        trim_blocks=True, lstrip_blocks=True, undefined=jinja2.StrictUndefined)
    env.filters.update(pct=pct, interval=interval, num=num, md=md_cell)
    env.globals["fmt_p"] = format_p
    return env


def md_cell(value: object) -> str:
    """A Markdown table cell: pipes escaped, one line."""
    return " ".join(str(value).split()).replace("|", "\\|")


def evidence_href(failure: Failure, out_dir: Path) -> str | None:
    """A link to the failure's evidence directory, relative to the page when both are on
    one file system tree (the page and the results move together), absolute otherwise;
    None when the directory is gone (a dead link is worse than a plain path)."""
    path = failure.item.evidence_path
    if path is None or not path.exists():
        return None
    try:
        rel = os.path.relpath(path.resolve(), out_dir.resolve())
    except ValueError:          # another drive (Windows): only an absolute URL works
        return path.resolve().as_uri()
    return quote(Path(rel).as_posix()) + "/"


def render_html(report: Report, out: Path) -> str:
    out_dir = out.parent
    links = {f.item.identity: evidence_href(f, out_dir) for f in report.failures}
    # Trusted markup: matplotlib writes the SVG and XML-escapes the labels it draws.
    svgs = {p.name: Markup(p.svg) for p in report.plots}
    return environment().get_template("report.html.j2").render(
        report=report, links=links, svgs=svgs)


def write_html(report: Report, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render_html(report, out), encoding="utf-8")
