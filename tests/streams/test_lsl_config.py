"""Tests for streams.lsl_config: liblsl's configuration file with its log level set, the lab's
own settings kept (real files, and a real liblsl in a child process)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from streams.lsl_config import QUIET_LEVEL, quiet_liblsl

LAB = "[lab]\nKnownPeers = {10.0.0.7}\n\n[ports]\nBasePort = 16572\n"


@pytest.fixture(autouse=True)
def no_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("LSLAPICFG", "")  # recorded, so whatever quiet_liblsl sets is undone
    monkeypatch.delenv("LSLAPICFG")
    monkeypatch.chdir(tmp_path)  # no ./lsl_api.cfg unless a test writes one
    monkeypatch.setenv("HOME", str(tmp_path))  # nor ~/lsl_api/lsl_api.cfg


def test_the_labs_settings_are_kept_and_the_level_added(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lab = tmp_path / "lab.cfg"
    lab.write_text(LAB)
    monkeypatch.setenv("LSLAPICFG", str(lab))
    written = quiet_liblsl()
    assert written is not None and os.environ["LSLAPICFG"] == str(written)
    text = written.read_text()
    assert text.startswith(LAB.rstrip()) and text.endswith(f"[log]\nlevel = {QUIET_LEVEL}\n")
    assert quiet_liblsl() is None  # already quiet: a child's own call changes nothing
    assert os.environ["LSLAPICFG"] == str(written)
    monkeypatch.setenv("LSLAPICFG", str(lab))
    assert quiet_liblsl() == written  # the same content: the same file


def test_a_file_in_the_working_folder_is_found_as_liblsl_would(tmp_path: Path) -> None:
    (tmp_path / "lsl_api.cfg").write_text(LAB)
    written = quiet_liblsl()
    assert written is not None and "KnownPeers = {10.0.0.7}" in written.read_text()


def test_a_configured_log_level_is_left_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lab = tmp_path / "lab.cfg"
    lab.write_text(LAB + "\n[log]\nlevel = 0\n")
    monkeypatch.setenv("LSLAPICFG", str(lab))
    assert quiet_liblsl() is None and os.environ["LSLAPICFG"] == str(lab)


def test_liblsl_reads_the_file_and_stays_quiet() -> None:
    quiet_liblsl()
    code = "import pylsl; pylsl.StreamOutlet(pylsl.StreamInfo('q', 'EEG', 1, 10.0))"
    quiet = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    env = {k: v for k, v in os.environ.items() if k != "LSLAPICFG"}
    loud = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert quiet.returncode == loud.returncode == 0
    assert quiet.stderr == "" and "INFO|" in loud.stderr
