"""Tests for the limblab binned-data loader (real file where present, synthetic .mat files)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import scipy.io

from streams.limblab import load_limblab_session
from streams.session import SessionError, load_session, save_session

DATA_DIR = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"
JANGO = DATA_DIR / "neural" / "Jango_20141203_default_offline_data.mat"


@pytest.fixture(scope="module")
def jango_path() -> Path:
    if not JANGO.is_file():
        pytest.skip(f"recorded data file {JANGO.resolve()} is absent")
    return JANGO


def _write_mat(path: Path, struct_name: str = "train_data", **fields: Any) -> Path:
    n = 50
    defaults: dict[str, Any] = {
        "timeframe": np.arange(n) * 0.05,
        "spikeratedata": np.full((n, 4), 20, dtype=np.uint16),
        "velocbin": np.column_stack([np.ones(n), -np.ones(n), np.full(n, np.sqrt(2))]),
        "veloclabels": np.array(["x_vel", "y_vel", "vel_magn"], dtype=object),
    }
    defaults.update(fields)
    struct = {k: v for k, v in defaults.items() if v is not None}
    scipy.io.savemat(path, {struct_name: struct})
    return path


# --- real recording -----------------------------------------------------------------------


def test_jango_shapes_and_units(jango_path: Path) -> None:
    session = load_limblab_session(jango_path)
    assert (session.n_bins, session.n_channels) == (24_000, 96)
    assert session.bin_s == 0.05
    assert session.timestamps[0] == pytest.approx(0.05)  # end of the bin starting at 0
    np.testing.assert_allclose(np.diff(session.timestamps), 0.05, rtol=1e-9)
    assert session.duration_s == pytest.approx(1200.0)
    assert session.kinematics_labels == ("vx", "vy")
    assert session.kinematics_units is None  # neither the file nor its README states them
    assert session.channel_labels is not None and session.channel_labels[0] == "ch000"
    assert session.kinematics is not None and np.all(np.isfinite(session.kinematics))
    assert session.targets is None


def test_jango_counts_are_rates_times_bin(jango_path: Path) -> None:
    session = load_limblab_session(jango_path)
    raw = scipy.io.loadmat(jango_path, squeeze_me=True, struct_as_record=False)["train_data"]
    np.testing.assert_allclose(session.neural, raw.spikeratedata * 0.05, rtol=1e-6)
    np.testing.assert_allclose(session.kinematics, raw.velocbin[:, :2], rtol=1e-6, atol=1e-6)
    assert np.all(session.neural >= 0)
    # Rates are whole spikes per 50 ms bin (multiples of 20 Hz): counts are integers.
    np.testing.assert_array_equal(session.neural, np.round(session.neural))
    assert session.neural.sum() > 0


def test_jango_round_trip(jango_path: Path, tmp_path: Path) -> None:
    session = load_limblab_session(jango_path)
    loaded = load_session(save_session(tmp_path / "jango.npz", session))
    np.testing.assert_array_equal(loaded.neural, session.neural)
    np.testing.assert_array_equal(loaded.timestamps, session.timestamps)
    np.testing.assert_array_equal(loaded.kinematics, session.kinematics)
    assert loaded.bin_s == session.bin_s
    assert loaded.channel_labels == session.channel_labels
    assert loaded.kinematics_labels == session.kinematics_labels


# --- file layout and errors (synthetic .mat files) ----------------------------------------


def test_synthetic_file_loads(tmp_path: Path) -> None:
    session = load_limblab_session(_write_mat(tmp_path / "ok.mat"))
    assert (session.n_bins, session.n_channels) == (50, 4)
    np.testing.assert_allclose(session.timestamps, (np.arange(50) + 1) * 0.05)
    np.testing.assert_allclose(session.neural, 1.0)  # 20 Hz * 50 ms
    assert session.kinematics is not None
    np.testing.assert_allclose(session.kinematics, [[1.0, -1.0]] * 50)


def test_struct_name_option(tmp_path: Path) -> None:
    path = _write_mat(tmp_path / "test.mat", struct_name="test_data")
    assert load_limblab_session(path, struct_name="test_data").n_bins == 50
    with pytest.raises(
        SessionError, match=r"no struct 'train_data' or 'binnedData' \(variables present: \['test"
    ):
        load_limblab_session(path)


def test_binned_data_struct_is_found(tmp_path: Path) -> None:
    path = _write_mat(tmp_path / "spike.mat", struct_name="binnedData")
    assert load_limblab_session(path).n_bins == 50


def test_float32_timeframe_is_uniform_to_its_precision(tmp_path: Path) -> None:
    n = 24000  # 20 min: float32 steps are off by up to 6e-5 s, as in the Spike files
    path = _write_mat(
        tmp_path / "f32.mat",
        timeframe=(np.arange(n) * 0.05).astype(np.float32),
        spikeratedata=np.full((n, 4), 20, dtype=np.uint16),
        velocbin=np.zeros((n, 3)),
    )
    session = load_limblab_session(path)
    assert session.bin_s == 0.05 and session.n_bins == n


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"absent\.mat does not exist"):
        load_limblab_session(tmp_path / "absent.mat")


@pytest.mark.parametrize("field", ["timeframe", "spikeratedata", "velocbin"])
def test_missing_field_named(tmp_path: Path, field: str) -> None:
    path = _write_mat(tmp_path / "f.mat", **{field: None})
    with pytest.raises(SessionError) as info:
        load_limblab_session(path)
    message = str(info.value)
    assert f"lacks field '{field}'" in message
    assert "fields present" in message and "'veloclabels'" in message


def test_not_a_struct(tmp_path: Path) -> None:
    path = tmp_path / "plain.mat"
    scipy.io.savemat(path, {"train_data": np.ones(3)})
    with pytest.raises(SessionError, match="is not a MATLAB struct"):
        load_limblab_session(path)


def test_non_uniform_timeframe(tmp_path: Path) -> None:
    timeframe = np.arange(50) * 0.05
    timeframe[30:] += 0.05  # one missing bin
    with pytest.raises(SessionError, match=r"not uniformly spaced: step 29 -> 30"):
        load_limblab_session(_write_mat(tmp_path / "gap.mat", timeframe=timeframe))


def test_row_count_mismatch(tmp_path: Path) -> None:
    velocity = np.zeros((49, 3))
    with pytest.raises(SessionError, match=r"'velocbin' .* has 49 rows but 'timeframe' has 50"):
        load_limblab_session(_write_mat(tmp_path / "rows.mat", velocbin=velocity))


def test_negative_rates_refused(tmp_path: Path) -> None:
    rates = np.full((50, 4), 20.0)
    rates[7, 2] = -20.0
    with pytest.raises(SessionError, match="negative rate at bin 7, channel 2"):
        load_limblab_session(_write_mat(tmp_path / "neg.mat", spikeratedata=rates))


def test_unexpected_velocity_labels(tmp_path: Path) -> None:
    labels = np.array(["vel_magn", "x_vel", "y_vel"], dtype=object)
    with pytest.raises(SessionError, match="expected the first two columns"):
        load_limblab_session(_write_mat(tmp_path / "lab.mat", veloclabels=labels))


def test_corrupt_file(tmp_path: Path) -> None:
    path = _write_mat(tmp_path / "cut.mat")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(SessionError, match=r"cannot read .*cut\.mat"):
        load_limblab_session(path)
    text = tmp_path / "text.mat"
    text.write_text("not a MATLAB file at all, just some text " * 4)
    with pytest.raises(SessionError, match=r"cannot read .*text\.mat"):
        load_limblab_session(text)
