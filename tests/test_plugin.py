"""The pytest plugin, exercised with pytester (no QEMU)."""

from __future__ import annotations

import json

import pytest

pytest_plugins = ["pytester"]

USES_ARTIFACTS = """
def test_passes(artifact_dir):
    (artifact_dir / "console.log").write_text("ok")

def test_fails(artifact_dir):
    (artifact_dir / "console.log").write_text("boom")
    assert False, "the guest did something wrong"
"""


def test_report_header_and_evidence_kept_only_for_failures(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(USES_ARTIFACTS)
    result = pytester.runpytest("-p", "no:cacheprovider", "--kh-accel", "tcg")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["kdump-harness: accel=tcg artifacts=* keep=failed",
                                 "*kdump-harness evidence*"])
    artifacts = pytester.path / "artifacts"
    kept = [p.name for p in artifacts.iterdir()]
    assert len(kept) == 1 and "test_fails" in kept[0]
    verdict = json.loads((artifacts / kept[0] / "test-verdict.json").read_text())
    assert verdict["outcome"] == "failed"
    assert "the guest did something wrong" in verdict["message"]


def test_keep_always_and_environment_precedence(pytester: pytest.Pytester,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    pytester.makepyfile(USES_ARTIFACTS)
    monkeypatch.setenv("KDUMP_HARNESS_KEEP", "never")
    # The command line beats the environment.
    result = pytester.runpytest("-p", "no:cacheprovider", "--kh-keep", "always")
    result.assert_outcomes(passed=1, failed=1)
    assert len(list((pytester.path / "artifacts").iterdir())) == 2


def test_bad_values_name_where_they_came_from(pytester: pytest.Pytester,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    pytester.makepyfile("def test_x(): pass")
    result = pytester.runpytest("-p", "no:cacheprovider", "--kh-keep", "sometimes")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--kh-keep='sometimes': expected one of failed, always, never*"])
    monkeypatch.setenv("KDUMP_HARNESS_ACCEL", "hvf")
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.stderr.fnmatch_lines(["*KDUMP_HARNESS_ACCEL='hvf': expected one of auto, kvm, tcg*"])


def test_profile_selection_skips_with_a_reason(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("""
        import pytest

        @pytest.mark.profile("sid")
        def test_sid(): pass

        @pytest.mark.profile("trixie")
        def test_trixie(): pass
    """)
    result = pytester.runpytest("-p", "no:cacheprovider", "-rs", "--kh-profiles", "trixie")
    result.assert_outcomes(passed=1, skipped=1)
    result.stdout.fnmatch_lines(["*profile sid not selected (use --kh-profiles to add it)*"])


def test_a_marker_beats_the_command_line_which_beats_the_environment(
        pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    pytester.makepyfile("""
        import pytest

        def test_session(kh_accel):
            assert kh_accel == "auto"       # --kh-accel auto beats KDUMP_HARNESS_ACCEL=tcg

        @pytest.mark.kh(accel="kvm")
        def test_marker(kh_accel):
            assert kh_accel == "kvm"

        @pytest.mark.kh(accel="quantum")
        def test_bad_marker(kh_accel):
            pass
    """)
    monkeypatch.setenv("KDUMP_HARNESS_ACCEL", "tcg")
    result = pytester.runpytest("-p", "no:cacheprovider", "--kh-accel", "auto")
    result.assert_outcomes(passed=2, errors=1)
    result.stdout.fnmatch_lines(["*marker kh(accel=...)='quantum': expected one of auto*"])


def test_ini_is_below_the_environment(pytester: pytest.Pytester,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    pytester.makeini("[pytest]\nkh_keep = always\n")
    pytester.makepyfile(USES_ARTIFACTS)
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, failed=1)
    assert len(list((pytester.path / "artifacts").iterdir())) == 2
    monkeypatch.setenv("KDUMP_HARNESS_KEEP", "never")
    result = pytester.runpytest("-p", "no:cacheprovider")
    assert not (pytester.path / "artifacts").exists() or not any(
        (pytester.path / "artifacts").iterdir())
