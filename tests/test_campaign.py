"""The campaign's pure parts: recipes, seeds, result lines, exit status, the end table."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from rich.console import Console

from harness.campaign.audit_loop import prefixed, reset_plan
from harness.campaign.executor import EXIT_UNTESTABLE, CampaignOptions, CampaignOutcome
from harness.campaign.iteration import staleness
from harness.campaign.line import Kind, ResultLine, Staleness, read_lines, write_lines
from harness.campaign.recipe import Recipe, iteration_seed
from harness.campaign.stats import percentile, wilson
from harness.campaign.summary import Summary, render
from harness.cli.repro import split_argv
from harness.errors import UsageError
from harness.hotplug import Action, SwarmSpec, build_plan
from harness.results import Result
from harness.topology import AddressRange
from harness.vmcore.findings import FindingCode, Verdict, error
from harness.vmcore.model import DumpFormat
from harness.vmcore.report import VerifyReport

MiB = 1 << 20


def line(i: int, result: Result = Result.ACCURATE, **kw: object) -> ResultLine:
    base: dict[str, object] = dict(campaign="c", cell="repro", iteration=i, kind=Kind.CRASH,
                                   result=result, expected=Result.ACCURATE, profile="trixie",
                                   kernel_release="6.12.57+deb13-cloud-amd64", seed=100 + i,
                                   times={"total": 5.0 + i})
    base.update(kw)
    return ResultLine(**base)  # type: ignore[arg-type]


def test_a_line_survives_a_round_trip_through_its_file(tmp_path: Path) -> None:
    lines = [line(0), line(1, Result.STALE, staleness=Staleness(256.0, 1, 0),
                           trylock_failures=3, evidence="evidence/repro/00001-seed101")]
    write_lines(tmp_path / "results.jsonl", lines)
    assert list(read_lines([tmp_path])) == lines
    data = json.loads((tmp_path / "results.jsonl").read_text().splitlines()[1])
    assert data["passed"] is False and data["family"] == "kernel"


@pytest.mark.parametrize("text, complaint", [
    ("not json", "results.jsonl:2: not a result line"),
    ('{"schema": 99, "campaign": "c"}', "schema 99"),
    ('{"schema": 1, "campaign": "c"}', "'cell'"),
])
def test_a_bad_line_is_refused_naming_file_and_line(tmp_path: Path, text: str,
                                                    complaint: str) -> None:
    (tmp_path / "results.jsonl").write_text(line(0).to_json() + "\n" + text + "\n")
    with pytest.raises(UsageError, match=complaint):
        list(read_lines([tmp_path]))


def test_a_missing_results_path_is_refused(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="no such file"):
        list(read_lines([tmp_path / "nothing"]))


def test_recipe_argv_is_checked_by_the_run_parser() -> None:
    Recipe("ok", ("--dimms", "4x256M", "--trigger", "nmi")).validate()
    with pytest.raises(UsageError, match=r"recipe bad: .*invalid choice"):
        Recipe("bad", ("--trigger", "poke")).validate()
    with pytest.raises(UsageError, match=r"recipe big: .*raise --slots"):
        Recipe("big", ("--dimms", "80x256M")).validate()
    with pytest.raises(UsageError, match="campaign's to decide"):
        Recipe("out", ("--out", "/tmp/x"))
    with pytest.raises(UsageError, match="without spaces"):
        Recipe("a b", ())


def test_iteration_seeds_and_the_replay_command() -> None:
    assert [iteration_seed(100, i) for i in range(3)] == [100, 101, 102]
    assert iteration_seed((1 << 31) - 1, 1) == 0
    recipe = Recipe("r", ("--dimms", "4x256M"))
    assert recipe.namespace(seed=7).seed == 7
    assert recipe.replay(7) == "kdump-harness run --dimms 4x256M --seed 7"
    audit = Recipe("r", ("--snapshot",), Kind.AUDIT)
    assert audit.replay(3) == "kdump-harness repro --audit -n 1 --snapshot --seed 3"


def test_repro_splits_its_own_options_from_the_recipe() -> None:
    own, rest = split_argv(["-n", "5", "--jobs", "2", "--dimms", "4x256M", "--seed", "9",
                            "--until-fail", "--trigger", "nmi", "--results", "/tmp/r"])
    assert (own.iterations, own.jobs, own.seed, own.until_fail) == (5, 2, 9, True)
    assert rest == ["--dimms", "4x256M", "--trigger", "nmi"]


@pytest.mark.parametrize("results, status", [
    ([Result.ACCURATE, Result.ACCURATE], 0),
    ([Result.ACCURATE, Result.STALE], 1),
    ([Result.HARNESS_ERROR, Result.ACCURATE], EXIT_UNTESTABLE),
    ([Result.HARNESS_ERROR, Result.KDUMP_DID_NOT_OCCUR], 1),   # a finding outranks
    ([], EXIT_UNTESTABLE),                                     # nothing ran
])
def test_exit_status_follows_git_bisect_run(results: list[Result], status: int) -> None:
    outcome = CampaignOutcome([line(i, r) for i, r in enumerate(results)], planned=2)
    assert outcome.exit_status == status


def test_campaign_options_refuse_no_jobs(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="--jobs 0"):
        CampaignOptions("c", tmp_path, jobs=0)


def test_staleness_counts_ram_dimms_and_cpus_once() -> None:
    gib = AddressRange(0x100000000, 0x110000000)
    findings = (
        error(FindingCode.RAM_NOT_IN_DUMP, Verdict.STALE, "x", range=gib),
        error(FindingCode.RAM_NOT_IN_DUMP, Verdict.STALE, "header: x", range=gib,
              in_header=True),
        error(FindingCode.DIMM_MISSING, Verdict.STALE, "x", device="dimm3"),
        error(FindingCode.CPU_NOTES_MISSING, Verdict.STALE, "x", cpu=5),
        error(FindingCode.DUMP_RANGE_NOT_RAM, Verdict.STALE, "x",
              range=AddressRange(0x120000000, 0x128000000)),
    )
    report = VerifyReport(Verdict.STALE, findings, "vmcore", DumpFormat.ELF)
    assert staleness(report) == Staleness(mib=384.0, dimms=1, cpus=1)
    assert staleness(None) == Staleness()


def test_audit_swarms_get_unique_ids_and_only_virtio_mem_is_reset() -> None:
    plan = build_plan(SwarmSpec(dimms=(256 * MiB,) * 2, cpus=1, virtio_mem=512 * MiB))
    mine = prefixed(plan, "i4-")
    assert {e.device for e in mine.events} == {"i4-dimm0", "i4-dimm1", "i4-vcpu0", "vmem0"}
    undo = reset_plan(mine)
    assert undo is not None
    assert [(e.action, e.device, e.size) for e in undo.events] == [
        (Action.RESIZE_VIRTIO_MEM, "vmem0", 0)]
    assert reset_plan(build_plan(SwarmSpec(dimms=(256 * MiB,)))) is None


def test_wilson_and_percentiles() -> None:
    r = wilson(3, 10)
    assert (round(r.low, 3), round(r.high, 3)) == (0.108, 0.603)
    assert wilson(0, 0).text() == "-"
    with pytest.raises(ValueError):
        wilson(3, 2)
    assert percentile([1, 2, 3, 4], 50) == 2.5
    assert percentile([5], 99) == 5


def test_the_end_table_keeps_harness_errors_out_of_kernel_rates() -> None:
    lines = [line(0), line(1), line(2, Result.STALE, staleness=Staleness(256.0, 1, 0),
                                     evidence="evidence/repro/00002-seed102",
                                     replay="kdump-harness run --seed 102"),
             line(3, Result.HARNESS_ERROR, reason="QEMU died")]
    out = io.StringIO()
    render(Summary(tuple(lines), wall=36.0), Console(file=out, width=140),
           results_dir="/tmp/r")
    text = out.getvalue()
    assert "results (3 judged, 1 harness errors)" in text
    assert "66.7% [20.8, 93.9] (2/3)" in text          # accurate: 2 of the 3 judged
    assert "(not a kernel rate)" in text
    assert "replay the first: kdump-harness run --seed 102" in text
    assert "4 iterations in 36 s: 400 per hour" in text


def test_a_long_step_says_what_it_does_and_a_quick_one_stays_quiet(
        capsys: pytest.CaptureFixture[str]) -> None:
    import logging

    from harness.campaign.progress import long_step

    with long_step("guest image for trixie"):
        pass
    assert capsys.readouterr().err == ""          # a cached image is not news
    with long_step("guest image for sid"):
        logging.getLogger("harness.images").info("downloading %s", "linux-image-7.2")
    err = capsys.readouterr().err.splitlines()
    assert err[0] == "guest image for sid: downloading linux-image-7.2"
    assert err[1].startswith("guest image for sid: done in ")
    assert logging.getLogger("harness.images").level == logging.NOTSET   # put back


def test_an_iteration_that_raised_gets_a_harness_error_line_with_its_traceback(
        tmp_path: Path) -> None:
    """The worker-lost and exception paths know no kernel: the line still builds."""
    from harness.campaign.iteration import Task, Where, crash_line_for_exception
    from harness.errors import SshError

    task = Task(Recipe("repro-audit", ("--snapshot",), Kind.AUDIT), 7, 107)
    where = Where("c", tmp_path)
    got = crash_line_for_exception(task, where, RuntimeError("worker process died"))
    assert (got.result, got.kernel_release, got.seed) == (Result.HARNESS_ERROR, "", 107)
    assert got.reason == "RuntimeError: worker process died"
    assert got.evidence == "evidence/repro-audit/00007-seed107"
    assert "worker process died" in (tmp_path / got.evidence / "traceback.txt").read_text()
    ours = crash_line_for_exception(task, where, SshError("the guest stopped answering"))
    assert ours.result.family.value == "harness" and ours.kernel_release == ""
    with pytest.raises(UsageError):
        crash_line_for_exception(task, where, UsageError("bad option"))
