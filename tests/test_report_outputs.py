"""The report's forms: Markdown, HTML, KCIDB (validated by kcidb_io) and the command line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.campaign.line import RESULTS_FILE, ResultLine, write_lines
from harness.campaign.stats import wilson
from harness.cli import main
from harness.report import assemble, load
from harness.report.html import render_html
from harness.report.kcidb import VERSION, kcidb_path, to_kcidb
from harness.report.markdown import render_markdown
from harness.report.synthetic import make_line, synthesise, write_campaigns
from harness.results import Result

KNOWN = Path(__file__).parent.parent / "ci" / "known-failures.toml"


def night(tmp_path: Path) -> Path:
    lines: list[ResultLine] = [make_line(iteration=i) for i in range(17)]
    lines += [make_line(iteration=17 + i, result=Result.STALE, seed=4242 + i,
                        evidence=f"ev/{i}", replay=f"kdump-harness run --seed {4242 + i}")
              for i in range(3)]
    lines.append(make_line(iteration=20, result=Result.HARNESS_ERROR, reason="<qmp> went away"))
    d = tmp_path / "results"
    d.mkdir()
    write_lines(d / RESULTS_FILE, lines)
    (d / "ev" / "0").mkdir(parents=True)      # ev/1 and ev/2 are gone: no dead links
    return d


def test_markdown_has_the_rates_with_intervals_and_the_failures(tmp_path: Path) -> None:
    report = assemble(load([night(tmp_path)]), title="night | 1", with_plots=False)
    md = render_markdown(report)
    assert md.startswith("## night \\| 1\n")
    # Stale: 3 of 20 kernel iterations (the harness error apart), with its Wilson interval.
    assert wilson(3, 20).text() == "15.0% [5.2, 36.0] (3/20)"
    assert "| 15.0% [5.2, 36.0] (3/20) |" in md
    assert "**1** harness errors" in md
    assert "`kdump-harness run --seed 4243`" in md and "| 4243 |" in md
    assert "<img" not in md and "<svg" not in md
    assert "\n\n\n" not in md


def test_markdown_cuts_a_long_failure_list(tmp_path: Path) -> None:
    write_campaigns(tmp_path, synthesise(600, nights=2))
    md = render_markdown(assemble(load([tmp_path]), with_plots=False), max_failures=5)
    assert "more (the HTML report lists every one)" in md
    assert "### Nights" in md


def test_markdown_against_known_failures_and_a_baseline(tmp_path: Path) -> None:
    write_campaigns(tmp_path / "base", synthesise(400, nights=1, seed=1))
    cand = [line if line.result is not Result.STALE or line.expected is Result.STALE
            else make_line(**{**line.__dict__, "result": Result.ACCURATE})
            for line in synthesise(400, nights=1, seed=2)]
    write_campaigns(tmp_path / "cand", cand)
    report = assemble(load([tmp_path / "cand"]), baseline=load([tmp_path / "base"]),
                      known_file=KNOWN, with_plots=False)
    md = render_markdown(report)
    assert "### Against the known failures" in md and "| known | 6.12* / *unplug*dimm* |" in md
    assert "### Baseline vs candidate" in md and "**significant**" in md
    assert "contention-reload" in md and "stale rate" in md


def test_html_escapes_what_the_lines_say_and_links_only_existing_evidence(tmp_path: Path) -> None:
    out = tmp_path / "site" / "report.html"
    report = assemble(load([night(tmp_path)]))
    page = render_html(report, out)
    assert "&lt;qmp&gt; went away" in page and "<qmp>" not in page
    assert 'href="../results/ev/0/"' in page
    assert "ev/1 (not found)" in page
    assert page.count("<svg") == len(report.plots) >= 2
    # Offline: nothing to fetch (XML namespace URIs in the SVG are names, not requests).
    assert not any(x in page for x in ("<script", "<link", "src=", "url(http", "@import"))


def test_kcidb_output_validates_against_the_latest_schema(tmp_path: Path) -> None:
    kcidb_io = pytest.importorskip("kcidb_io", reason="kcidb-io is a dev dependency")
    latest = kcidb_io.schema.LATEST
    assert (latest.major, latest.minor) == VERSION, "kcidb_io has a newer schema: update VERSION"
    write_campaigns(tmp_path, synthesise(300, nights=2))
    data = to_kcidb(load([tmp_path]))
    latest.validate(data)
    assert latest.is_valid(data)
    statuses = {t["misc"]["result"]: t["status"] for t in data["tests"]}
    assert statuses["harness_error"] == "ERROR" and statuses["accurate"] == "PASS"
    assert statuses["kdump_did_not_occur"] == "FAIL"
    assert len(data["tests"]) == 300 and len({t["id"] for t in data["tests"]}) == 300
    test = data["tests"][0]
    assert test["path"].startswith("kdump_hotplug.") and test["id"].startswith("kdump_harness:")
    assert test["misc"]["seed"] is not None and test["start_time"].endswith("+00:00")


def test_kcidb_paths_are_valid_nodes() -> None:
    assert kcidb_path("trixie-burst.16 dimm/x") == "kdump_hotplug.trixie-burst_16_dimm_x"


def test_the_command_writes_every_form(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    results = night(tmp_path)
    out = tmp_path / "report.html"
    rc = main(["report", str(results), "-o", str(out), "--markdown", str(tmp_path / "s.md"),
               "--kcidb", str(tmp_path / "k.json"), "--known-failures", str(KNOWN),
               "--baseline", str(results), "--title", "T"])
    assert rc == 0
    assert out.read_text().startswith("<!doctype html>")
    assert json.loads((tmp_path / "k.json").read_text())["version"]["major"] == VERSION[0]
    assert "## T" in (tmp_path / "s.md").read_text()
    assert "21 lines" in capsys.readouterr().err


def test_the_command_refuses_bad_input_with_status_2(tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report", str(tmp_path), "-o", str(tmp_path / "r.html")]) == 2
    assert "no result lines" in capsys.readouterr().err
    (tmp_path / RESULTS_FILE).write_text('{"schema": 1}\n')
    assert main(["report", str(tmp_path), "-o", str(tmp_path / "r.html")]) == 2
    assert f"{RESULTS_FILE}:1: not a result line" in capsys.readouterr().err
    assert main(["report", str(tmp_path), "--known-failures", str(tmp_path / "no.toml")]) == 2
    assert not (tmp_path / "r.html").exists()
