"""LICENSE and CITATION.cff agree with pyproject.toml, and the citation is valid CFF 1.2.0
(checked by cffconvert, the Citation File Format's own validator, in its own process)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
# [project] name, version, license: plain `key = "value"` lines (tomllib is Python >= 3.11)
PROJECT = dict(
    re.findall(r'^(name|version|license) = "([^"]+)"$', (ROOT / "pyproject.toml").read_text(), re.M)
)
CFFCONVERT = Path(sys.executable).parent / "cffconvert"


def test_license_is_the_one_pyproject_declares() -> None:
    assert PROJECT["license"] == "MIT"
    text = (ROOT / "LICENSE").read_text()
    assert text.startswith("MIT License\n")
    assert "Permission is hereby granted, free of charge" in text


def test_citation_names_the_project_and_its_version() -> None:
    citation = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    assert citation["cff-version"] == "1.2.0"
    assert citation["title"] == PROJECT["name"] == "bci-decoder"
    assert citation["version"] == PROJECT["version"]
    assert citation["license"] == PROJECT["license"]


def _validate(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(CFFCONVERT), "--validate", "-i", str(path)],
                          capture_output=True, text=True, timeout=60)  # fmt: skip


@pytest.mark.skipif(
    not CFFCONVERT.exists(), reason="cffconvert not installed: pip install -e .[dev]"
)
def test_citation_is_valid_cff(tmp_path: Path) -> None:
    result = _validate(ROOT / "CITATION.cff")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "valid according to schema version 1.2.0" in result.stdout
    broken = tmp_path / "CITATION.cff"  # the validator does refuse: no authors
    text = (ROOT / "CITATION.cff").read_text()
    broken.write_text(text.replace('authors:\n  - name: "The bci-decoder contributors"\n', ""))
    assert _validate(broken).returncode != 0
