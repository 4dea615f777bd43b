"""``kdump-harness bench profile`` on a real guest: the capture path split by phase, and
the capture kernel's functions named."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from harness.cli import main

pytestmark = pytest.mark.guest


@pytest.mark.profile("trixie")
def test_a_panic_splits_into_purgatory_decompressor_and_capture_kernel(
        artifact_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status = main(["bench", "profile", "--profile", "trixie", "--runs", "1", "--snapshot",
                   "--keep", str(artifact_dir)])
    out = capsys.readouterr().out
    assert status == 0, out

    def seconds(row: str) -> float:
        m = re.search(rf"^{re.escape(row)}.*median\s+([\d.]+) s", out, re.M)
        assert m, f"no row {row!r} in:\n{out}"
        return float(m.group(1))

    # trixie's 6.12 logs its kexec segments (kexec -s -d), so purgatory and the
    # decompressor are told apart; purgatory hashes the kernel segment's whole init_size.
    m = re.search(r"^purgatory \(digest check\), ([\d.]+) MiB", out, re.M)
    assert m and float(m.group(1)) > 40, out
    for row in ("trigger to leaving first kernel", "purgatory (digest check)",
                "bzImage decompressor", "capture kernel to userspace"):
        assert seconds(row) > 0, out
    functions = re.findall(r"^\s+[\d.]+ %  (\S+)$", out, re.M)
    assert len(functions) >= 5, out
    assert all(not f.startswith("0x") for f in functions), out
    # The run's evidence was kept: the capture happened, and the sampler stayed out of
    # the QMP transcript but for its note.
    entries = [json.loads(line) for line in
               (artifact_dir / "run-1" / "qmp.jsonl").read_text().splitlines()]
    assert any("sampling RIPs" in str(e["msg"]) for e in entries)
    assert not [e for e in entries if e["kind"] in ("command", "reply")
                and "info registers" in json.dumps(e["msg"])]
