"""``kdump-harness vmcore``, through a throwaway parser (the real one is wired elsewhere)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
from vmcore_guest import DMESG, DUMP_RAM, PANIC_WINDOW, make_spec, make_topology

from harness.cli.vmcore import register
from harness.vmcore.writer import build_elf_core, build_kdump, build_raw_elfcorehdr, flatten


def run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="kdump-harness")
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return int(args.func(args))


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    paths = {
        "core": tmp_path / "vmcore",
        "stale": tmp_path / "stale.vmcore",
        "kdump": tmp_path / "dump.kdump",
        "flat": tmp_path / "dump.flat",
        "header": tmp_path / "elfcorehdr.bin",
        "topology": tmp_path / "topology.json",
        "dmesg": tmp_path / "dmesg.txt",
    }
    paths["core"].write_bytes(build_elf_core(make_spec(), memory="headers-only"))
    paths["stale"].write_bytes(build_elf_core(make_spec(ram=DUMP_RAM[:3]), memory="headers-only"))
    paths["kdump"].write_bytes(build_kdump(make_spec()))
    paths["flat"].write_bytes(flatten(paths["kdump"].read_bytes()))
    paths["header"].write_bytes(build_raw_elfcorehdr(make_spec(), possible_cpus=4))
    paths["topology"].write_text(make_topology().to_json())
    paths["dmesg"].write_text(DMESG)
    return paths


def test_inspect_text_and_json(files: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["vmcore", "inspect", str(files["core"])]) == 0
    out = capsys.readouterr().out
    assert "ELF core" in out and "note 0: pid 4242" in out and "OSRELEASE=6.12.0-test" in out
    assert run(["vmcore", "inspect", str(files["flat"]), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["format"] == "kdump" and data["flattened"] and len(data["cpu_notes"]) == 2
    assert run(["vmcore", "inspect", str(files["header"])]) == 0
    assert "CPU note slots: 4" in capsys.readouterr().out


def test_verify_exit_status(files: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    window = [str(t) for t in PANIC_WINDOW]
    common = ["--topology", str(files["topology"]), "--panic-window", *window]
    assert run(["vmcore", "verify", str(files["core"]), *common, "--dmesg", str(files["dmesg"]),
                "--raw-header", str(files["header"]), "--panic-cpu", "0"]) == 0
    assert capsys.readouterr().out.startswith("vmcore verdict: ACCURATE")
    assert run(["vmcore", "verify", str(files["stale"]), *common, "--json"]) == 1
    assert json.loads(capsys.readouterr().out)["verdict"] == "stale"
    assert run(["vmcore", "verify", str(files["header"]), "--topology",
                str(files["topology"])]) == 0       # the live audit, from a file


@pytest.mark.parametrize("case", ["truncated", "missing", "topology", "window", "format"])
def test_bad_input_is_one_line_and_status_2(case: str, files: dict[str, Path],
                                            capsys: pytest.CaptureFixture[str]) -> None:
    core, topology = files["core"], files["topology"]
    argv = ["vmcore", "verify", str(core), "--topology", str(topology)]
    expect = str(core)
    if case == "truncated":
        core.write_bytes(core.read_bytes()[:100])
        expect = "field e_phoff, offset 0x20"
    elif case == "missing":
        argv[2] = str(core.with_name("nope"))
        expect = "nope"
    elif case == "topology":
        topology.write_text("{\"cpus_online\": [0]}")
        expect = "not a topology snapshot"
    elif case == "window":
        argv += ["--panic-window", "10", "5"]
        expect = "before START"
    else:
        argv = ["vmcore", "inspect", str(core), "--format", "kdump"]
        expect = "field signature, offset 0x0"
    assert run(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err and expect in err, err
    assert err.startswith("kdump-harness vmcore: error: ")


def test_rebuild(files: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "rebuilt.kdump"
    assert run(["vmcore", "rebuild", str(files["flat"]), str(out)]) == 0
    assert out.read_bytes() == files["kdump"].read_bytes()
    assert run(["vmcore", "rebuild", str(files["core"]), str(out)]) == 2


def test_vmcore_without_a_subcommand_prints_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["vmcore"]) == 2
    assert "inspect" in capsys.readouterr().err


def test_verify_text_is_brief_unless_verbose(files: dict[str, Path],
                                             capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["vmcore", "verify", str(files["stale"]), "--topology", str(files["topology"]),
            "--dmesg", str(files["dmesg"])]
    assert run(argv) == 1
    brief = capsys.readouterr().out.splitlines()
    assert brief[0].startswith("vmcore verdict: STALE") and brief[1] == "because:"
    assert "dimm-missing" in brief[2] and "matched:" in brief
    assert run([*argv, "--verbose"]) == 1
    verbose = capsys.readouterr().out.splitlines()
    assert len(verbose) > len(brief) and "cpu:" in verbose
    assert any("info    cpu-notes-match" in line for line in verbose)
    assert not any("cpu-notes-match" in line for line in brief)


def test_verify_refuses_snapshots_whose_devices_overlap(files: dict[str, Path], tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]
                                                        ) -> None:
    expected = tmp_path / "expected.json"
    data = json.loads(files["topology"].read_text())
    dimm = data["memory_devices"][0]
    data["memory_devices"].append({**dimm, "id": "dimm9", "addr": dimm["addr"] + 4096})
    expected.write_text(json.dumps(data))
    assert run(["vmcore", "verify", str(files["core"]), "--topology", str(files["topology"]),
                "--expected", str(expected)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "overlap" in err and "dimm9" in err
