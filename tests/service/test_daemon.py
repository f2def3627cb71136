"""Tests for service.daemon: lifecycle states against a real LSL stream (SessionPlayer)."""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pylsl
import pytest
import pyxdf
from factories import tiny_checkpoint
from serving import wait_for

from bci.checkpoint import load_decoder
from bci.intention import intended_velocity, rotation_target
from service.api.routers.kinematics import latest
from service.daemon import Daemon
from service.decoding import decode_recording
from service.settings import Settings
from service.shared_state import DecodedBin
from streams.lsl_outlet import stream_info
from streams.player import SessionPlayer, simulate_stream
from streams.synthetic import SyntheticConfig

N_CHANNELS = 12


def make_checkpoint(path: Path, n_in: int = N_CHANNELS, seed: int = 0) -> Path:
    return tiny_checkpoint(path, n_in=n_in, n_hidden=16, seed=seed, rate=2.0)


def settings_for(name: str, model: Path) -> Settings:
    return Settings(
        stream=name,
        source_id=f"bci-player-{name}",
        model=model,
        output_name=f"{name}-decoded",
        token="t",
    )


def player_for(name: str) -> SessionPlayer:
    config = SyntheticConfig(n_channels=N_CHANNELS, duration_s=30.0, seed=1)
    return simulate_stream(config, name=name, speed=2.0, loop=True)


@pytest.mark.timeout(120)
def test_states_waiting_then_decoding_then_lost_then_stopped(tmp_path: Path) -> None:
    name = f"bci-test-daemon-{uuid.uuid4().hex[:8]}"
    daemon = Daemon(settings_for(name, make_checkpoint(tmp_path / "m.safetensors")))
    assert daemon.state == "starting"
    player = player_for(name)
    try:
        daemon.start()
        assert daemon.state == "waiting-for-stream"
        time.sleep(0.5)
        assert daemon.state == "waiting-for-stream"
        assert daemon.engine is not None and daemon.engine.bins_decoded == 0
        player.start()
        assert wait_for(lambda: daemon.state == "decoding"), daemon.state_message
        assert wait_for(lambda: len(daemon.recent) >= 5)
        seqs = [b.seq for b in daemon.recent.recent()]
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
        player.stop()
        # the inlet's watchdog (1 s) declares the stream stalled: the daemon reports it lost
        assert wait_for(lambda: daemon.state == "stream-lost"), daemon.state
    finally:
        player.stop()
        daemon.stop()
    assert daemon.state == "stopped"
    daemon.stop()  # twice is fine


@pytest.mark.timeout(120)
def test_channel_count_mismatch_is_reported_and_nothing_decoded(tmp_path: Path) -> None:
    name = f"bci-test-daemon-{uuid.uuid4().hex[:8]}"
    model = make_checkpoint(tmp_path / "m8.safetensors", n_in=8)
    daemon = Daemon(settings_for(name, model))
    with player_for(name), daemon:
        assert wait_for(lambda: daemon.state == "schema-mismatch"), daemon.state_message
        assert "12 channels" in daemon.state_message and "expects 8" in daemon.state_message
        assert daemon.engine is not None
        assert daemon.engine.bins_decoded == 0


def test_missing_model_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="BCI_MODEL"):
        Daemon(Settings(stream="x")).start()


@pytest.mark.timeout(120)
def test_lost_stream_holds_zero_velocity_and_decoding_resumes(tmp_path: Path) -> None:
    name = f"bci-test-daemon-{uuid.uuid4().hex[:8]}"
    daemon = Daemon(settings_for(name, make_checkpoint(tmp_path / "m.safetensors")))
    player = player_for(name)
    second: SessionPlayer | None = None
    try:
        daemon.start()
        player.start()
        assert wait_for(lambda: daemon.state == "decoding"), daemon.state_message
        assert wait_for(lambda: len(daemon.recent) >= 5)
        assert not latest(daemon).holding
        player.stop()
        assert wait_for(lambda: daemon.state == "stream-lost"), daemon.state
        assert daemon.holding
        held = latest(daemon)
        seq = held.seq
        assert held.holding and held.values == [0.0, 0.0]
        assert held.seq == daemon.engine.bins_decoded - 1  # the last decoded bin, none invented
        pushes, start = daemon.hold_pushes, time.monotonic()
        # zeros at the 20 Hz bin rate: at least 10 come (however loaded the machine), and
        # never faster than the bin rate (a generous deadline, the bound from the time taken)
        assert wait_for(lambda: daemon.hold_pushes - pushes >= 10, 30.0)
        held_for, count = time.monotonic() - start, daemon.hold_pushes - pushes
        assert count <= 20.0 * held_for + 5, (count, held_for)
        assert daemon.state == "stream-lost"
        assert daemon.engine.bins_decoded == seq + 1

        second = player_for(name)  # same name and source_id: the inlet recovers it
        assert second.source_id == player.source_id
        second.start()
        assert wait_for(lambda: daemon.state == "decoding", 60.0), daemon.state_message
        assert wait_for(lambda: latest(daemon).seq > seq + 5)
        resumed = latest(daemon)
        assert not resumed.holding and resumed.values != [0.0, 0.0]
        seqs = [b.seq for b in daemon.recent.recent()]
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
    finally:
        player.stop()
        if second is not None:
            second.stop()
        daemon.stop()


@pytest.mark.timeout(120)
def test_adapts_from_the_target_stream_matched_by_timestamp(tmp_path: Path) -> None:
    """The player's '<name>-kinematics' stream is the learning target: bins carry it and
    e-prop updates are applied."""
    name = f"bci-test-daemon-{uuid.uuid4().hex[:8]}"
    settings = settings_for(name, make_checkpoint(tmp_path / "m.safetensors")).model_copy(
        update={"adapt": True, "target_stream": f"{name}-kinematics"}
    )
    daemon = Daemon(settings)
    with player_for(name), daemon:
        assert wait_for(lambda: daemon.engine.status()["adaptation"]["updates_applied"] >= 3)
    # read once stopped: the learner's and the target feed's counts then agree
    adaptation = daemon.engine.status()["adaptation"]
    targets = daemon.targets.status()
    assert targets["state"] == "stopped" and targets["bins_matched"] > 0
    # only bins decoded before the target stream connected may lack a target
    assert targets["bins_without_target"] < targets["bins_matched"]
    assert adaptation["bins_with_target"] == targets["bins_matched"]
    with_target = [b for b in daemon.recent.recent() if b.target is not None]
    assert with_target and all(b.target.shape == (2,) for b in with_target)
    assert all(np.isfinite(b.target).all() for b in with_target)


@pytest.mark.timeout(120)
def test_bin_width_mismatch_is_reported_and_nothing_decoded(tmp_path: Path) -> None:
    name = f"bci-test-daemon-{uuid.uuid4().hex[:8]}"
    path = tiny_checkpoint(
        tmp_path / "m100.safetensors", n_in=N_CHANNELS, n_hidden=16, bin_s=0.1, rate=2.0
    )
    daemon = Daemon(settings_for(name, path))
    with player_for(name), daemon:  # the player sends 50 ms bins at twice real time
        assert wait_for(lambda: daemon.state == "schema-mismatch"), daemon.state_message
        assert "50 ms bins" in daemon.state_message and "100 ms" in daemon.state_message
        assert daemon.engine.bins_decoded == 0


@pytest.mark.timeout(120)
def test_outlet_back_with_another_channel_count_is_schema_mismatch_and_holds(
    tmp_path: Path,
) -> None:
    name = f"bci-test-daemon-{uuid.uuid4().hex[:8]}"
    daemon = Daemon(settings_for(name, make_checkpoint(tmp_path / "m.safetensors")))
    player = player_for(name)
    other: SessionPlayer | None = None
    try:
        daemon.start()
        player.start()
        assert wait_for(lambda: daemon.state == "decoding"), daemon.state_message
        player.stop()
        assert wait_for(lambda: daemon.state == "stream-lost"), daemon.state
        decoded = daemon.engine.bins_decoded
        config = SyntheticConfig(n_channels=N_CHANNELS - 4, duration_s=30.0, seed=1)
        other = simulate_stream(config, name=name, speed=2.0, loop=True)  # same source_id
        other.start()
        assert wait_for(lambda: daemon.state == "schema-mismatch", 60.0), daemon.state_message
        assert "channel count: expected 12, received 8" in daemon.state_message
        assert daemon.holding
        pushes = daemon.hold_pushes
        assert wait_for(lambda: daemon.hold_pushes > pushes, 30.0)  # it keeps holding zeros
        assert daemon.state == "schema-mismatch" and daemon.engine.bins_decoded == decoded
    finally:
        player.stop()
        if other is not None:
            other.stop()
        daemon.stop()


@pytest.mark.timeout(120)
def test_targets_arriving_after_their_bins_are_still_learned(tmp_path: Path) -> None:
    """The target stream lags the neural one by 10 ms (a fifth of a bin): every bin after
    the first few still learns from its target, attached after the bin was pushed."""
    name = f"bci-test-daemon-{uuid.uuid4().hex[:8]}"
    settings = settings_for(name, make_checkpoint(tmp_path / "m.safetensors")).model_copy(
        update={"adapt": True, "target_stream": f"{name}-kinematics", "source_id": name}
    )
    outlets = _outlets(name, (("", "Neural", N_CHANNELS), ("-kinematics", "Kinematics", 2)))
    rng = np.random.default_rng(0)

    def push_bin(k: int, stamp: float) -> None:
        outlets[""].push_sample(rng.poisson(6.0, N_CHANNELS).astype(np.float32), stamp)
        time.sleep(0.01)
        outlets["-kinematics"].push_sample([np.sin(0.1 * k), np.cos(0.1 * k)], stamp)

    daemon = Daemon(settings)
    _adapt_while_pushing(daemon, outlets, push_bin, updates=6)
    targets = daemon.targets.status()
    adaptation = daemon.engine.status()["adaptation"]
    assert adaptation["bins_with_target"] == targets["bins_matched"] >= 50
    assert targets["bins_without_target"] <= 10  # before both inlets were connected
    held = daemon.recent.recent()
    assert sum(b.target is not None for b in held[-40:]) >= 38  # attached to the ring too


@pytest.mark.timeout(120)
def test_records_every_input_bin_and_its_output_to_xdf(tmp_path: Path) -> None:
    """pyxdf reads the recording back: one input row and one decoded row per bin, on the
    same timestamps, the outputs equal to what the daemon published."""
    name = f"bci-test-daemon-{uuid.uuid4().hex[:8]}"
    out = tmp_path / "run.xdf"
    settings = settings_for(name, make_checkpoint(tmp_path / "m.safetensors")).model_copy(
        update={"record": out}
    )
    daemon = Daemon(settings)
    with player_for(name), daemon:
        assert wait_for(lambda: daemon.engine.bins_decoded >= 30), daemon.state_message
    assert out.is_file() and not out.with_name("run.xdf.part").exists()
    streams = {s["info"]["name"][0]: s for s in pyxdf.load_xdf(str(out))[0]}
    inputs, outputs = streams[name], streams[f"{name}-decoded-kinematics"]
    assert inputs["info"]["type"] == ["Neural"] and outputs["info"]["type"] == ["Kinematics"]
    n = daemon.engine.bins_decoded
    assert inputs["time_series"].shape == (n, N_CHANNELS) and daemon.recording.bins == n
    assert outputs["time_series"].shape == (n, 2)
    np.testing.assert_array_equal(inputs["time_stamps"], outputs["time_stamps"])
    held = daemon.recent.recent()
    np.testing.assert_array_equal(
        outputs["time_series"][-len(held) :], np.stack([b.values for b in held])
    )
    assert np.all(inputs["time_series"] >= 0) and inputs["time_series"].sum() > 0  # counts
    with pytest.raises(FileExistsError):  # an existing recording is never overwritten
        Daemon(settings).start()


@pytest.mark.timeout(120)
def test_intention_targets_rotate_the_decoded_velocity_toward_the_goal(tmp_path: Path) -> None:
    """target_kind 'intention': each bin learns rotation_target(v, intended_velocity(v,
    cursor, goal)) from the goal and cursor streams, as the offline ReFIT code computes it."""
    name = f"bci-test-daemon-{uuid.uuid4().hex[:8]}"
    settings = settings_for(name, make_checkpoint(tmp_path / "m.safetensors")).model_copy(
        update={
            "adapt": True,
            "source_id": name,
            "target_stream": f"{name}-goal",
            "target_kind": "intention",
            "cursor_stream": f"{name}-cursor",
            "hold_radius": 0.5,
        }
    )
    outlets = _outlets(name, (("", "Neural", N_CHANNELS), ("-goal", "Targets", 2),
                              ("-cursor", "Cursor", 2)))  # fmt: skip
    rng = np.random.default_rng(0)

    def push_bin(k: int, stamp: float) -> None:
        outlets[""].push_sample(rng.poisson(6.0, N_CHANNELS).astype(np.float32), stamp)
        # the goal 10 cm to the right; the cursor on it every fourth bin (hold: zero)
        outlets["-goal"].push_sample([10.0, 0.0], stamp)
        outlets["-cursor"].push_sample([10.0, 0.0] if k % 4 == 0 else [0.0, 3.0], stamp)

    daemon = Daemon(settings)
    _adapt_while_pushing(daemon, outlets, push_bin, updates=4)
    status = daemon.targets.status()
    assert status["kind"] == "intention" and status["bins_matched"] >= 30
    learned = [b for b in daemon.recent.recent() if b.target is not None]
    assert len(learned) >= 30
    for b in learned:
        v = b.values.astype(np.float64)
        options = [
            rotation_target(v, intended_velocity(v, np.array(cursor), np.array([10.0, 0.0]), 0.5))
            for cursor in ([10.0, 0.0], [0.0, 3.0])
        ]
        assert any(np.allclose(b.target, o, atol=1e-5) for o in options), (b.target, options)
    assert any(not b.target.any() for b in learned)  # within the hold radius: stay still
    assert any(b.target.any() for b in learned)


def test_intention_without_its_streams_is_refused() -> None:
    with pytest.raises(ValueError, match="needs the goal and the cursor position streams"):
        Settings(stream="x", target_kind="intention", target_stream="goal")


def _outlets(name: str, streams: tuple[tuple[str, str, int], ...]) -> dict:
    """In-process 20 Hz float32 outlets ``name + suffix`` (its own source_id), by suffix."""
    return {
        suffix: pylsl.StreamOutlet(
            pylsl.StreamInfo(f"{name}{suffix}", kind, n, 20.0, pylsl.cf_float32, f"{name}{suffix}")
        )
        for suffix, kind, n in streams
    }


def _adapt_while_pushing(
    daemon: Daemon, outlets: dict, push_bin: Callable[[int, float], None], updates: int
) -> None:
    """Start ``daemon``; once every outlet has a consumer, call ``push_bin(k, stamp)`` every
    50 ms (stamp: ``local_clock()``) until ``updates`` e-prop updates were applied; stop."""
    stop = threading.Event()

    def push() -> None:
        while not all(o.have_consumers() for o in outlets.values()) and not stop.wait(0.01):
            pass
        k = 0
        while not stop.is_set():
            started = time.monotonic()
            push_bin(k, pylsl.local_clock())
            k += 1
            stop.wait(max(0.0, 0.05 - (time.monotonic() - started)))

    pusher = threading.Thread(target=push, daemon=True)
    try:
        daemon.start()
        pusher.start()
        adaptation = daemon.engine.status
        assert wait_for(lambda: adaptation()["adaptation"]["updates_applied"] >= updates, 60)
    finally:
        stop.set()
        pusher.join(5.0)
        daemon.stop()


@pytest.mark.timeout(60)
def test_a_second_daemon_with_the_same_output_name_is_refused(tmp_path: Path) -> None:
    name = f"bci-test-daemon-{uuid.uuid4().hex[:8]}"
    model = make_checkpoint(tmp_path / "m.safetensors")
    with Daemon(settings_for(name, model)):
        second = Daemon(settings_for(f"{name}-other", model).model_copy(
            update={"output_name": f"{name}-decoded"}))  # fmt: skip
        with pytest.raises(ValueError, match=r"already publishes .* choose another --output-name"):
            second.start()


@pytest.mark.timeout(90)
def test_an_implausible_output_is_never_pushed_and_rolls_back(tmp_path: Path) -> None:
    """An output beyond the model's bound goes out as zero velocity, is counted, and the
    daemon rolls back to the previous model; without one it holds zero velocity."""
    name = f"bci-test-daemon-{uuid.uuid4().hex[:8]}"
    first = make_checkpoint(tmp_path / "a.safetensors", seed=0)
    second = make_checkpoint(tmp_path / "b.safetensors", seed=1)
    daemon = Daemon(settings_for(name, first))
    with player_for(name), daemon:
        infos = pylsl.resolve_byprop("name", f"{name}-decoded-kinematics", 1, 10.0)
        reader = pylsl.StreamInlet(infos[0])
        reader.open_stream(10.0)
        engine = daemon.engine
        assert wait_for(lambda: engine.bins_decoded > 5), daemon.state_message
        engine.request_swap(second)
        assert wait_for(lambda: engine.model_id != engine.previous_model_id and
                        engine.status()["swaps"]["applied"] == 1)  # fmt: skip
        bad_model = engine.model_id
        # what the loop's sink does with a bin whose output left the model's range (called
        # here from the test thread: outlet pushes and rollback staging are thread-safe)
        too_fast = float(engine.output_bound[0]) * 10
        seq = engine.bins_decoded
        bad = DecodedBin(seq, pylsl.local_clock(), np.array([too_fast, 0.0], np.float32),
                         bad_model)  # fmt: skip
        daemon._push(bad)
        assert daemon.outputs_refused == 1
        assert "rolled back to model" in daemon.last_refusal
        assert wait_for(lambda: engine.model_id != bad_model)  # the rollback was applied
        assert wait_for(lambda: "output refused" in daemon.state_message)
        daemon._push(dataclasses.replace(bad, model_id=engine.model_id))
        assert daemon.outputs_refused == 2 and "holding zero velocity" in daemon.last_refusal
        samples, _ = reader.pull_chunk(timeout=2.0, max_samples=100_000)
    assert samples and max(abs(v) for sample in samples for v in sample) < too_fast


def test_future_stamped_input_is_counted_and_never_a_negative_latency(tmp_path: Path) -> None:
    """A player that stamps 100 ms ahead of pushing (as mne-lsl's PlayerLSL does): each bin
    is counted as future-stamped with its lead, and its latency runs from its arrival."""
    name = f"bci-test-future-{uuid.uuid4().hex[:8]}"
    model = make_checkpoint(tmp_path / "m.safetensors")
    settings = settings_for(name, model).model_copy(update={"source_id": name})
    outlets = _outlets(name, (("", "Neural", N_CHANNELS),))
    daemon = Daemon(settings)
    counts = np.random.default_rng(0).poisson(3.0, (1, N_CHANNELS)).astype(np.float32)
    with daemon:
        assert wait_for(lambda: outlets[""].have_consumers(), 20.0), daemon.state_message
        start = pylsl.local_clock()
        for k in range(40):
            while pylsl.local_clock() < start + 0.05 * k:
                time.sleep(0.002)
            outlets[""].push_sample(counts[0], pylsl.local_clock() + 0.1)
        assert wait_for(lambda: daemon.engine.bins_decoded >= 38, 10.0)

        def counted() -> tuple[dict, dict]:
            return daemon.status()["stream"]["future_stamped"], daemon.latency()

        def settled() -> bool:  # no bin pushed for 0.3 s, so none lands between two reads
            before = daemon.engine.bins_decoded
            time.sleep(0.3)
            return daemon.engine.bins_decoded == before

        assert wait_for(settled, 5.0)
        stream, latency = counted()
        window = daemon.shared.latency_window()[3]
    assert stream["bins"] >= 38 and 95.0 < stream["largest_lead_ms"] < 150.0
    assert latency["from_arrival"] == stream["bins"]
    assert (window >= 0).all() and latency["max_ms"] < 50.0


@pytest.mark.timeout(120)
def test_a_permuted_stream_is_mapped_by_label_and_a_relabelled_one_refused(tmp_path: Path) -> None:
    labels = [f"elec{i:02d}" for i in range(N_CHANNELS)]
    path = tiny_checkpoint(tmp_path / "m.safetensors", n_in=N_CHANNELS, n_hidden=16, rate=2.0,
                           channel_labels=labels)  # fmt: skip
    rng = np.random.default_rng(0)
    counts = rng.poisson(4.0, (30, N_CHANNELS)).astype(np.float32)
    order = rng.permutation(N_CHANNELS)  # the stream's column j carries model channel order[j]
    expected, _ = decode_recording(load_decoder(path), counts)
    for stream_labels, refused in (([labels[k] for k in order], False),
                                   ([f"x{k}" for k in range(N_CHANNELS)], True)):  # fmt: skip
        name = f"bci-test-labels-{uuid.uuid4().hex[:8]}"
        outlet = pylsl.StreamOutlet(stream_info(name, "Neural", stream_labels, "counts", 20.0,
                                                source_id=name))  # fmt: skip
        settings = settings_for(name, path).model_copy(update={"source_id": name})
        with Daemon(settings) as daemon:
            assert wait_for(outlet.have_consumers, 20.0), daemon.state_message
            start = pylsl.local_clock()
            for k, row in enumerate(counts):
                outlet.push_sample(row[order], start + 0.05 * k)
            if refused:
                assert wait_for(lambda: daemon.state == "schema-mismatch"), daemon.state
                assert "['elec00', 'elec01', 'elec02'] are not in it" in daemon.state_message
                assert daemon.engine.bins_decoded == 0
                continue
            assert wait_for(lambda: daemon.engine.bins_decoded == len(counts)), daemon.state
            decoded = np.stack([b.values for b in daemon.recent.recent(len(counts))])
        np.testing.assert_array_equal(decoded, expected)


@pytest.mark.timeout(120)
def test_a_restarted_source_with_a_new_source_id_is_followed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """No --source-id: the acquisition program restarts under the same name with a new
    source_id; once the old one has been lost for the watchdog, the new one is decoded."""
    name = f"bci-test-source-{uuid.uuid4().hex[:8]}"
    settings = settings_for(name, make_checkpoint(tmp_path / "m.safetensors"))
    settings = settings.model_copy(update={"source_id": None})
    labels = [f"ch{i}" for i in range(N_CHANNELS)]
    counts = np.ones(N_CHANNELS, dtype=np.float32)

    def outlet(source_id: str) -> pylsl.StreamOutlet:
        return pylsl.StreamOutlet(stream_info(name, "Neural", labels, "counts", 20.0,
                                              source_id=source_id))  # fmt: skip

    first = outlet(f"{name}-amp-1")
    with caplog.at_level(logging.WARNING, logger="streams.lsl_inlet"), Daemon(settings) as daemon:
        assert wait_for(first.have_consumers, 20.0), daemon.state_message
        for _ in range(10):
            first.push_sample(counts)
            time.sleep(0.05)
        assert wait_for(lambda: daemon.engine.bins_decoded >= 5), daemon.state_message
        del first  # the acquisition program stops ...
        assert wait_for(lambda: daemon.state == "stream-lost", 30.0), daemon.state
        second = outlet(f"{name}-amp-2")  # ... and comes back with a new source_id
        decoded = daemon.engine.bins_decoded
        deadline = time.monotonic() + 60.0
        while daemon.engine.bins_decoded < decoded + 5 and time.monotonic() < deadline:
            second.push_sample(counts)
            time.sleep(0.05)
        assert daemon.state == "decoding", daemon.state_message
        assert daemon.inlet.counters().source_changes == 1
        assert daemon.inlet.info.source_id == f"{name}-amp-2"
    assert "source changed" in caplog.text and f"{name}-amp-2" in caplog.text
