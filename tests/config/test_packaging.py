"""The package list in pyproject.toml covers every museg package, and conf/ ships as museg.conf."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import tomllib
from setuptools import find_packages

REPO = Path(__file__).resolve().parents[2]


def test_pyproject_lists_every_package():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    listed = set(project["tool"]["setuptools"]["packages"])
    found = {p for p in find_packages(str(REPO), include=["museg", "museg.*"])} | {"museg.conf"}
    assert listed == found, f"update [tool.setuptools] packages: missing {found - listed}, " \
                            f"extra {listed - found}"
    assert project["tool"]["setuptools"]["package-dir"] == {"museg.conf": "conf"}


@pytest.mark.slow
def test_non_editable_install_finds_configs(tmp_path):
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation",
                    "-q", "--target", str(target), str(REPO)], check=True)
    out = subprocess.run([sys.executable, "-m", "museg.run", "stage=2", "model=7b", "--cfg", "job"],
                         cwd=tmp_path, env={"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin"},
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "stage_2.jsonl" in out.stdout and "Qwen/Qwen2.5-VL-7B-Instruct" in out.stdout
