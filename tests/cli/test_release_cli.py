"""``keygen``, ``export`` and ``verify`` through the CLI: exit codes 0 / 1 / 2, one line per reason, --json, and
one real subprocess run of export + verify."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner, Result

from synthrelease_cli.main import cli


def run(*args: object) -> Result:
    return CliRunner().invoke(cli, [str(a) for a in args])


def test_keygen_then_export_then_verify(release_ws, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    res = run("--quiet", "keygen", tmp_path / "k")
    assert res.exit_code == 0 and res.stdout.strip() == str(tmp_path / "k.pub")
    assert run("keygen", tmp_path / "k").exit_code == 2  # never overwrites
    out = tmp_path / "pkg"
    res = run("--quiet", "export", release_ws.root, "--synthetic", "good", "--out", out, "--key", tmp_path / "k",
              "--tar", "--license", "CC-BY-NC-4.0")
    assert res.exit_code == 0, res.output
    assert res.stdout.split() == [str(out), str(tmp_path / "pkg.tar.gz")]
    assert "CC-BY-NC-4.0" in (out / "README.md").read_text()
    for target in (out, tmp_path / "pkg.tar.gz"):
        res = run("verify", target, "--key", tmp_path / "k.pub")
        assert res.exit_code == 0 and res.stdout.strip() == "valid", res.output
    res = run("verify", out, "--key", release_ws.public_key)  # someone else's key
    assert res.exit_code == 1 and res.stdout.strip().startswith("MANIFEST.sig: not a valid signature")


def test_verify_lists_every_problem_and_json(release_ws, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "pkg"
    assert run("--quiet", "export", release_ws.root, "--synthetic", "good", "--out", out).exit_code == 0
    (out / "extra.txt").write_text("x")
    (out / "labelsTr" / "syn0000.nii.gz").unlink()
    res = run("verify", out)
    assert res.exit_code == 1
    lines = res.stdout.strip().splitlines()
    assert "extra.txt: extra file, not listed in MANIFEST.sha256" in lines
    assert "labelsTr/syn0000.nii.gz: missing (listed in MANIFEST.sha256)" in lines
    data = json.loads(run("--quiet", "verify", out, "--json").stdout)
    assert data["valid"] is False and data["signed"] is False and len(data["problems"]) >= 2


def test_export_refusal_exits_1_with_the_reason_and_writes_nothing(release_ws, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    res = run("export", release_ws.root, "--synthetic", "study", "--out", tmp_path / "pkg")
    assert res.exit_code == 1 and "refused:" in res.stderr and "not a release policy" in res.stderr
    res = run("export", release_ws.root, "--synthetic", "copies", "--out", tmp_path / "pkg")
    assert res.exit_code == 1 and "negative control" in res.stderr
    assert list(tmp_path.iterdir()) == []


def test_bad_input_exits_2_with_one_line(release_ws, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    cases = [
        ("export", release_ws.root, "--synthetic", "nope", "--out", tmp_path / "p"),
        ("export", release_ws.root, "--synthetic", "good", "--out", tmp_path / "p", "--key", tmp_path / "none"),
        ("export", release_ws.root, "--synthetic", "good", "--out", tmp_path / "p", "--license", "not a licence"),
        ("export", tmp_path, "--synthetic", "good", "--out", tmp_path / "p"),
        ("export", release_ws.root, "--synthetic", "study", "--out", tmp_path / "no" / "p"),  # input before refusal
        ("verify", tmp_path / "nothing"),
    ]
    for args in cases:
        res = run(*args)
        assert res.exit_code == 2, (args, res.output)
        assert len(res.stderr.strip().splitlines()) == 1 and res.stderr.startswith("error: ")
    assert not (tmp_path / "p").exists()


def test_export_and_verify_as_subprocesses(release_ws, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "released"
    cmd = [sys.executable, "-m", "synthrelease_cli", "--quiet"]
    proc = subprocess.run([*cmd, "export", str(release_ws.root), "--synthetic", "good", "--out", str(out), "--key",
                           str(release_ws.key), "--tar"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    proc = subprocess.run([*cmd, "verify", str(out.with_name("released.tar.gz")), "--key",
                           str(release_ws.public_key)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and proc.stdout.strip() == "valid", proc.stdout + proc.stderr
