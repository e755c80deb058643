"""The wheel carries both packages, the shipped policies and the console script, and works when installed."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out),
                    str(ROOT)], check=True, capture_output=True)
    (built,) = out.glob("synthrelease-*.whl")
    return built


def test_wheel_contents(wheel: Path):
    names = zipfile.ZipFile(wheel).namelist()
    assert "synthrelease/_data/policies/default.toml" in names
    assert "synthrelease_cli/main.py" in names and "synthrelease/data/case.py" in names
    assert not any(n.startswith("tests/") for n in names)
    entry = next(n for n in names if n.endswith("entry_points.txt"))
    assert "synthrelease = synthrelease_cli.main:main" in zipfile.ZipFile(wheel).read(entry).decode()


def test_installed_wheel_finds_its_policies(wheel: Path, tmp_path: Path):
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site), str(wheel)],
                   check=True, capture_output=True)
    code = ("import synthrelease.resources as r, tomllib; p = r.policy_path('default'); "
            "print(p); print(len(tomllib.loads(p.read_text())['rule']))")
    env = {**os.environ, "PYTHONPATH": str(site)}
    res = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                         check=True)
    path, n_rules = res.stdout.split()
    assert path.startswith(str(site)) and int(n_rules) >= 5


def test_default_policy_is_data_with_known_ops():
    from synthrelease.resources import list_policies, policy_path

    assert "default" in list_policies()
    policy = tomllib.loads(policy_path("default").read_text())
    assert policy["name"] == "default"
    for rule in policy["rule"]:
        assert rule["op"] in {"<=", ">=", "==", "<", ">"}
        assert rule["severity"] in {"fail", "warn"}
        assert ("threshold" in rule) != ("threshold_metric" in rule)
        assert rule["metric"].count(".") == 2
