"""Tests for the streaming subcommands of ``bci``: simulate (LSL), replay, record.

Each test uses unique stream names; subcommands that stream run ``main`` in a thread while
the test consumes or records the streams.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pylsl
import pytest
import pyxdf

from service.cli import main
from streams.session import Session, save_session
from streams.synthetic import SyntheticConfig, simulate_session
from streams.xdf import write_session_xdf

XDF_DIR = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "xdf"
XDF_FILES = ("minimal.xdf", "clock_resets.xdf", "empty_streams.xdf")
TIMEOUT = 30.0


def unique_name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


class InThread:
    """Run ``main(argv)`` in a thread; ``result()`` joins and returns its exit code."""

    def __init__(self, argv: list[str]) -> None:
        self._code: list[int] = []
        self._error: list[BaseException] = []
        self._thread = threading.Thread(target=self._run, args=(argv,), daemon=True)
        self._thread.start()

    def _run(self, argv: list[str]) -> None:
        try:
            self._code.append(main(argv))
        except BaseException as error:  # re-raised in the test thread
            self._error.append(error)

    def result(self, timeout: float = 60.0) -> int:
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "the command did not finish"
        if self._error:
            raise self._error[0]
        return self._code[0]


def pull_until(
    inlet: pylsl.StreamInlet, done: Callable[[int], bool], timeout: float = TIMEOUT
) -> tuple[np.ndarray, np.ndarray]:
    """Pull (timeout=0 polling) until ``done(n_received)`` or the timeout."""
    data, stamps = [], []
    n = 0
    deadline = time.monotonic() + timeout
    while not done(n) and time.monotonic() < deadline:
        chunk, ts = inlet.pull_chunk(timeout=0.0, max_samples=4096, as_numpy=True)
        if len(ts):
            data.append(chunk)
            stamps.append(ts)
            n += len(ts)
        else:
            time.sleep(0.005)
    if not data:
        return np.zeros((0, inlet.channel_count)), np.zeros(0)
    return np.concatenate(data), np.concatenate(stamps)


def open_inlet(name: str) -> pylsl.StreamInlet:
    found = pylsl.resolve_byprop("name", name, minimum=1, timeout=TIMEOUT)
    assert found, f"stream {name} did not appear"
    inlet = pylsl.StreamInlet(found[0], max_buflen=60)
    inlet.open_stream(timeout=TIMEOUT)
    return inlet


def locate(session: np.ndarray, received: np.ndarray) -> int:
    """Bin index of ``session`` (looped) at which ``received`` starts (first 50 rows match)."""
    m = min(len(received), 50)
    n = session.shape[0]
    for k in range(n):
        if np.array_equal(session[(k + np.arange(m)) % n], received[:m]):
            return k
    raise AssertionError("the received samples are not a stretch of the simulated session")


def parse_table(text: str) -> list[dict[str, str]]:
    """Rows of the first table in ``text`` (columns located by the dashed separator line)."""
    lines = text.splitlines()
    sep = next(i for i, line in enumerate(lines) if line.startswith("--"))
    spans = []
    start = 0
    for cell in lines[sep].split("  "):
        spans.append((start, start + len(cell)))
        start += len(cell) + 2
    header = lines[sep - 1]

    def cells(line: str) -> list[str]:
        return [line[a:b].strip() for a, b in spans]

    names = cells(header.ljust(start))
    rows = []
    for line in lines[sep + 1 :]:
        if not line.strip():
            break
        rows.append(dict(zip(names, cells(line.ljust(start)), strict=True)))
    return rows


# --- replay --inspect --------------------------------------------------------------------


@pytest.mark.parametrize("filename", XDF_FILES)
def test_replay_inspect_real_xdf_files_match_pyxdf(
    filename: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path = XDF_DIR / filename
    if not path.is_file():
        pytest.skip(f"recorded XDF file {path} is absent (../shared/data/xdf)")
    assert main(["replay", "--inspect", str(path)]) == 0
    out = capsys.readouterr().out
    rows = {row["id"]: row for row in parse_table(out)}
    streams, _ = pyxdf.load_xdf(str(path))
    assert out.startswith(f"{path}: {len(streams)} stream(s)")
    assert len(rows) == len(streams)
    for stream in streams:
        info = stream["info"]
        row = rows[str(info["stream_id"])]
        assert row["name"] == info["name"][0]
        assert row["type"] == info["type"][0]
        assert row["ch"] == info["channel_count"][0]
        assert int(row["samples"]) == len(stream["time_stamps"])
        assert row["format"] == info["channel_format"][0]


def test_replay_inspect_npz_session(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    session = simulate_session(SyntheticConfig(n_channels=7, duration_s=10.0, seed=1))
    timestamps = session.timestamps.copy()
    timestamps[100:] += 1.0  # a 1 s gap after bin 100
    gapped = Session(
        neural=session.neural,
        timestamps=timestamps,
        bin_s=session.bin_s,
        kinematics=session.kinematics,
        kinematics_labels=session.kinematics_labels,
    )
    path = save_session(tmp_path / "s.npz", gapped)
    assert main(["replay", str(path), "--inspect"]) == 0
    out = capsys.readouterr().out
    rows = parse_table(out)
    assert [r["name"] for r in rows] == ["neural", "kinematics"]
    assert [r["ch"] for r in rows] == ["7", "2"]
    assert {r["samples"] for r in rows} == {"200"}
    assert {r["nominal Hz"] for r in rows} == {"20"}
    assert {r["gaps"] for r in rows} == {"1"}
    assert "1 gap(s) adding 1.000 s" in out


def test_replay_needs_a_mode_and_an_existing_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        main(["replay", str(tmp_path / "x.npz")])
    assert info.value.code == 2
    assert "one of the arguments --inspect --play is required" in capsys.readouterr().err
    assert main(["replay", "--inspect", str(tmp_path / "missing.xdf")]) == 2
    assert "does not exist" in capsys.readouterr().err


# --- simulate over LSL -------------------------------------------------------------------


def test_simulate_streams_over_lsl_for_seconds(capsys: pytest.CaptureFixture[str]) -> None:
    name = unique_name("cli-sim")
    argv = ["simulate", "--seconds", "3", "--name", name, "--minutes", "0.5", "--seed", "4"]
    command = InThread([*argv, "--speed", "4"])
    inlet = open_inlet(name)
    info = inlet.info(timeout=TIMEOUT)
    data, stamps = pull_until(inlet, lambda n: n >= 10)
    assert command.result() == 0
    assert info.type() == "Neural" and info.channel_count() == 96
    assert info.nominal_srate() == pytest.approx(80.0)  # 50 ms bins at 4x
    assert data.shape[0] >= 10 and data.shape[1] == 96
    # the stream is the simulated session, from its first bin on, one sample per 50 ms
    expected = simulate_session(SyntheticConfig(duration_s=30.0, seed=4))
    k0 = locate(expected.neural, data)
    np.testing.assert_array_equal(data, expected.neural[k0 : k0 + data.shape[0]])
    np.testing.assert_allclose(np.diff(stamps), 0.0125, atol=1e-6)
    out = capsys.readouterr().out
    assert f"{name}, {name}-kinematics, {name}-targets" in out
    assert "samples pushed" in out


def test_simulate_streaming_flags_conflict_with_out(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "x.npz"
    assert main(["simulate", "--out", str(out), "--seconds", "3"]) == 2
    assert "--seconds only apply when streaming" in capsys.readouterr().err
    assert not out.exists()
    with pytest.raises(SystemExit) as info:  # argparse: a usage error
        main(["simulate", "--seconds", "0"])
    assert info.value.code == 2
    assert "argument --seconds: must be a finite number > 0, got '0'" in capsys.readouterr().err


# --- record ------------------------------------------------------------------------------


def test_record_the_simulated_streams(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    name = unique_name("cli-rec")
    config = ["--minutes", "0.2", "--bin-ms", "10", "--channels", "8", "--seed", "2"]
    simulate = InThread(["simulate", "--seconds", "10", "--name", name, *config])
    path = tmp_path / "rec.xdf"
    argv = ["record", "--out", str(path), "--stream", name, "--stream", f"{name}-kinematics"]
    assert main([*argv, "--seconds", "2", "--resolve-timeout", str(TIMEOUT)]) == 0
    assert simulate.result() == 0
    out = capsys.readouterr().out
    assert f"wrote {path}" in out

    streams, _ = pyxdf.load_xdf(str(path), synchronize_clocks=False)
    streams = {s["info"]["name"][0]: s for s in streams}
    assert set(streams) == {name, f"{name}-kinematics"}
    neural, kinematics = streams[name], streams[f"{name}-kinematics"]
    n = len(neural["time_stamps"])
    assert n >= 100  # about 2 s at 100 Hz; the exact count depends on start-up timing
    assert neural["time_series"].shape == (n, 8)
    record_out = out[out.index("wrote") :]
    record_out = record_out[: record_out.find("pushed for")]  # the simulate summary follows
    rows = {r["stream"]: r for r in parse_table(record_out)}
    assert int(rows[name]["samples"]) == n
    # the recording is a contiguous stretch of the simulated session (it loops every 12 s)
    expected = simulate_session(SyntheticConfig(n_channels=8, bin_s=0.01, duration_s=12.0, seed=2))
    k0 = locate(expected.neural, neural["time_series"])
    index = (k0 + np.arange(n)) % expected.n_bins
    np.testing.assert_array_equal(neural["time_series"], expected.neural[index])
    m = len(kinematics["time_stamps"])
    # the two inlets open a few bins apart: 11 (110 ms) in one loaded clean-clone run
    assert abs(m - n) <= 25
    assert np.all(np.diff(neural["time_stamps"]) > 0)


def test_record_missing_stream_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "x.xdf"
    argv = ["record", "--out", str(path), "--stream", unique_name("absent")]
    assert main([*argv, "--resolve-timeout", "0.3", "--seconds", "1"]) == 1  # the work failed
    err = capsys.readouterr().err
    assert err.startswith("bci record: error: no LSL stream with name=absent-")
    assert list(tmp_path.iterdir()) == []


# --- replay --play -----------------------------------------------------------------------


def _counter_session(n_bins: int, bin_s: float) -> Session:
    neural = np.zeros((n_bins, 4), dtype=np.float32)
    neural[:, 0] = np.arange(n_bins)
    neural[:, 1:] = np.random.default_rng(0).poisson(2.0, size=(n_bins, 3))
    kinematics = np.random.default_rng(1).normal(size=(n_bins, 2)).astype(np.float32)
    return Session(
        neural=neural,
        timestamps=(np.arange(n_bins) + 1.0) * bin_s,
        bin_s=bin_s,
        kinematics=kinematics,
        kinematics_labels=("vx", "vy"),
    )


@pytest.mark.parametrize("suffix", [".npz", ".xdf"])
def test_replay_play_streams_every_bin(
    suffix: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    session = _counter_session(n_bins=200, bin_s=0.01)
    path = tmp_path / f"s{suffix}"
    if suffix == ".npz":
        save_session(path, session)
    else:
        write_session_xdf(path, session, name_prefix="rec")
    name = unique_name("cli-play")
    command = InThread(["replay", str(path), "--play", "--speed", "0.5", "--name", name])
    inlet = open_inlet(name)
    # At half speed the 2 s session lasts 4 s; the inlet connects well before the end.
    chunks = []
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline and not (chunks and chunks[-1][-1, 0] == 199):
        chunk, _ = inlet.pull_chunk(timeout=0.0, max_samples=1024, as_numpy=True)
        if len(chunk):
            chunks.append(chunk)
        else:
            time.sleep(0.005)
    assert command.result() == 0
    assert chunks, "no sample arrived"
    data = np.concatenate(chunks)
    counter = data[:, 0]
    # every bin after the connection arrived once and in order, through the last one
    np.testing.assert_array_equal(counter, np.arange(counter[0], 200))
    np.testing.assert_array_equal(data, session.neural[int(counter[0]) :])
    assert "samples pushed" in capsys.readouterr().out


@pytest.mark.parametrize("command", ["replay", "record"])
def test_new_subcommand_help_has_example(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main([command, "--help"])
    assert info.value.code == 0
    text = capsys.readouterr().out
    assert f"example: bci {command}" in text
    assert "%%" not in text


def test_simulate_help_describes_both_modes(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["simulate", "--help"])
    text = capsys.readouterr().out
    assert "example: bci simulate --out" in text
    assert "example: bci simulate --name" in text
    assert "NAME-kinematics" in text


# --- simulate --input ----------------------------------------------------------------------


def test_simulate_streams_spike_events_with_the_input_kind_in_desc() -> None:
    name = unique_name("sim-events")
    argv = ["--name", name, "--input", "events", "--seconds", "1.5", "--minutes", "0.1"]
    run = InThread(["simulate", *argv])
    inlet = open_inlet(name)
    info = inlet.info(timeout=TIMEOUT)
    assert info.nominal_srate() == 0 and info.channel_format() == pylsl.cf_int32
    assert info.desc().child_value("input_kind") == "events"
    assert info.desc().child_value("neural_channels") == "96"
    data, _ = pull_until(inlet, lambda n: n >= 200)
    assert data.shape[1] == 1 and 0 <= data.min() and data.max() < 96
    assert run.result() == 0


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--input", "events", "--input-rate-hz", "1000"], "--input-rate-hz does not apply"),
        (["--input", "counts", "--input-rate-hz", "1234", "--bin-ms", "50"], "--bin-ms 50"),
        (["--out", "x.npz", "--input", "broadband"], "--input only apply when streaming"),
    ],
)
def test_simulate_input_flags_refuse_bad_combinations(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["simulate", "--seconds", "1", *argv]) == 2
    assert message in capsys.readouterr().err
