"""Tests for streams.discovery: the visible LSL streams, listed by ``bci streams`` and by every
"stream not found" message (real outlets over loopback)."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pylsl
import pytest
from outlet_process import unique_ids

from streams.discovery import StreamListing, visible_streams, visible_summary
from streams.lsl_inlet import LslInlet

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def outlets() -> Iterator[list[pylsl.StreamInfo]]:
    infos = []
    for kind, channels, rate in (("Neural", 96, 20.0), ("Markers", 1, pylsl.IRREGULAR_RATE)):
        # "0..." sorts before every other test's stream, so however many streams concurrent
        # tests have open, these two are among the first that a summary names
        name, source_id = unique_ids(f"0disc-{kind.lower()}")
        infos.append(pylsl.StreamInfo(name, kind, channels, rate, pylsl.cf_float32, source_id))
    streams = [pylsl.StreamOutlet(info) for info in infos]
    yield infos
    del streams


def test_visible_streams_lists_each_outlet_once(outlets: list[pylsl.StreamInfo]) -> None:
    listed = visible_streams(1.0)
    for info in outlets:
        mine = [s for s in listed if s.source_id == info.source_id()]
        assert mine == [
            StreamListing(
                name=info.name(),
                type=info.type(),
                channels=info.channel_count(),
                rate_hz=info.nominal_srate(),
                source_id=info.source_id(),
                host=socket.gethostname(),
            )
        ]
    assert listed == sorted(listed, key=lambda s: (s.name, s.type, s.source_id, s.host))


def test_summary_is_one_line_naming_the_streams(outlets: list[pylsl.StreamInfo]) -> None:
    summary = visible_summary()
    assert "\n" not in summary and summary.startswith("visible LSL streams: ")
    neural, markers = outlets
    assert f"{neural.name()!r} (Neural, 96 ch, 20 Hz, source_id {neural.source_id()!r}" in summary
    assert f"{markers.name()!r} (Markers, 1 ch, 0 Hz" in summary


def test_inlet_that_finds_nothing_names_the_visible_streams(
    outlets: list[pylsl.StreamInfo],
) -> None:
    name, _ = unique_ids("disc-absent")
    with LslInlet(name=name, resolve_timeout_s=0.5) as inlet:
        assert inlet.wait_for_state("lost", 10.0)
        message = inlet.state_message
    assert f"name='{name}'" in message and "visible LSL streams: " in message
    assert all(info.source_id() in message for info in outlets)
