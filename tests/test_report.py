"""The report's figures: loading, rates (Wilson), harness errors apart, baseline
significance, the known-failures diff.  Pure: synthetic result lines, no guest."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from harness.campaign.line import RESULTS_FILE, SCHEMA, ResultLine, write_lines
from harness.campaign.stats import wilson
from harness.errors import UsageError
from harness.report.aggregate import all_cells, nights, overview
from harness.report.compare import compare, format_p, rate_change, time_change
from harness.report.known import KnownFailure, Status, diff, load_known
from harness.report.load import CellKey, load
from harness.report.synthetic import make_line
from harness.results import Result

CELL = "trixie-burst-16dimm-6cpu-sysrq-file"
KERNEL = "6.12.117-cloud-amd64"


def write(d: Path, lines: list[ResultLine]) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    write_lines(d / RESULTS_FILE, lines)
    return d


def outcomes(*counts: tuple[Result, int], campaign: str = "c1", cell: str = CELL,
             kernel: str = KERNEL, expected: Result = Result.ACCURATE,
             **fields: object) -> list[ResultLine]:
    results = [result for result, n in counts for _ in range(n)]
    return [make_line(campaign=campaign, cell=cell, kernel_release=kernel, iteration=i,
                      result=result, expected=expected, **fields)
            for i, result in enumerate(results)]


# -- loading -----------------------------------------------------------------------------

def test_loading_merges_shards_and_groups_by_kernel_and_cell(tmp_path: Path) -> None:
    a = write(tmp_path / "night1" / "shard-a", outcomes((Result.ACCURATE, 3)))
    write(tmp_path / "night1" / "shard-b",
          outcomes((Result.STALE, 2), cell="sid-x", kernel="7.2.13"))
    # An evidence directory's QMP transcript is JSON lines too, but not result lines.
    (a / "evidence" / "x").mkdir(parents=True)
    (a / "evidence" / "x" / "qmp.jsonl").write_text('{"execute": "qmp_capabilities"}\n')
    # The same file named twice (directory and file) is read once.
    lines = load([tmp_path / "night1", a / RESULTS_FILE])
    assert len(lines) == 5 and len(lines.files) == 2
    groups = lines.by_cell()
    assert list(groups) == [CellKey(KERNEL, CELL), CellKey("7.2.13", "sid-x")]
    assert [len(v) for v in groups.values()] == [3, 2]


def test_an_iteration_written_twice_counts_once(tmp_path: Path) -> None:
    write(tmp_path / "a", outcomes((Result.STALE, 2)))
    write(tmp_path / "copy", outcomes((Result.STALE, 2)))
    lines = load([tmp_path])
    assert len(lines) == 2 and lines.duplicates == 2


def test_relative_evidence_resolves_against_its_results_directory(tmp_path: Path) -> None:
    d = write(tmp_path / "r", [make_line(result=Result.STALE, evidence="ev/0001"),
                               make_line(iteration=1, evidence="/abs/ev")])
    items = load([d]).lines
    assert items[0].evidence_path == d / "ev" / "0001"
    assert items[1].evidence_path == Path("/abs/ev")


def test_campaigns_are_ordered_by_their_earliest_start(tmp_path: Path) -> None:
    write(tmp_path, [make_line(campaign="b", started="2026-12-02T01:00:00Z"),
                     make_line(campaign="a", started="2026-12-03T01:00:00Z"),
                     make_line(campaign="b", iteration=1, started="2026-12-04T01:00:00Z")])
    lines = load([tmp_path])
    assert lines.campaigns() == ["b", "a"]
    assert [n.campaign for n in nights(lines)] == ["b", "a"]
    assert nights(lines)[0].started == "2026-12-02T01:00:00Z"


def test_a_malformed_line_is_refused_naming_file_and_line(tmp_path: Path) -> None:
    d = write(tmp_path, outcomes((Result.ACCURATE, 1)))
    with (d / RESULTS_FILE).open("a") as f:
        f.write("{not json\n")
    with pytest.raises(UsageError, match=rf"{RESULTS_FILE}:2: not a result line"):
        load([d])


def test_a_line_of_a_newer_schema_is_refused_naming_file_and_line(tmp_path: Path) -> None:
    d = write(tmp_path, outcomes((Result.ACCURATE, 2)))
    newer = make_line().to_json_dict() | {"schema": SCHEMA + 1}
    with (d / RESULTS_FILE).open("a") as f:
        f.write(json.dumps(newer) + "\n")
    with pytest.raises(UsageError, match=rf":3: not a result line: schema {SCHEMA + 1}"):
        load([d])


def test_empty_input_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="no result lines"):
        load([tmp_path])
    (tmp_path / RESULTS_FILE).write_text("\n")
    with pytest.raises(UsageError, match="no result lines"):
        load([tmp_path])
    with pytest.raises(UsageError, match="no such file"):
        load([tmp_path / "missing"])


# -- rates -------------------------------------------------------------------------------

def test_rates_carry_wilson_intervals(tmp_path: Path) -> None:
    write(tmp_path, outcomes((Result.STALE, 3), (Result.KDUMP_DID_NOT_OCCUR, 1),
                             (Result.CAPTURE_FAILED, 1), (Result.ACCURATE, 15)))
    (cell,) = all_cells(load([tmp_path]))
    assert cell.rates.stale == wilson(3, 20)
    assert cell.rates.no_dump == wilson(2, 20)
    assert cell.rates.passed == wilson(15, 20)
    assert math.isclose(cell.rates.stale.low, 0.0524, abs_tol=5e-4)


def test_harness_errors_never_enter_a_kernel_rate(tmp_path: Path) -> None:
    write(tmp_path, outcomes((Result.HARNESS_ERROR, 12), (Result.STALE, 2),
                             (Result.ACCURATE, 6)))
    lines = load([tmp_path])
    (cell,) = all_cells(lines)
    assert (cell.rates.iterations, cell.rates.harness_errors, cell.rates.n) == (20, 12, 8)
    assert cell.rates.stale == wilson(2, 8) and cell.rates.passed == wilson(6, 8)
    o = overview(lines)
    assert (o.harness_errors, o.failures) == (12, 2)


def test_a_negative_control_passes_on_its_expected_stale(tmp_path: Path) -> None:
    write(tmp_path, outcomes((Result.STALE, 4), expected=Result.STALE))
    (cell,) = all_cells(load([tmp_path]))
    assert cell.rates.stale.k == 4 and cell.rates.passed.k == 4


def test_trylock_staleness_and_phase_percentiles(tmp_path: Path) -> None:
    lines = [make_line(iteration=i, trylock_failures=t, times={"panic_to_capture": float(i)})
             for i, t in enumerate([0, 0, 5, 7, None])]
    lines.append(make_line(iteration=9, result=Result.STALE,
                           staleness=make_line().staleness.__class__(mib=512.0, dimms=2)))
    write(tmp_path, lines)
    (cell,) = all_cells(load([tmp_path]))
    assert cell.trylock == wilson(2, 4) and cell.trylock_mean == 3.0
    assert (cell.magnitude.stale, cell.magnitude.mib_max, cell.magnitude.dimms_max) == (1, 512, 2)
    ph = cell.phases["panic_to_capture"]
    assert (ph.n, ph.p50) == (6, 2.5)     # 0 1 2 3 3.2 4: halfway between 2 and 3


# -- baseline vs candidate ---------------------------------------------------------------

def test_a_big_change_is_significant_and_a_tiny_one_is_not(tmp_path: Path) -> None:
    write(tmp_path / "base", outcomes((Result.STALE, 42), (Result.ACCURATE, 58)))
    write(tmp_path / "cand", outcomes((Result.STALE, 3), (Result.ACCURATE, 97)))
    write(tmp_path / "base2", outcomes((Result.STALE, 10), (Result.ACCURATE, 90), cell="b"))
    write(tmp_path / "cand2", outcomes((Result.STALE, 11), (Result.ACCURATE, 89), cell="b"))
    c = compare(load([tmp_path / "base", tmp_path / "base2"]),
                load([tmp_path / "cand", tmp_path / "cand2"]))
    by = {cc.cell: {ch.figure: ch for ch in cc.changes} for cc in c.cells}
    big, tiny = by[CELL]["stale rate"], by["b"]["stale rate"]
    assert big.significant and big.worse is False and big.p < 1e-9
    assert big.text().startswith("stale rate 42.0% -> 3.0% (-39.0 pts, p=")
    assert big.text().endswith(", significant)")
    assert not tiny.significant and tiny.text().endswith("not significant)")
    assert by[CELL]["pass rate"].significant and by[CELL]["pass rate"].worse is False


def test_phase_times_by_mann_whitney() -> None:
    base = [3.0 + 0.01 * i for i in range(40)]
    slower = [4.0 + 0.01 * i for i in range(40)]
    same = [3.0 + 0.01 * i for i in range(1, 41)]
    big = time_change("panic_to_capture", base, slower)
    assert big.significant and big.worse and big.delta == "+31%"
    assert big.text().startswith("panic_to_capture p50 3.2 s -> 4.2 s (+31%, p=")
    assert not time_change("panic_to_capture", base, same).significant
    assert time_change("verify", [], same).verdict == "not tested"


def test_a_side_without_kernel_iterations_is_not_tested() -> None:
    assert rate_change("stale rate", wilson(0, 0), wilson(1, 5)).verdict == "not tested"


def test_p_values_are_short() -> None:
    assert [format_p(p) for p in (1e-9, 0.3, 0.0312, 1.0)] == ["1e-9", "0.3", "0.031", "1"]


def test_cells_only_on_one_side_are_listed(tmp_path: Path) -> None:
    write(tmp_path / "b", outcomes((Result.ACCURATE, 2), cell="old"))
    write(tmp_path / "c", outcomes((Result.ACCURATE, 2), cell="new"))
    c = compare(load([tmp_path / "b"]), load([tmp_path / "c"]))
    assert (c.cells, c.only_base, c.only_candidate) == ((), ("old",), ("new",))


# -- known failures ----------------------------------------------------------------------

KNOWN_TOML = """
[[failure]]
kernel = "6.12*"
cell = "*unplug*"
result = "stale"
reason = "the last removed block stays"
upstream = "unfixed as of 6.12.117"

[[failure]]
kernel = "6.1.*"
cell = "*"
config = { update = "none" }
result = "stale"
reason = "no crash hot-plug"

[[failure]]
kernel = "7.2*"
cell = "*burst*"
result = "kdump_did_not_occur"
reason = "fixed since"
"""


def test_the_known_failures_diff_says_new_known_and_fixed(tmp_path: Path) -> None:
    known_file = tmp_path / "known.toml"
    known_file.write_text(KNOWN_TOML)
    entries = load_known(known_file)
    assert entries[1].config == (("update", "none"),)
    write(tmp_path / "r", [
        *outcomes((Result.STALE, 2), cell="trixie-unplug-half-dimms"),           # known
        *outcomes((Result.STALE, 1), kernel="6.1.0-28", cell="x",
                  config={"update": "none"}, campaign="c2"),                      # known
        *outcomes((Result.STALE, 1), kernel="6.1.0-28", cell="x",
                  config={"update": "reload"}, campaign="c3"),                    # new
        *outcomes((Result.ACCURATE, 3), kernel="7.2.13", cell="sid-burst"),       # fixed
        *outcomes((Result.HARNESS_ERROR, 1), kernel="7.2.13", cell="sid-burst",
                  campaign="c4"),                                                 # not a failure
    ])
    lines = load([tmp_path / "r"])
    d = diff(lines.lines, entries)
    assert [(f.key, f.result) for f in d.new] == [(CellKey("6.1.0-28", "x"), Result.STALE)]
    assert [f.entry for f in d.known] == [entries[0], entries[1]]
    assert [(f.entry, f.covered) for f in d.fixed] == [(entries[2], 3)]
    labels = sorted(str(d.status_of(i)) for i in lines.lines)
    assert labels == ["None"] * 4 + ["known"] * 3 + ["new"]


def test_an_entry_whose_cell_did_not_run_is_unseen() -> None:
    entry = KnownFailure("9.9*", "*", Result.STALE, "future")
    assert diff([], [entry]).unseen[0].status is Status.UNSEEN


@pytest.mark.parametrize("text, complaint", [
    ("[[failure]]\nkernel='6*'\ncell='*'\nresult='stale'\n", r"#1: missing keys \['reason'\]"),
    ("[[failure]]\nkernel='*'\ncell='*'\nresult='bad'\nreason='x'\n", "'bad' is not a result"),
    ("[[failure]]\nkernel='*'\ncell='*'\nresult='stale'\nreason='x'\nbug=1\n", "unknown keys"),
    ("[[failure]\n", "not TOML"),
])
def test_a_bad_known_failures_file_is_refused(tmp_path: Path, text: str, complaint: str) -> None:
    f = tmp_path / "k.toml"
    f.write_text(text)
    with pytest.raises(UsageError, match=complaint):
        load_known(f)


def test_the_shipped_known_failures_file_parses() -> None:
    entries = load_known(Path(__file__).parent.parent / "ci" / "known-failures.toml")
    assert any(e.kernel == "7.2*" and e.result is Result.STALE for e in entries)
    assert any(dict(e.config).get("update") == "none" for e in entries)


def test_the_trend_runs_over_the_baselines_nights_too(tmp_path: Path) -> None:
    from harness.report.build import assemble

    old = write(tmp_path / "old", outcomes((Result.STALE, 3), campaign="night-1",
                                           started="2026-11-30T01:00:00Z"))
    new = write(tmp_path / "new", outcomes((Result.ACCURATE, 3), campaign="night-2",
                                           started="2026-12-01T01:00:00Z"))
    report = assemble(load([new]), baseline=load([old]), with_plots=False)
    assert [n.campaign for n in report.nights] == ["night-1", "night-2"]
    assert report.overview.campaigns == ("night-2",)   # the figures are tonight's alone
