"""Tests for the ``bci`` console script (in-process through ``main``, once as a subprocess)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from service.cli import build_parser, main
from streams.session import load_session

JANGO = (
    Path(__file__).resolve().parents[2].parent
    / "shared"
    / "data"
    / "neural"
    / "Jango_20141203_default_offline_data.mat"
)
SUBCOMMANDS = (
    "demo",
    "simulate",
    "convert-limblab",
    "replay",
    "record",
    "streams",
    "calibrate",
    "export",
    "serve",
)


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # training: see conftest


def test_simulate_writes_session(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "x.npz"
    assert main(["simulate", "--out", str(out), "--minutes", "0.5", "--seed", "3"]) == 0
    session = load_session(out)
    assert (session.n_bins, session.n_channels) == (600, 96)
    assert session.bin_s == 0.05
    assert session.kinematics_labels == ("vx", "vy")
    assert session.targets is not None
    assert f"wrote {out}: 600 bins x 96 channels" in capsys.readouterr().out


def test_simulate_is_deterministic_for_a_seed(tmp_path: Path) -> None:
    paths = {name: tmp_path / f"{name}.npz" for name in ("a", "b", "c")}
    for name, seed in (("a", "3"), ("b", "3"), ("c", "4")):
        argv = ["simulate", "--out", str(paths[name]), "--minutes", "0.5", "--seed", seed]
        assert main(argv) == 0
    a, b, c = (load_session(p) for p in paths.values())
    np.testing.assert_array_equal(a.neural, b.neural)
    np.testing.assert_array_equal(a.kinematics, b.kinematics)
    assert not np.array_equal(a.neural, c.neural)


def test_simulate_into_missing_directory_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "missing" / "x.npz"
    assert main(["simulate", "--out", str(out), "--minutes", "0.1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("bci simulate: error:") and "does not exist" in err
    assert not out.parent.exists()


def test_convert_limblab_real_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    if not JANGO.is_file():
        pytest.skip(f"recorded data file {JANGO} is absent")
    out = tmp_path / "jango.npz"
    assert main(["convert-limblab", str(JANGO), str(out)]) == 0
    session = load_session(out)
    assert (session.n_bins, session.n_channels) == (24_000, 96)
    assert session.kinematics_labels == ("vx", "vy")
    assert "24000 bins x 96 channels" in capsys.readouterr().out


def test_convert_limblab_missing_file_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "nope.mat"
    out = tmp_path / "out.npz"
    assert main(["convert-limblab", str(missing), str(out)]) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith("bci convert-limblab: error:")
    assert str(missing) in captured.err
    assert captured.out == ""
    assert list(tmp_path.iterdir()) == []  # no output, no temporary file


def test_demo_prints_table_and_writes_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out.json"
    assert main(["demo", "--minutes", "1.5", "--steps", "20", "--json", str(out)]) == 0
    lines = capsys.readouterr().out.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("decoder"))
    assert set(lines[header + 1]) == {"-", " "}
    rows = [line.split() for line in lines[header + 2 : header + 6]]
    assert [row[0] for row in rows] == ["snn", "wiener", "kalman", "gru"]
    assert all(len(row) == 6 for row in rows)  # name, R2, vx, vy, sparsity, fit s
    assert "test part: 360 bins" in "\n".join(lines)
    results = json.loads(out.read_text())
    assert set(results) == {"snn", "wiener", "kalman", "gru", "n_test_bins"}
    assert results["n_test_bins"] == 360
    assert results["snn"]["train_steps"] <= 20
    for row in rows:
        assert row[1] == f"{results[row[0]]['r2']:.3f}"


@pytest.mark.parametrize("command", SUBCOMMANDS)
def test_subcommand_help_has_example(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main([command, "--help"])
    assert info.value.code == 0
    text = capsys.readouterr().out
    assert f"example: bci {command}" in text
    assert "%%" not in text  # argparse does not %-format descriptions


def test_every_subcommand_is_tested() -> None:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    assert tuple(sub.choices) == SUBCOMMANDS


def test_missing_subcommand_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main([])
    assert info.value.code == 2
    assert "COMMAND" in capsys.readouterr().err


def test_console_script_help() -> None:
    script = Path(sys.executable).parent / "bci"
    if not script.is_file():
        pytest.skip(f"console script {script} is not installed (pip install -e .)")
    done = subprocess.run(
        [str(script), "--help"], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: bci")
    for command in SUBCOMMANDS:
        assert command in done.stdout
