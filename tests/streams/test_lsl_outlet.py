"""Tests for streams.lsl_outlet: meta-data readable by a real inlet over loopback."""

from __future__ import annotations

import threading
import time
import uuid

import numpy as np
import pylsl
import pytest

from streams.lsl_outlet import (
    KINEMATICS_TYPE,
    NEURAL_TYPE,
    KinematicsOutlet,
    open_outlet,
    software_version,
    stream_info,
    wait_for_consumers,
)

TIMEOUT = 20.0


def _unique(prefix: str) -> tuple[str, str]:
    tag = uuid.uuid4().hex[:12]
    return f"{prefix}-{tag}", f"{prefix}-src-{tag}"


def _inlet(name: str) -> pylsl.StreamInlet:
    found = pylsl.resolve_byprop("name", name, minimum=1, timeout=TIMEOUT)
    assert found, f"stream {name} not found"
    return pylsl.StreamInlet(found[0])


def test_desc_labels_units_and_acquisition_reach_an_inlet() -> None:
    name, source_id = _unique("outlet-desc")
    labels = [f"ch{c}" for c in range(4)]
    outlet = open_outlet(
        name,
        NEURAL_TYPE,
        labels,
        ["counts", "counts", "Hz", "counts"],
        1000.0,
        source_id=source_id,
        component="test",
        extra={"replay_speed": "2"},
    )
    info = _inlet(name).info(timeout=TIMEOUT)
    assert info.type() == NEURAL_TYPE
    assert info.source_id() == source_id
    assert info.channel_count() == 4
    assert info.nominal_srate() == 1000.0
    assert info.channel_format() == pylsl.cf_float32
    assert info.get_channel_labels() == labels
    assert info.get_channel_units() == ["counts", "counts", "Hz", "counts"]
    assert info.get_channel_types() == [NEURAL_TYPE] * 4
    channel = info.desc().child("channels").child("channel")
    assert channel.child_value("label") == "ch0"
    acquisition = info.desc().child("acquisition")
    assert acquisition.child_value("manufacturer") == "bci-decoder"
    assert acquisition.child_value("model") == "test"
    assert acquisition.child_value("software_version") == software_version()
    assert info.desc().child_value("replay_speed") == "2"
    del outlet


def test_kinematics_outlet_pushes_stamped_samples() -> None:
    name, source_id = _unique("outlet-kin")
    with KinematicsOutlet(name, nominal_srate=20.0, source_id=source_id) as outlet:
        assert outlet.name == f"{name}-kinematics"
        inlet = _inlet(outlet.name)
        info = inlet.info(timeout=TIMEOUT)
        assert info.type() == KINEMATICS_TYPE
        assert info.get_channel_labels() == ["vx", "vy"]
        assert info.get_channel_units() == ["cm/s", "cm/s"]
        inlet.open_stream(timeout=TIMEOUT)
        deadline = time.monotonic() + TIMEOUT
        while not outlet.have_consumers:
            assert time.monotonic() < deadline, "the inlet never connected"
            time.sleep(0.01)
        t0 = pylsl.local_clock()
        for k in range(5):
            outlet.push([float(k), -float(k)], timestamp=t0 + 0.05 * k)
        samples, stamps = [], []
        while len(samples) < 5 and time.monotonic() < deadline:
            data, ts = inlet.pull_chunk(timeout=0.1, as_numpy=True)
            samples.extend(data.tolist())
            stamps.extend(ts.tolist())
        assert samples == [[float(k), -float(k)] for k in range(5)]
        np.testing.assert_allclose(stamps, t0 + 0.05 * np.arange(5), atol=1e-9)
        assert outlet.pushed == 5
        with pytest.raises(ValueError, match="2 channels"):
            outlet.push([1.0, 2.0, 3.0])
        with pytest.raises(ValueError, match="non-finite"):
            outlet.push([np.nan, 0.0])
    assert not outlet.running
    with pytest.raises(RuntimeError, match="closed"):
        outlet.push([0.0, 0.0])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": ""}, "must not be empty"),
        ({"channel_labels": []}, "at least one channel"),
        ({"units": ["a"]}, "1 units for 2"),
        ({"nominal_srate": -1.0}, "nominal_srate"),
        ({"channel_format": "float16"}, "channel_format"),
        ({"channel_types": ["a", "b", "c"]}, "3 channel types"),
    ],
)
def test_stream_info_refuses_bad_arguments(kwargs: dict, message: str) -> None:
    args = {
        "name": "x",
        "type": "Neural",
        "channel_labels": ["a", "b"],
        "units": "counts",
        "nominal_srate": 10.0,
    }
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        stream_info(**args)


def test_default_source_id_is_stable() -> None:
    info = stream_info("bci-sim", "Neural", ["a"], "counts", 20.0)
    assert info.source_id() == "bci-sim@Neural"


def test_units_reach_an_inlet_and_unknown_units_are_left_out() -> None:
    name, source_id = _unique("outlet-units")
    with (
        KinematicsOutlet(name, units=("mm/s", "deg/s"), source_id=source_id) as known,
        KinematicsOutlet(f"{name}-x", units=None, source_id=f"{source_id}-x") as unknown,
    ):
        info = _inlet(known.name).info(timeout=TIMEOUT)
        channel = info.desc().child("channels").child("channel")
        assert channel.child_value("label") == "vx" and channel.child_value("unit") == "mm/s"
        assert channel.child_value("type") == KINEMATICS_TYPE
        assert channel.next_sibling().child_value("unit") == "deg/s"
        # the header a recorder keeps: the desc with the units, and the outlet's creation time
        header = known.header_xml()
        assert header is not None and "<unit>deg/s</unit>" in header
        assert abs(float(header.split("<created_at>")[1].split("<")[0]) - info.created_at()) < 1e-6
        bare = _inlet(unknown.name).info(timeout=TIMEOUT)
        assert bare.get_channel_labels() == ["vx", "vy"]
        first = bare.desc().child("channels").child("channel")
        assert first.child("unit").empty()  # no invented unit
    assert known.header_xml() is None  # closed


class _Outlet:
    """Stands in for an outlet: gains a consumer after ``after`` polls (never if None)."""

    def __init__(self, after: int | None) -> None:
        self.after, self.polls = after, 0

    def have_consumers(self) -> bool:
        self.polls += 1
        return self.after is not None and self.polls > self.after


def test_wait_for_consumers_until_all_connected_timeout_or_stop() -> None:
    assert wait_for_consumers([_Outlet(0), _Outlet(3)], 30.0, poll_s=0.0)
    assert wait_for_consumers([], 0.0)
    start = time.monotonic()
    assert not wait_for_consumers([_Outlet(0), _Outlet(None)], 0.05, poll_s=0.001)
    assert time.monotonic() - start >= 0.05
    stop = threading.Event()
    stop.set()
    never = _Outlet(None)
    assert not wait_for_consumers([never], 30.0, stop)  # at once, not after 30 s
    assert never.polls == 1
