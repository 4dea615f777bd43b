"""Golden files: real headers-only dumps from each guest kernel, in tests/data/vmcore/.

See tests/data/vmcore/README.md for the file layout.  The checking logic is also run on a
synthetic pair so it stays tested before any real dump is checked in.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from vmcore_guest import DMESG, PANIC_WINDOW, make_spec, make_topology

from harness.topology import Topology
from harness.vmcore import Verdict, open_dump, verify
from harness.vmcore.writer import build_elf_core, build_raw_elfcorehdr

GOLDEN_DIR = Path(__file__).resolve().parent.parent / "data" / "vmcore"
UPDATE = os.environ.get("VMCORE_GOLDEN_UPDATE") == "1"


def golden_pairs(directory: Path = GOLDEN_DIR) -> list[Path]:
    """Every ``NAME.core`` with a ``NAME.json`` beside it."""
    return sorted(p for p in directory.glob("*.core") if p.with_suffix(".json").exists())


def check_golden(core: Path) -> None:
    """Read ``core``, verify it against its JSON, compare the inspect output if recorded."""
    spec: dict[str, Any] = json.loads(core.with_suffix(".json").read_text())
    if "topology" not in spec:
        spec = {"topology": spec, "expect": {"verdict": "accurate"}}
    topology = Topology.from_json_dict(spec["topology"])
    expected = Topology.from_json_dict(spec["expected"]) if "expected" in spec else None
    dump = open_dump(core, format=spec.get("format", "auto"))
    raw_path, dmesg_path = core.with_suffix(".elfcorehdr"), core.with_suffix(".dmesg")
    raw = open_dump(raw_path, format="raw-elfcorehdr") if raw_path.exists() else None
    dmesg = dmesg_path.read_text(errors="replace") if dmesg_path.exists() else None
    options = dict(spec.get("verify", {}))
    if "panic_window" in options:
        options["panic_window"] = tuple(options["panic_window"])
    report = verify(dump, topology, raw_header=raw, dmesg=dmesg, expected=expected, **options)

    expect: dict[str, Any] = spec.get("expect", {})
    context = f"{core.name}:\n{report.to_text()}"
    assert report.verdict == Verdict(expect.get("verdict", "accurate")), context
    assert set(expect.get("codes", ())) <= {c.value for c in report.codes()}, context
    # A real guest's QMP and guest views agree: no device-view warnings.
    assert not {c.value for c in report.codes()} & {"dimm-not-ram", "dimm-size-mismatch",
                                                     "dimm-ram-unaccounted"}, context
    if "format" in expect:
        assert dump.format.value == expect["format"], context
    if "cpu_notes" in expect:
        assert len(dump.cpu_notes) == expect["cpu_notes"], context
    if "osrelease" in expect:
        assert dump.vmcoreinfo is not None and dump.vmcoreinfo.osrelease == expect["osrelease"]

    inspect_path = core.with_suffix(".inspect.json")
    summary = dump.to_json_dict()
    summary["source"] = core.name           # the path differs from machine to machine
    if UPDATE:
        inspect_path.write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    elif inspect_path.exists():
        assert summary == json.loads(inspect_path.read_text()), (
            f"{core.name}: inspect output changed; rerun with VMCORE_GOLDEN_UPDATE=1 to accept")


_PAIRS = golden_pairs()


@pytest.mark.skipif(not _PAIRS, reason=f"no *.core/*.json golden pairs in {GOLDEN_DIR} yet "
                                       "(see its README.md to add some)")
@pytest.mark.parametrize("core", _PAIRS or [None], ids=[p.stem for p in _PAIRS] or ["none"])
def test_golden_dump(core: Path) -> None:
    check_golden(core)


def test_golden_machinery_on_a_synthetic_pair(tmp_path: Path) -> None:
    core = tmp_path / "synthetic.core"
    core.write_bytes(build_elf_core(make_spec(), memory="headers-only"))
    header = build_raw_elfcorehdr(make_spec(), possible_cpus=4)
    (tmp_path / "synthetic.elfcorehdr").write_bytes(header)
    (tmp_path / "synthetic.dmesg").write_text(DMESG)
    spec = {"topology": make_topology().to_json_dict(),
            "verify": {"panic_window": list(PANIC_WINDOW), "panic_cpu": 0},
            "expect": {"verdict": "accurate", "codes": ["panic-message-found", "memory-match"],
                       "format": "elf", "cpu_notes": 2, "osrelease": "6.12.0-test"}}
    (tmp_path / "synthetic.json").write_text(json.dumps(spec))
    (tmp_path / "plain.core").write_bytes(core.read_bytes())
    (tmp_path / "plain.json").write_text(make_topology().to_json())
    assert [p.name for p in golden_pairs(tmp_path)] == ["plain.core", "synthetic.core"]
    for pair in golden_pairs(tmp_path):
        check_golden(pair)
    # A recorded inspect summary is compared.
    summary = open_dump(core).to_json_dict()
    summary["source"] = "synthetic.core"
    summary["cpu_notes"][0]["pid"] = 1
    (tmp_path / "synthetic.inspect.json").write_text(json.dumps(summary))
    with pytest.raises(AssertionError, match="inspect output changed"):
        check_golden(core)
