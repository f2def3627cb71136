"""Tests for service.targets: learning targets from an LSL stream, matched by timestamp."""

from __future__ import annotations

import uuid

import numpy as np
import pylsl
import pytest
from serving import wait_for

from service.targets import TargetFeed


def _outlet(name: str, n_channels: int) -> pylsl.StreamOutlet:
    info = pylsl.StreamInfo(name, "Kinematics", n_channels, 20.0, pylsl.cf_float32, name)
    return pylsl.StreamOutlet(info)


@pytest.mark.timeout(60)
def test_targets_match_within_half_a_bin_and_late_ones_are_counted() -> None:
    name = f"bci-test-targets-{uuid.uuid4().hex[:8]}"
    outlet = _outlet(name, 2)
    feed = TargetFeed(name, n_out=2, bin_s=0.05).start()
    try:
        assert feed.inlet.wait_connected(10.0), feed.inlet.state_message
        assert wait_for(lambda: feed.inlet.clock_offset is not None)
        offset = feed.inlet.clock_offset
        t0 = 1000.0
        for k in range(5):  # targets at t0, t0 + 50 ms, ..., then one at t0 + 400 ms
            outlet.push_sample([k, -k], t0 + 0.05 * k)
        outlet.push_sample([5, -5], t0 + 0.4)
        assert wait_for(lambda: feed.inlet.counters().samples_received == 6)
        local = t0 + offset
        np.testing.assert_array_equal(feed.match(local + 0.01), [0.0, 0.0])  # 10 ms off
        np.testing.assert_array_equal(feed.match(local + 0.074), [1.0, -1.0])  # 24 ms off
        np.testing.assert_array_equal(feed.match(local + 0.2), [4.0, -4.0])  # skips ahead
        assert feed.match(local + 0.3) is None  # 100 ms from both neighbours
        assert feed.settled(local + 0.3)  # a later target has arrived: none will come
        assert feed.match(local + 0.1) is None  # behind the last match: already dropped
        assert feed.match(local + 0.5) is None  # not arrived (yet)
        assert not feed.settled(local + 0.5)  # it may still come
        for matched in (True, True, False):
            feed.record(matched)
        status = feed.status()
        assert status["bins_matched"] == 2 and status["bins_without_target"] == 1
        assert status["counters"]["samples_received"] == 6
    finally:
        feed.stop()
        del outlet


@pytest.mark.timeout(60)
def test_target_stream_with_wrong_channel_count_gives_no_targets_and_says_why() -> None:
    name = f"bci-test-targets-{uuid.uuid4().hex[:8]}"
    outlet = _outlet(name, 3)
    feed = TargetFeed(name, n_out=2, bin_s=0.05).start()
    try:
        assert feed.inlet.wait_connected(10.0), feed.inlet.state_message
        outlet.push_sample([1.0, 2.0, 3.0], pylsl.local_clock())
        assert wait_for(lambda: feed.inlet.counters().samples_received == 1)
        assert feed.match(pylsl.local_clock()) is None
        message = feed.status()["message"]
        assert "3 channels" in message and "outputs 2" in message
    finally:
        feed.stop()
        del outlet


def test_bad_bin_width_is_refused() -> None:
    with pytest.raises(ValueError, match="bin_s must be positive"):
        TargetFeed("x", n_out=2, bin_s=0.0)
