"""The nightly matrix (ci/matrix.toml, harness.matrix) and its wrapper ci/nightly.py: no QEMU.

The definition's cells, exclusions and expectations; --shard's promises (every iteration
in exactly one shard, balanced, the same split on every machine and hash seed); a bad file
refused naming its key; every cell's options accepted by the ``run`` command.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.cli import build_parser
from harness.errors import UsageError
from harness.matrix.definition import build, load
from harness.matrix.expand import Cell, expand, host_exclusions
from harness.matrix.model import Confidence, Definition, Dimension, HostFacts
from harness.matrix.plan import campaign_id, make_plan
from harness.matrix.shard import ShardSpec, Unit, shard, split, units
from harness.results import Result

ROOT = Path(__file__).resolve().parents[1]
MATRIX = ROOT / "ci" / "matrix.toml"


@pytest.fixture(scope="module")
def definition() -> Definition:
    return load(MATRIX)


@pytest.fixture(scope="module")
def cells(definition: Definition) -> dict[str, Cell]:
    return {c.name: c for c in expand(definition).cells}


def raw() -> dict[str, Any]:
    return tomllib.loads(MATRIX.read_text())


# -- the definition ---------------------------------------------------------------------

def test_every_cell_parses_as_run_options_and_passes_runs_checks(
        definition: Definition, cells: dict[str, Cell]) -> None:
    from harness.matrix.plan import recipe

    parser = build_parser()
    for cell in cells.values():
        ns = parser.parse_args(["run", *cell.argv])
        assert ns.expect == cell.expected.value
        assert ns.profile == cell.value(Dimension.PROFILE)
        recipe(cell).validate()          # run's own pre-flight: plan, guest, job checks
    assert len(cells) > 50


def test_the_old_nightly_cells_keep_their_names(cells: dict[str, Cell]) -> None:
    for profile in ("trixie", "sid", "bookworm"):
        for shape in ("burst-16dimm-6cpu", "unplug-half-dimms", "seeded-shuffle"):
            for trigger in ("sysrq", "nmi"):
                assert f"{profile}-{shape}-{trigger}-file" in cells
    assert "trixie-burst-16dimm-6cpu-nmi-classic" in cells
    assert "trixie-virtio-mem-grow-sysrq-file" in cells


def test_exclusions_carry_reasons_and_never_run(definition: Definition,
                                                cells: dict[str, Cell]) -> None:
    excluded = {e.cell.name: e.reason for e in expand(definition).excluded}
    assert excluded and all(len(reason) > 20 for reason in excluded.values())
    assert "--hotplug" in excluded["bookworm-burst-16dimm-6cpu-sysrq-classic"]
    assert "6.1" in excluded["bookworm-burst-16dimm-6cpu-sysrq-file-contention-reload"]
    assert "kexec_file_load" in excluded["sid-seeded-shuffle-nmi-classic-contention-reload"]
    assert not set(excluded) & set(cells)


def test_vcpu_unplug_cells_are_skipped_only_on_an_old_qemu(definition: Definition,
                                                           cells: dict[str, Cell]) -> None:
    old = host_exclusions(definition, cells.values(), HostFacts(qemu=(7, 2, 22)))
    assert set(old) == {n for n in cells if "unplug-vcpus" in n} != set()
    assert all("double free" in why and "7.2.22" in why for why in old.values())
    assert host_exclusions(definition, cells.values(), HostFacts(qemu=(10, 0, 2))) == {}
    assert host_exclusions(definition, cells.values(), HostFacts()) == {}


@pytest.mark.parametrize(("cell", "result", "confidence"), [
    ("trixie-burst-16dimm-6cpu-sysrq-file", "accurate", "known"),
    ("sid-burst-16dimm-6cpu-nmi-classic", "accurate", "known"),
    ("trixie-unplug-half-dimms-sysrq-file", "stale", "known"),
    ("sid-unplug-half-dimms-nmi-classic", "stale", "known"),
    ("sid-unplug-half-dimms-sysrq-file-update-none", "stale", "known"),
    ("trixie-unplug-half-dimms-sysrq-file-update-reload", "accurate", "derived"),
    ("trixie-unplug-half-dimms-sysrq-file-mode-elf", "stale", "unpredictable"),
    ("trixie-unplug-vcpus-nmi-file", "accurate", "known"),
    ("bookworm-burst-16dimm-6cpu-sysrq-file", "accurate", "known"),
    ("bookworm-unplug-half-dimms-sysrq-file", "accurate", "derived"),
    ("bookworm-burst-16dimm-6cpu-sysrq-file-update-none", "stale", "known"),
    ("bookworm-burst-16dimm-6cpu-sysrq-file-update-kernel", "kernel_unsuitable", "derived"),
    ("trixie-burst-16dimm-6cpu-sysrq-file-contention-reload", "stale", "unpredictable"),
    ("sid-virtio-mem-grow-nmi-file-contention-reload", "stale", "unpredictable"),
    ("bookworm-virtio-mem-grow-sysrq-file", "accurate", "derived"),
])
def test_expected_results_follow_the_rules(cells: dict[str, Cell], cell: str, result: str,
                                           confidence: str) -> None:
    got = cells[cell]
    assert (got.expected, got.confidence) == (Result(result), Confidence(confidence)), got.why
    assert got.argv[-2:] == ("--expect", result)
    assert dict(got.config)["confidence"] == confidence


def test_unplug_cells_on_newer_kernels_all_expect_stale(cells: dict[str, Cell]) -> None:
    for cell in cells.values():
        values = {d.value: v for d, v in cell.values}
        if (values["shape"] == "unplug-half-dimms" and values["profile"] != "bookworm"
                and values["update"] in ("auto", "kernel", "none")):
            assert cell.expected is Result.STALE, cell.name


def test_cells_come_in_the_files_order_whatever_the_hash_seed() -> None:
    code = ("from pathlib import Path; from harness.matrix.definition import load; "
            "from harness.matrix.plan import make_plan; from harness.matrix.shard import "
            "ShardSpec; d = load(Path('ci/matrix.toml')); print([[u.cell.name for u in "
            "make_plan(d, spec=ShardSpec(i, 3), iterations=2).units] for i in (1, 2, 3)])")
    outs = {subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, text=True,
                           capture_output=True, env={**os.environ, "PYTHONHASHSEED": seed}
                           ).stdout for seed in ("0", "1", "4242")}
    assert len(outs) == 1 and "trixie-burst-16dimm-6cpu-sysrq-file" in outs.pop()


# -- a bad file is refused, naming the key ----------------------------------------------

def _edit(path: str, value: Any) -> dict[str, Any]:
    data = raw()
    *parents, last = path.split(".")
    node: Any = data
    for key in parents:
        node = node[int(key)] if isinstance(node, list) else node[key]
    if value is KeyError:
        del node[last]
    elif isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value
    return data


@pytest.mark.parametrize(("edit", "value", "named"), [
    ("expect.0.result", "stal", "expect[0].result: 'stal' is not one of accurate"),
    ("expect.1.confidence", "sure", "expect[1].confidence"),
    ("expect.0.when.trigger", ["sysrq", "nmx"], "expect[0].when.trigger[1]: 'nmx'"),
    ("expect.0.when.colour", ["red"], "expect[0].when.colour: unknown key"),
    ("dimensions.kexec", ["file", "fancy"], "dimensions.kexec[1]: 'fancy'"),
    ("dimensions.profile", ["trixie", "buster"], "dimensions.profile[1]: 'buster'"),
    ("dimensions.mode", KeyError, "dimensions.mode: missing"),
    ("shapes.unplug-vcpus.args", ["--dimms", "4x256M", "--unplug-vcpus", "2"],
     "shapes.unplug-vcpus.args: "),
    ("shapes.seeded-shuffle.why", "", "shapes.seeded-shuffle.why: expected a non-empty"),
    ("groups.1.shape", ["burst"], "groups[1].shape[0]: 'burst' is not one of"),
    ("exclude.3.host", "kvm", "exclude[3].host: 'kvm'"),
    ("exclude.0.reason", "", "exclude[0].reason"),
    ("selections.quick.groups", ["kore"], "selections.quick.groups[0]: 'kore'"),
    ("cost.mode.elf", -1, "cost.mode.elf: expected a number >= 0"),
    ("iterations", 0, "iterations: expected a whole number >= 1"),
    ("schema", 2, "schema: expected 1"),
    ("tier", "nightly", "tier: unknown key"),
])
def test_a_bad_definition_is_refused_naming_file_and_key(edit: str, value: Any,
                                                         named: str) -> None:
    with pytest.raises(UsageError) as info:
        build(_edit(edit, value), Path("ci/matrix.toml"))
    assert str(info.value).startswith("ci/matrix.toml: ")
    assert named in str(info.value)


def test_the_last_rule_must_match_every_cell() -> None:
    data = raw()
    data["expect"] = data["expect"][:-1]
    with pytest.raises(UsageError, match=r"expect\[\d+\]\.when: the last rule must match"):
        build(data, MATRIX)


def test_a_run_option_the_run_parser_refuses_names_the_cell() -> None:
    data = copy.deepcopy(raw())
    data["profiles"]["sid"] = {"args": ["--maxcpus", "many"]}
    with pytest.raises(UsageError, match=r"cell sid-.*--maxcpus: invalid int value"):
        expand(build(data, MATRIX))


def test_an_unreadable_file_is_refused_naming_it(tmp_path: Path) -> None:
    bad = tmp_path / "m.toml"
    bad.write_text("schema = 1\n[dimensions\n")
    with pytest.raises(UsageError, match=f"{bad}: not valid TOML"):
        load(bad)
    with pytest.raises(UsageError, match="cannot read the matrix definition"):
        load(tmp_path / "absent.toml")


# -- selections ---------------------------------------------------------------------------

def test_selections(definition: Definition) -> None:
    def names(*selectors: str) -> set[str]:
        return {c.name for c in expand(definition).select(definition, selectors).cells}

    assert names("smoke") == {"trixie-burst-16dimm-6cpu-sysrq-file"}
    quick = names("quick")
    assert 4 <= len(quick) <= 10 and all(n.startswith("trixie-") for n in quick)
    assert names("quick", "trigger=nmi") == {n for n in quick if "-nmi-" in n}
    assert all("contention-reload" in n for n in names("lock"))
    assert names("group=updates", "profile=sid", "update=none") == {
        "sid-burst-16dimm-6cpu-sysrq-file-update-none",
        "sid-unplug-half-dimms-sysrq-file-update-none"}
    assert names("trait=cpu-unplug") == {n for n in names() if "unplug-vcpus" in n}
    for bad, why in (("quik", "no such selection"), ("colour=red", "not a dimension"),
                     ("profile=buster", "profile is one of"), ("group=x", "groups are"),
                     ("trait=fast", "traits are")):
        with pytest.raises(UsageError, match=why):
            names(bad)


# -- sharding -----------------------------------------------------------------------------

def test_shards_cover_every_iteration_once(definition: Definition) -> None:
    selected = expand(definition).cells
    everything = {u.key for u in units(selected, 3)}
    for count in (1, 2, 4, 7):
        parts = [make_plan(definition, spec=ShardSpec(i, count), iterations=3).units
                 for i in range(1, count + 1)]
        keys = [u.key for part in parts for u in part]
        assert len(keys) == len(set(keys)) and set(keys) == everything
        again = [make_plan(definition, spec=ShardSpec(i, count), iterations=3).units
                 for i in range(1, count + 1)]
        assert again == parts


def _cell(name: str, cost: float) -> Cell:
    return Cell(name, (), frozenset(), (), Result.ACCURATE, Confidence.KNOWN, "", cost, ())


@settings(max_examples=60, deadline=None)
@given(costs=st.lists(st.floats(min_value=0.5, max_value=60), min_size=0, max_size=40),
       iterations=st.integers(1, 3), count=st.integers(1, 6), seed=st.randoms())
def test_sharding_is_a_balanced_partition_whatever_the_order(
        costs: list[float], iterations: int, count: int, seed: Any) -> None:
    work = list(units([_cell(f"c{i}", c) for i, c in enumerate(costs)], iterations))
    parts = split(work, count)
    shuffled = work[:]
    seed.shuffle(shuffled)
    assert split(shuffled, count) == parts                    # input order does not matter
    assert sorted(u.key for p in parts for u in p) == sorted(u.key for u in work)
    loads = [sum(u.cell.cost for u in p) for p in parts]
    assert max(loads) - min(loads) <= max(costs, default=0) + 1e-9
    assert [shard(work, ShardSpec(i + 1, count)) for i in range(count)] == list(parts)


@pytest.mark.parametrize("text", ["0/4", "5/4", "1/0", "a/b", "2", "1/4/2", ""])
def test_a_bad_shard_is_refused(text: str) -> None:
    with pytest.raises(UsageError, match="--shard"):
        ShardSpec.parse(text)


def test_shard_spec_and_campaign_id() -> None:
    import datetime

    spec = ShardSpec.parse(" 2/4 ")
    assert (spec.index, spec.count, str(spec), spec.label) == (2, 4, "2/4", "shard2of4")
    night = datetime.datetime(2026, 12, 3, 1, 0, tzinfo=datetime.UTC)
    assert campaign_id(spec, night) == "nightly-20261203-shard2of4"


def test_unit_keys_are_cell_and_iteration() -> None:
    (a, b) = units([_cell("x", 1.0)], 2)
    assert isinstance(a, Unit) and (a.key, b.key) == (("x", 0), ("x", 1))


# -- ci/nightly.py, the wrapper ---------------------------------------------------------

@pytest.fixture
def nightly(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    spec = importlib.util.spec_from_file_location("nightly", ROOT / "ci" / "nightly.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "nightly", module)
    spec.loader.exec_module(module)
    return module


def test_nightly_runs_the_matrix_then_the_report(nightly: ModuleType, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[list[str]] = []

    def fake_run(argv: list[str], **_: Any) -> subprocess.CompletedProcess[str]:
        calls.append(argv)
        if argv[1:3] == ["matrix", "run"]:
            (tmp_path / "results.jsonl").write_text("{}\n")
        return subprocess.CompletedProcess(argv, 1 if argv[1:3] == ["matrix", "run"] else 0)

    monkeypatch.setattr(nightly, "harness_command", lambda: ["kh"])
    monkeypatch.setattr(nightly.subprocess, "run", fake_run)
    status = nightly.main(["--shard", "2/4", "--jobs", "2", "--results", str(tmp_path),
                           "--quick", "--iterations", "3"])
    assert status == 1                                   # the matrix's finding is the status
    matrix, help_, report = calls
    assert matrix[:3] == ["kh", "matrix", "run"]
    words = " ".join(matrix)
    assert "--shard 2/4 --jobs 2" in words and "--select quick --iterations 3" in words
    assert help_ == ["kh", "report", "--help"]
    assert report[:3] == ["kh", "report", str(tmp_path)]
    assert ["-o", str(tmp_path / "report.html")] == report[3:5]
    assert "--known-failures" in report and "--markdown" in report


def test_nightly_without_a_report_command_or_results_stops_after_the_matrix(
        nightly: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[list[str]] = []

    def fake_run(argv: list[str], **_: Any) -> subprocess.CompletedProcess[str]:
        calls.append(argv)
        return subprocess.CompletedProcess(argv, 0)

    monkeypatch.setattr(nightly, "harness_command", lambda: ["kh"])
    monkeypatch.setattr(nightly.subprocess, "run", fake_run)
    assert nightly.main(["--results", str(tmp_path)]) == 0
    assert len(calls) == 1                               # no results.jsonl: no report
    assert nightly.main(["--results", str(tmp_path), "--dry-run"]) == 0
    assert calls[-1][-1] == "--dry-run"


def test_nightly_leaves_out_a_missing_known_failures_file(nightly: ModuleType,
                                                          tmp_path: Path) -> None:
    args = nightly.parse_args(["--results", str(tmp_path)])
    assert "--known-failures" not in nightly.report_argv(args, known=tmp_path / "absent")


def test_matrix_plan_json_names_cells_and_reasons(definition: Definition) -> None:
    from harness.matrix.plan import plan_json

    data = plan_json(make_plan(definition, selectors=["quick"], spec=ShardSpec(1, 2)), "c")
    json.dumps(data)
    assert data["campaign"] == "c" and data["shard"] == "1/2" and data["cells"]
    assert {"cell", "argv", "expected", "confidence", "why"} <= set(data["cells"][0])
