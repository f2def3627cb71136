"""Tests for the session record and its NPZ file format."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from streams.session import (
    ALLOWED_KEYS,
    Session,
    SessionError,
    chronological_split,
    load_session,
    save_session,
)

T, C = 40, 5


def _fields(**overrides: Any) -> dict[str, Any]:
    rng = np.random.default_rng(1)
    fields: dict[str, Any] = {
        "neural": rng.poisson(2.0, size=(T, C)).astype(np.float32),
        "timestamps": (np.arange(T) + 1) * 0.05,
        "bin_s": 0.05,
        "kinematics": rng.normal(size=(T, 2)).astype(np.float32),
        "kinematics_labels": ("vx", "vy"),
        "kinematics_units": ("cm/s", "cm/s"),
        "targets": rng.normal(size=(T, 2)).astype(np.float32),
        "channel_labels": tuple(f"ch{c:03d}" for c in range(C)),
    }
    fields.update(overrides)
    return fields


def _raw_npz(path: Path, **arrays: Any) -> Path:
    np.savez(path, **arrays)
    return path


def _assert_same(a: Session, b: Session) -> None:
    for name in ("neural", "timestamps", "kinematics", "targets"):
        x, y = getattr(a, name), getattr(b, name)
        if x is None:
            assert y is None, name
        else:
            assert x.dtype == y.dtype, name
            np.testing.assert_array_equal(x, y, err_msg=name)
    assert a.bin_s == b.bin_s
    assert a.kinematics_labels == b.kinematics_labels
    assert a.kinematics_units == b.kinematics_units
    assert a.channel_labels == b.channel_labels


# --- record -------------------------------------------------------------------------------


def test_properties_and_dtypes() -> None:
    s = Session(**_fields())
    assert (s.n_bins, s.n_channels) == (T, C)
    assert s.duration_s == pytest.approx(T * 0.05)
    assert s.neural.dtype == np.float32
    assert s.timestamps.dtype == np.float64
    assert s.kinematics is not None and s.kinematics.dtype == np.float32
    assert s.targets is not None and s.targets.dtype == np.float32
    assert isinstance(s.channel_labels, tuple) and s.channel_labels[0] == "ch000"
    assert "n_bins=40" in repr(s)


def test_integer_counts_are_converted_exactly() -> None:
    counts = np.arange(T * C, dtype=np.uint16).reshape(T, C)
    s = Session(neural=counts, timestamps=np.arange(T) + 1.0, bin_s=1)
    assert s.neural.dtype == np.float32
    np.testing.assert_array_equal(s.neural, counts)
    assert s.bin_s == 1.0 and isinstance(s.bin_s, float)


def test_input_arrays_are_copied() -> None:
    fields = _fields()
    s = Session(**fields)
    fields["neural"][0, 0] = np.nan
    assert np.isfinite(s.neural[0, 0])


def test_string_neural_refused() -> None:
    with pytest.raises(SessionError, match="'neural' has non-numeric dtype"):
        Session(**_fields(neural=np.full((T, C), "1")))


def test_object_kinematics_refused() -> None:
    with pytest.raises(SessionError, match="'kinematics' has non-numeric dtype object"):
        Session(**_fields(kinematics=np.empty((T, 2), dtype=object)))


def test_integers_not_exact_in_float32_refused() -> None:
    neural = np.full((T, C), 2**24 + 1, dtype=np.int64)
    with pytest.raises(SessionError, match="too large for float32"):
        Session(**_fields(neural=neural))


def test_float32_overflow_refused_with_location() -> None:
    neural = np.ones((T, C))
    neural[5, 2] = 1e300
    with pytest.raises(SessionError, match=r"bin 5, column 2 beyond the float32 range"):
        Session(**_fields(neural=neural))


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("neural", np.zeros(T), r"'neural' has shape \(40,\) \(1-D\); it must be 2-D"),
        ("timestamps", np.zeros((T, 1)), r"'timestamps' has shape \(40, 1\) \(2-D\)"),
        ("kinematics", np.zeros(T), r"'kinematics' has shape \(40,\) \(1-D\)"),
        ("targets", np.zeros((T, 3)), r"'targets' has shape \(40, 3\); it must be \(T, 2\)"),
    ],
)
def test_wrong_shape(key: str, value: np.ndarray, message: str) -> None:
    with pytest.raises(SessionError, match=message):
        Session(**_fields(**{key: value}))


@pytest.mark.parametrize("key", ["timestamps", "kinematics", "targets"])
def test_mismatched_length(key: str) -> None:
    value = _fields()[key][:-1]
    with pytest.raises(SessionError, match=rf"'{key}' has 39 rows but 'neural' has 40 bins"):
        Session(**_fields(**{key: value}))


def test_empty_neural_refused() -> None:
    with pytest.raises(SessionError, match="at least one bin and one channel"):
        Session(neural=np.zeros((0, 3)), timestamps=np.zeros(0), bin_s=0.05)


def test_nan_names_bin_and_channel() -> None:
    neural = _fields()["neural"].copy()
    neural[17, 3] = np.nan
    neural[20, 0] = np.inf
    with pytest.raises(SessionError) as info:
        Session(**_fields(neural=neural))
    message = str(info.value)
    assert "'neural'" in message
    assert "bin 17, channel 3" in message
    assert "2 non-finite" in message
    assert "clean or drop that bin" in message


def test_nan_in_kinematics_names_label() -> None:
    kin = _fields()["kinematics"].copy()
    kin[4, 1] = np.nan
    with pytest.raises(SessionError, match=r"'kinematics' .* bin 4, column 1 \('vy'\)"):
        Session(**_fields(kinematics=kin))


def test_nan_timestamp() -> None:
    ts = _fields()["timestamps"].copy()
    ts[9] = np.nan
    with pytest.raises(SessionError, match="'timestamps' has a non-finite value at bin 9"):
        Session(**_fields(timestamps=ts))


@pytest.mark.parametrize("bad", ["repeat", "decrease"])
def test_non_increasing_timestamps(bad: str) -> None:
    ts = _fields()["timestamps"].copy()
    ts[12] = ts[11] if bad == "repeat" else ts[11] - 0.01
    with pytest.raises(SessionError, match=r"not strictly increasing: timestamps\[12\]"):
        Session(**_fields(timestamps=ts))


@pytest.mark.parametrize("bin_s", [0.0, -0.05, float("nan"), float("inf")])
def test_bad_bin_s_value(bin_s: float) -> None:
    with pytest.raises(SessionError, match=r"'bin_s' is .*finite number of seconds > 0"):
        Session(**_fields(bin_s=bin_s))


@pytest.mark.parametrize("bin_s", ["0.05", True, None, np.array([0.05, 0.05])])
def test_bad_bin_s_type(bin_s: Any) -> None:
    with pytest.raises(SessionError, match="'bin_s'"):
        Session(**_fields(bin_s=bin_s))


def test_channel_label_count_mismatch() -> None:
    with pytest.raises(SessionError, match="'channel_labels' has 4 labels for 5 channels"):
        Session(**_fields(channel_labels=("a", "b", "c", "d")))


def test_kinematics_label_count_mismatch() -> None:
    with pytest.raises(SessionError, match="'kinematics_labels' has 3 labels for 2"):
        Session(**_fields(kinematics_labels=("vx", "vy", "speed")))


def test_labels_must_be_unique_strings() -> None:
    with pytest.raises(SessionError, match="repeats"):
        Session(**_fields(kinematics_labels=("v", "v")))
    with pytest.raises(SessionError, match="non-string entries"):
        Session(**_fields(kinematics_labels=(1, 2)))
    with pytest.raises(SessionError, match="single string"):
        Session(**_fields(kinematics_labels="vx"))


def test_kinematics_and_labels_come_together() -> None:
    with pytest.raises(SessionError, match="needs 'kinematics_labels'"):
        Session(**_fields(kinematics_labels=None))
    with pytest.raises(SessionError, match="'kinematics_labels' is given without"):
        Session(**_fields(kinematics=None))


# --- slicing and splitting ----------------------------------------------------------------


def test_slice() -> None:
    s = Session(**_fields())
    part = s.slice(10, 25)
    assert part.n_bins == 15
    np.testing.assert_array_equal(part.neural, s.neural[10:25])
    np.testing.assert_array_equal(part.timestamps, s.timestamps[10:25])
    assert part.kinematics is not None and s.kinematics is not None
    np.testing.assert_array_equal(part.kinematics, s.kinematics[10:25])
    assert part.targets is not None and s.targets is not None
    np.testing.assert_array_equal(part.targets, s.targets[10:25])
    assert part.channel_labels == s.channel_labels


@pytest.mark.parametrize(("start", "stop"), [(5, 5), (-1, 4), (0, T + 1), (10, 3)])
def test_slice_out_of_range(start: int, stop: int) -> None:
    with pytest.raises(SessionError, match="cannot slice"):
        Session(**_fields()).slice(start, stop)


def test_chronological_split_is_contiguous_and_ordered() -> None:
    s = Session(**_fields(neural=np.arange(T * C).reshape(T, C)))
    parts = chronological_split(s, (0.5, 0.25, 0.25))
    assert [p.n_bins for p in parts] == [20, 10, 10]
    np.testing.assert_array_equal(np.concatenate([p.neural for p in parts]), s.neural)
    np.testing.assert_array_equal(np.concatenate([p.timestamps for p in parts]), s.timestamps)
    assert parts[0].timestamps[-1] < parts[1].timestamps[0] < parts[2].timestamps[0]


def test_chronological_split_default_fractions() -> None:
    n = 1000
    s = Session(neural=np.zeros((n, 2)), timestamps=np.arange(n) + 1.0, bin_s=1.0)
    assert [p.n_bins for p in chronological_split(s)] == [700, 100, 200]


def test_chronological_split_too_small() -> None:
    s = Session(**_fields())
    with pytest.raises(SessionError, match=r"parts of \[28, 4, 8\] bins.*at least 10 bins"):
        chronological_split(s)


def test_chronological_split_bad_fractions() -> None:
    s = Session(**_fields())
    with pytest.raises(SessionError, match=r"sum to 0\.9"):
        chronological_split(s, (0.5, 0.4))
    with pytest.raises(SessionError, match="positive"):
        chronological_split(s, (1.2, -0.2))


# --- files --------------------------------------------------------------------------------


def test_round_trip_all_keys(tmp_path: Path) -> None:
    s = Session(**_fields())
    path = save_session(tmp_path / "s.npz", s)
    assert path == tmp_path / "s.npz"
    with np.load(path, allow_pickle=False) as npz:
        assert sorted(npz.files) == sorted(ALLOWED_KEYS)
        assert npz["kinematics_labels"].dtype.kind == "U"
        assert npz["bin_s"].shape == ()
    _assert_same(load_session(path), s)


def test_units_are_optional_kept_by_slices_and_files(tmp_path: Path) -> None:
    s = Session(**_fields())
    assert s.kinematics_units == ("cm/s", "cm/s") and "units=('cm/s', 'cm/s')" in repr(s)
    assert s.slice(2, 9).kinematics_units == ("cm/s", "cm/s")
    unknown = Session(**_fields(kinematics_units=None))
    path = save_session(tmp_path / "no-units.npz", unknown)
    with np.load(path, allow_pickle=False) as npz:
        assert "kinematics_units" not in npz.files  # unknown units are never invented
    assert load_session(path).kinematics_units is None


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"kinematics_units": ("cm/s",)}, r"one non-empty unit string per kinematics column \(2\)"),
        ({"kinematics_units": ("cm/s", "")}, "one non-empty unit string"),
        ({"kinematics_units": "cm/s"}, "one unit per kinematics column"),
        (
            {"kinematics": None, "kinematics_labels": None},
            "'kinematics_units' is given without 'kinematics'",
        ),
    ],
)
def test_bad_units_are_refused(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(SessionError, match=message):
        Session(**_fields(**overrides))


def test_round_trip_required_only(tmp_path: Path) -> None:
    s = Session(neural=np.ones((T, C)), timestamps=np.arange(T) * 0.1 + 3.0, bin_s=0.1)
    path = save_session(tmp_path / "min.npz", s)
    with np.load(path, allow_pickle=False) as npz:
        assert sorted(npz.files) == ["bin_s", "neural", "timestamps"]
    loaded = load_session(path)
    _assert_same(loaded, s)
    assert loaded.kinematics is None and loaded.targets is None and loaded.channel_labels is None


def test_save_overwrites_atomically_and_leaves_no_temp_files(tmp_path: Path) -> None:
    path = tmp_path / "s.npz"
    save_session(path, Session(**_fields()))
    second = Session(**_fields(neural=np.zeros((T, C))))
    save_session(path, second)
    assert [p.name for p in tmp_path.iterdir()] == ["s.npz"]
    np.testing.assert_array_equal(load_session(path).neural, 0.0)


def test_failed_save_leaves_no_temp_file(tmp_path: Path) -> None:
    target = tmp_path / "is_a_dir.npz"
    target.mkdir()
    with pytest.raises(OSError):
        save_session(target, Session(**_fields()))
    assert [p.name for p in tmp_path.iterdir()] == ["is_a_dir.npz"]


def test_save_into_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist; create it first"):
        save_session(tmp_path / "nope" / "s.npz", Session(**_fields()))


def test_save_revalidates_edited_arrays(tmp_path: Path) -> None:
    s = Session(**_fields())
    s.neural[17, 3] = np.nan
    with pytest.raises(SessionError, match="bin 17, channel 3"):
        save_session(tmp_path / "s.npz", s)
    assert list(tmp_path.iterdir()) == []


def test_load_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"absent\.npz does not exist"):
        load_session(tmp_path / "absent.npz")


def test_load_missing_required_key(tmp_path: Path) -> None:
    path = _raw_npz(tmp_path / "s.npz", neural=np.ones((T, C)), bin_s=0.05)
    with pytest.raises(SessionError) as info:
        load_session(path)
    message = str(info.value)
    assert "lacks required key 'timestamps'" in message
    assert "['bin_s', 'neural']" in message


def test_load_unknown_key_suggests_fix(tmp_path: Path) -> None:
    f = _fields()
    path = _raw_npz(
        tmp_path / "s.npz",
        neural=f["neural"],
        timestamps=f["timestamps"],
        bin_s=0.05,
        kinematic=f["kinematics"],
    )
    with pytest.raises(SessionError) as info:
        load_session(path)
    message = str(info.value)
    assert "unknown key(s) 'kinematic' (did you mean 'kinematics'?)" in message
    assert "allowed keys are" in message and "'channel_labels'" in message


def test_load_integer_counts(tmp_path: Path) -> None:
    counts = np.arange(T * C, dtype=np.int32).reshape(T, C)
    path = _raw_npz(tmp_path / "s.npz", neural=counts, timestamps=np.arange(T) + 1.0, bin_s=1.0)
    s = load_session(path)
    assert s.neural.dtype == np.float32
    np.testing.assert_array_equal(s.neural, counts)


def test_load_string_neural_refused(tmp_path: Path) -> None:
    path = _raw_npz(
        tmp_path / "s.npz", neural=np.full((T, C), "x"), timestamps=np.arange(T) + 1.0, bin_s=1.0
    )
    with pytest.raises(SessionError, match=r"s\.npz: session key 'neural' has non-numeric"):
        load_session(path)


def test_load_validates_contents(tmp_path: Path) -> None:
    neural = np.ones((T, C), dtype=np.float32)
    neural[17, 3] = np.nan
    path = _raw_npz(tmp_path / "s.npz", neural=neural, timestamps=np.arange(T) + 1.0, bin_s=1.0)
    with pytest.raises(SessionError, match="bin 17, channel 3"):
        load_session(path)


def test_load_bad_labels_dtype(tmp_path: Path) -> None:
    path = _raw_npz(
        tmp_path / "s.npz",
        neural=np.ones((T, C)),
        timestamps=np.arange(T) + 1.0,
        bin_s=1.0,
        channel_labels=np.arange(C),
    )
    with pytest.raises(SessionError, match="'channel_labels' has dtype int64"):
        load_session(path)


def test_load_bad_bin_s_shape(tmp_path: Path) -> None:
    path = _raw_npz(
        tmp_path / "s.npz", neural=np.ones((T, C)), timestamps=np.arange(T) + 1.0, bin_s=[1, 2]
    )
    with pytest.raises(SessionError, match=r"'bin_s' has shape \(2,\)"):
        load_session(path)


def test_load_pickled_labels_refused(tmp_path: Path) -> None:
    labels = np.array(["a", "b", "c", "d", "e"], dtype=object)
    path = _raw_npz(
        tmp_path / "s.npz",
        neural=np.ones((T, C)),
        timestamps=np.arange(T) + 1.0,
        bin_s=1.0,
        channel_labels=labels,
    )
    with pytest.raises(SessionError, match="pickled objects"):
        load_session(path)


@pytest.mark.parametrize("keep", [0.5, 0.9])
def test_load_truncated_file(tmp_path: Path, keep: float) -> None:
    path = save_session(tmp_path / "s.npz", Session(**_fields()))
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(SessionError, match=r"cannot read session file .*s\.npz.*truncated"):
        load_session(path)


def test_load_corrupt_payload(tmp_path: Path) -> None:
    path = save_session(tmp_path / "s.npz", Session(**_fields()))
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 64] = bytes(64)  # zero out part of the compressed stream
    path.write_bytes(bytes(data))
    with pytest.raises(SessionError, match=r"s\.npz"):
        load_session(path)


def test_load_not_an_npz(tmp_path: Path) -> None:
    text = tmp_path / "notes.npz"
    text.write_text("not a session")
    with pytest.raises(SessionError, match=r"notes\.npz"):
        load_session(text)
    npy = tmp_path / "array.npz"
    with npy.open("wb") as fh:
        np.save(fh, np.ones(3))
    with pytest.raises(SessionError, match=r"single \.npy array"):
        load_session(npy)


def test_saved_file_has_ordinary_permissions(tmp_path: Path) -> None:
    """The temporary file's owner-only mode must not survive the rename."""
    session = Session(
        neural=np.zeros((3, 2), dtype=np.float32),
        timestamps=np.array([0.05, 0.1, 0.15]),
        bin_s=0.05,
    )
    old = os.umask(0o022)
    try:
        path = save_session(tmp_path / "s.npz", session)
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o644
