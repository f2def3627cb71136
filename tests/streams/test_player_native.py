"""The player's native-rate streams over LSL, binned live by the front-end.

A player process publishes a synthetic session as 1 kHz counts, spike events or 30 kHz
broadband; a pylsl inlet here feeds what arrives to :class:`streams.frontend.FrontEnd`, with
the input kind read from the stream's metadata.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import numpy as np
import pylsl
import pytest

from streams.frontend import Bins, FrontEnd, input_kind_of
from streams.player import SessionPlayer
from streams.recorder import Recorder
from streams.session import Session
from streams.synthetic import SyntheticConfig, simulate_session
from streams.xdf import session_from_xdf

TIMEOUT = 30.0
BIN_S = 0.02


def _desc(info: pylsl.StreamInfo) -> dict[str, str]:
    out, child = {}, info.desc().first_child()
    while not child.empty():
        out[child.name()] = child.child_value()
        child = child.next_sibling()
    return out


def _play_and_bin(config: SyntheticConfig, kind: str, **front_kwargs: float) -> tuple[Bins, float]:
    """Bins the front-end made of the player's neural stream, and the end of bin 0."""
    name = f"native-{kind}-{uuid.uuid4().hex[:12]}"
    player = SessionPlayer(
        config,
        name=name,
        input_kind=kind,
        input_rate_hz=1000.0 if kind == "counts" else None,
        wait_for_consumers=TIMEOUT,
        wait_for=("neural",),
    )
    with player:
        found = pylsl.resolve_byprop("name", name, minimum=1, timeout=TIMEOUT)
        inlet = pylsl.StreamInlet(found[0], max_buflen=60)
        info = inlet.info(timeout=TIMEOUT)
        desc = _desc(info)
        assert float(desc["session_bin_s"]) == BIN_S
        rate = info.nominal_srate()
        fmt = ("undefined", "float32", "double64", "string", "int32")[info.channel_format()]
        input_kind = input_kind_of(rate, fmt, info.channel_count(), desc, BIN_S)
        assert input_kind == kind
        front = FrontEnd(input_kind, BIN_S, config.n_channels, sample_rate_hz=rate, **front_kwargs)
        parts = []
        deadline = time.monotonic() + TIMEOUT
        while not player.finished and time.monotonic() < deadline:
            data, stamps = inlet.pull_chunk(timeout=0.05, max_samples=8192, as_numpy=True)
            if len(stamps):
                parts.append(front.feed(data, stamps))
        while True:  # drain what is still in flight
            data, stamps = inlet.pull_chunk(timeout=0.2, max_samples=8192, as_numpy=True)
            if not len(stamps):
                break
            parts.append(front.feed(data, stamps))
        parts.append(front.flush(pylsl.local_clock()))
        assert player.counters()["pushed"][name] == front.counters()["samples_in"]
        assert front.counters()["late"] == 0
        start = player.start_time
    bins = Bins(*(np.concatenate([getattr(p, f) for p in parts]) for f in Bins._fields))
    return bins, start


@pytest.mark.parametrize("kind", ["counts", "events"])
def test_counts_and_events_give_the_session_bins_live(kind: str) -> None:
    config = SyntheticConfig(n_channels=32, bin_s=BIN_S, duration_s=0.6, seed=2)
    session = simulate_session(config)
    bins, start = _play_and_bin(config, kind)
    # bin 0 ends at the player's start time, a whole multiple of the bin width
    assert start / BIN_S == pytest.approx(round(start / BIN_S), abs=1e-6)
    k = np.rint((bins.end_times - start) / BIN_S).astype(int)
    assert k[0] == 0 and k[-1] >= session.n_bins - 1
    inside = k < session.n_bins
    np.testing.assert_array_equal(bins.data[inside], session.neural[k[inside]])
    assert (bins.data[~inside] == 0).all()


def test_broadband_crossings_match_the_session_counts_live() -> None:
    config = SyntheticConfig(n_channels=16, bin_s=BIN_S, duration_s=1.2, seed=3)
    session = simulate_session(config)
    bins, start = _play_and_bin(config, "broadband", calibration_s=0.4)
    k = np.rint((bins.end_times - start) / BIN_S).astype(int)
    assert k[0] == 20  # the first bin after 0.4 s of calibration
    counts = session.neural[k[k < session.n_bins]]
    found = bins.data[k < session.n_bins]
    assert np.minimum(found, counts).sum() >= 0.95 * counts.sum()
    assert np.maximum(found - counts, 0).sum() <= 0.05 * found.sum()


def test_native_rate_arguments_are_checked_before_start() -> None:
    config = SyntheticConfig(n_channels=4, bin_s=0.05, duration_s=1.0)
    with pytest.raises(ValueError, match="does not apply to events"):
        SessionPlayer(config, input_kind="events", input_rate_hz=1000.0)
    with pytest.raises(ValueError, match="multiple of the bin rate"):
        SessionPlayer(config, input_kind="counts", input_rate_hz=1234.0)
    with pytest.raises(ValueError, match="unknown"):
        SessionPlayer(config, input_kind="lfp")  # type: ignore[arg-type]
    session = simulate_session(config)
    rates = Session(neural=session.neural * 0.5 + 0.25, timestamps=session.timestamps, bin_s=0.05)
    with pytest.raises(ValueError, match="integer spike counts"):
        SessionPlayer(rates, input_kind="events")
    SessionPlayer(rates)  # per bin: any values
    shifted = session.timestamps + np.r_[np.zeros(10), np.full(10, 0.01)]  # a 10 ms step
    gappy = Session(neural=session.neural, timestamps=shifted, bin_s=0.05)
    with pytest.raises(ValueError, match="not whole bins apart"):
        SessionPlayer(gappy, input_kind="counts", input_rate_hz=1000.0)


def test_a_recorded_events_stream_gives_the_same_bins_offline(tmp_path: Path) -> None:
    """Player -> LSL -> recorder -> XDF -> session_from_xdf: the desc survives (the channel
    count of an events stream, here with a silent last channel) and the bins are the
    session's."""
    sim = simulate_session(SyntheticConfig(n_channels=12, bin_s=BIN_S, duration_s=0.6, seed=4))
    neural = sim.neural.copy()
    neural[:, -1] = 0
    session = Session(neural=neural, timestamps=sim.timestamps, bin_s=BIN_S)
    name = f"native-rec-{uuid.uuid4().hex[:12]}"
    path = tmp_path / "events.xdf"
    player = SessionPlayer(session, name=name, input_kind="events", wait_for_consumers=TIMEOUT)
    with player, Recorder(path, [name], resolve_timeout=TIMEOUT) as recorder:
        assert player.wait(TIMEOUT)
        assert recorder.wait_samples({name: player.counters()["pushed"][name]}, TIMEOUT)
        start = player.start_time
    binned = session_from_xdf(path, name, bin_s=BIN_S)
    assert binned.n_channels == 12
    k = np.rint((binned.timestamps - start) / BIN_S).astype(int)
    np.testing.assert_array_equal(binned.neural, neural[k])
    assert k[-1] == session.n_bins - 2  # the last bin: the recording ends inside it
