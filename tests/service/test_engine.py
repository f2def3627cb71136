"""Tests for service.engine: decoding, sinks, hot swap between bins, rollback, adaptation."""

from __future__ import annotations

import itertools
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from factories import tiny_checkpoint

from bci.checkpoint import CheckpointError, load_checkpoint, load_decoder, save_checkpoint
from bci.eprop import EpropConfig
from bci.input_tracking import InputTracker
from bci.online import OnlineRSNN
from service.decoding import ArrayTargets, BinDecoder, FunctionTargets
from service.engine import Engine
from service.shared_state import DecodedBin, SharedState

N_IN = 6


def make_checkpoint(path: Path, seed: int, n_in: int = N_IN, dt_s: float = 0.05) -> Path:
    return tiny_checkpoint(path, n_in=n_in, n_hidden=16, bin_s=dt_s, seed=seed, rate=2.0)


def bins(n: int, n_in: int = N_IN, seed: int = 0) -> np.ndarray:
    # rates high enough that the hidden neurons spike
    return np.random.default_rng(seed).poisson(6.0, (n, n_in)).astype(np.float32)


def reference(path: Path, x: np.ndarray) -> np.ndarray:
    """A fresh OnlineRSNN run of ``x`` from the model's initial state."""
    decoder = OnlineRSNN(load_checkpoint(path).model)
    state = decoder.initial_state()
    return np.stack([decoder.step(row, state).copy() for row in x])


@pytest.fixture
def paths(tmp_path: Path) -> dict[str, Path]:
    return {name: make_checkpoint(tmp_path / f"{name}.safetensors", seed) for name, seed in
            (("a", 1), ("b", 2))}  # fmt: skip


def test_process_matches_online_decoder_and_feeds_sinks(paths: dict[str, Path]) -> None:
    ring = SharedState.create(2, bins_capacity=5)
    seen: list[DecodedBin] = []
    engine = Engine(load_decoder(paths["a"]), sinks=[ring.write_bin, seen.append])
    x = bins(40)
    out = [engine.step(row, None, 10.0 + 0.05 * i) for i, row in enumerate(x)]
    np.testing.assert_array_equal(np.stack([b.values for b in out]), reference(paths["a"], x))
    assert [b.seq for b in out] == list(range(40))
    assert seen == out
    assert out[3].timestamp == pytest.approx(10.15)
    assert out[0].values is not out[1].values  # private copies, not the decoder's buffer
    assert ring.latest().seq == out[-1].seq
    np.testing.assert_array_equal(ring.latest().values, out[-1].values)
    assert [b.seq for b in ring.recent(3)] == [b.seq for b in out[-3:]]
    assert [b.seq for b in ring.recent()] == [b.seq for b in out[-5:]] and len(ring) == 5
    assert ring.recent(0) == []
    ring.close()
    status = engine.status()
    assert status["bins_decoded"] == 40
    assert status["model_id"] == load_decoder(paths["a"]).model_id == out[0].model_id
    assert status["previous_model_id"] is None and status["adaptation"] is None
    assert status["last_swap"] is None


def test_swap_happens_between_bins_with_fresh_state_and_rollback(paths: dict[str, Path]) -> None:
    engine = Engine(load_decoder(paths["a"]))
    x = bins(30)
    first = [engine.step(row, None, i) for i, row in enumerate(x[:10])]
    new_id = engine.request_swap(paths["b"])
    assert engine.model_id == first[0].model_id  # staged, not applied yet
    assert engine.status()["swaps"]["pending"] is True
    second = [engine.step(row, None, 10 + i) for i, row in enumerate(x[10:20])]
    assert [b.seq for b in second] == list(range(10, 20))
    assert {b.model_id for b in second} == {new_id} != {first[0].model_id}
    # the new model starts from its initial state at the swap
    np.testing.assert_array_equal(
        np.stack([b.values for b in second]), reference(paths["b"], x[10:20])
    )
    status = engine.status()
    assert status["previous_model_id"] == first[0].model_id
    assert status["last_swap"]["result"] == "applied" and status["last_swap"]["at_seq"] == 10
    assert engine.rollback() == first[0].model_id
    third = [engine.step(row, None, 20 + i) for i, row in enumerate(x[20:])]
    assert {b.model_id for b in third} == {first[0].model_id}
    np.testing.assert_array_equal(
        np.stack([b.values for b in third]), reference(paths["a"], x[20:])
    )
    assert engine.status()["previous_model_id"] == new_id
    assert engine.status()["swaps"]["applied"] == 2


def test_rollback_without_previous_model_is_refused(paths: dict[str, Path]) -> None:
    engine = Engine(load_decoder(paths["a"]))
    with pytest.raises(ValueError, match="no previous model"):
        engine.rollback()


def test_fifty_swaps_from_another_thread_keep_sequence_contiguous(
    tmp_path: Path, paths: dict[str, Path]
) -> None:
    decoded: list[DecodedBin] = []
    engine = Engine(load_decoder(paths["a"]), sinks=[decoded.append])
    ids = {name: load_decoder(p).model_id for name, p in paths.items()}
    x = bins(512, seed=3)
    stop = threading.Event()
    processed: list[int] = []

    def loop() -> None:
        i = 0
        while not stop.is_set():
            processed.append(engine.step(x[i % len(x)], None, float(i)).seq)
            i += 1

    order = ["b" if k % 2 == 0 else "a" for k in range(50)]
    worker = threading.Thread(target=loop)
    worker.start()
    try:
        for k, name in enumerate(order):
            engine.request_swap(paths[name])
            deadline = time.monotonic() + 60  # generous: a loaded 2-core machine
            while engine.status()["swaps"]["applied"] < k + 1:  # wait for the loop to take it
                assert time.monotonic() < deadline, "swap never applied"
                time.sleep(0.0005)
            target = len(processed) + 3  # let a few bins pass on the new model
            while len(processed) < target:
                time.sleep(0.0005)
    finally:
        stop.set()
        worker.join(10)
    assert not worker.is_alive()
    seqs = [b.seq for b in decoded]
    assert seqs == list(range(len(decoded))) == processed  # no gaps, no duplicates
    # split into runs of one model: 51 runs, in the order requested
    starts = [0] + [
        i for i in range(1, len(decoded)) if decoded[i].model_id != decoded[i - 1].model_id
    ]
    assert [decoded[s].model_id for s in starts] == [ids["a"]] + [ids[n] for n in order]
    status = engine.status()
    assert status["swaps"] == {"applied": 50, "refused": 0, "superseded": 0, "pending": False}
    assert status["bins_decoded"] == len(decoded)
    # every run decodes from the model's initial state: a swap fell between two bins
    bounds = [*starts, len(decoded)]
    for run, (lo, hi) in enumerate(itertools.pairwise(bounds)):
        name = "a" if run == 0 else order[run - 1]
        inputs = np.stack([x[b.seq % len(x)] for b in decoded[lo:hi]])
        np.testing.assert_array_equal(
            np.stack([b.values for b in decoded[lo:hi]]), reference(paths[name], inputs)
        )
    engine.rollback()
    engine.step(x[0], None, 0.0)
    assert engine.model_id == ids[order[-2]] and engine.status()["previous_model_id"] == ids["a"]


def test_truncated_checkpoint_is_refused_and_old_model_keeps_decoding(
    tmp_path: Path, paths: dict[str, Path]
) -> None:
    engine = Engine(load_decoder(paths["a"]))
    x = bins(10)
    before = engine.step(x[0], None, 0.0)
    broken = tmp_path / "broken.safetensors"
    data = paths["b"].read_bytes()
    broken.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupted"):
        engine.request_swap(broken)
    with pytest.raises(CheckpointError, match="does not exist"):
        engine.request_swap(tmp_path / "missing.safetensors")
    after = [engine.step(row, None, 1.0 + i) for i, row in enumerate(x[1:])]
    assert {b.model_id for b in after} == {before.model_id}
    assert [b.seq for b in after] == list(range(1, 10))
    np.testing.assert_array_equal(
        np.stack([before.values] + [b.values for b in after]), reference(paths["a"], x)
    )
    status = engine.status()
    assert status["swaps"]["refused"] == 2 and status["swaps"]["applied"] == 0
    assert status["last_swap"]["result"] == "refused"
    assert "does not exist" in status["last_swap"]["error"]


def test_channel_count_and_bin_width_mismatch_are_refused(
    tmp_path: Path, paths: dict[str, Path]
) -> None:
    engine = Engine(load_decoder(paths["a"]))
    wide = make_checkpoint(tmp_path / "wide.safetensors", 3, n_in=N_IN + 2)
    with pytest.raises(ValueError, match=f"has {N_IN} channels but model .* expects {N_IN + 2}"):
        engine.request_swap(wide)
    slow = make_checkpoint(tmp_path / "slow.safetensors", 4, dt_s=0.02)
    with pytest.raises(ValueError, match=r"served model has 50 ms bins but model .* decodes 20"):
        engine.request_swap(slow)
    assert engine.step(bins(1)[0], None, 0.0).model_id == engine.status()["model_id"]
    assert engine.status()["previous_model_id"] is None
    # the stream's channel count, not only the model's, is checked at construction
    with pytest.raises(ValueError, match="the stream has 9"):
        Engine(load_decoder(paths["a"]), n_channels=9)


def test_a_swap_keeps_the_served_models_channel_and_kinematics_labels(tmp_path: Path) -> None:
    labels = [f"elec{i}" for i in range(N_IN)]
    served = tiny_checkpoint(tmp_path / "served.safetensors", n_in=N_IN, channel_labels=labels)
    engine = Engine(load_decoder(served))
    same = tiny_checkpoint(tmp_path / "same.safetensors", n_in=N_IN, seed=1, channel_labels=labels)
    cases = {
        "other": ([*labels[:-1], "elec99"], ("vx", "vy"), "channel labels differ"),
        "permuted": (labels[::-1], ("vx", "vy"), "channels in another order"),
        "kinematics": (labels, ("vy", "vx"), "has kinematics vx, vy but model .* decodes vy, vx"),
    }
    for name, (channels, kinematics, message) in cases.items():
        path = tiny_checkpoint(tmp_path / f"{name}.safetensors", n_in=N_IN,
                               channel_labels=channels, kinematics=kinematics)  # fmt: skip
        with pytest.raises(ValueError, match=message) as refused:
            engine.request_swap(path)
        assert "swap in a model calibrated on the served model's" in str(refused.value)
    assert engine.status()["swaps"]["refused"] == 3
    assert engine.request_swap(same) == load_decoder(same).model_id  # the same labels swap in


def test_model_with_non_finite_output_is_refused(tmp_path: Path, paths: dict[str, Path]) -> None:
    # a valid file (finite tensors) whose zero input scale makes the decoder divide by zero
    model = load_checkpoint(paths["b"]).model
    with torch.no_grad():
        model.input_scale.fill_(0.0)
    bad = save_checkpoint(
        tmp_path / "zero_scale.safetensors", model, kinematics_labels=("vx", "vy")
    )
    engine = Engine(load_decoder(paths["a"]))
    with pytest.raises(ValueError, match="not finite"):
        engine.request_swap(bad)
    assert engine.status()["swaps"]["refused"] == 1
    assert engine.step(bins(1)[0], None, 0.0).model_id == load_decoder(paths["a"]).model_id


def test_adaptation_changes_weights_and_counts(paths: dict[str, Path]) -> None:
    config = EpropConfig(lr=1e-2, update_every=5)
    engine = Engine(load_decoder(paths["a"]), adapt=True, eprop=config)
    learner = engine.learner
    assert learner is not None
    w_out, b_out = learner.decoder.w_out.copy(), learner.decoder.readout_constants[1].copy()
    x = bins(50)
    targets = np.random.default_rng(5).standard_normal((50, 2)).astype(np.float32)
    for i, row in enumerate(x):
        engine.step(row, targets[i] if i < 40 else None, float(i))
    adaptation = engine.status()["adaptation"]
    assert adaptation["bins"] == 50 and adaptation["bins_with_target"] == 40
    assert adaptation["updates_applied"] == 10 and adaptation["lr"] == pytest.approx(1e-2)
    assert not np.array_equal(learner.decoder.readout_constants[1], b_out)
    assert not np.array_equal(learner.decoder.w_out, w_out)
    # a frozen engine on the same bins decodes differently once weights moved
    frozen = Engine(load_decoder(paths["a"]))
    plain = np.stack([frozen.step(row, None, 0.0).values for row in x])
    engine2 = Engine(load_decoder(paths["a"]), adapt=True, eprop=config)
    adapted = np.stack([engine2.step(row, targets[i], 0.0).values for i, row in enumerate(x)])
    np.testing.assert_array_equal(adapted[:5], plain[:5])  # first update after bin 5
    assert not np.allclose(adapted[10:], plain[10:])


def test_late_targets_with_deferred_updates_learn_as_on_time(paths: dict[str, Path]) -> None:
    """Targets given after their bins (provide_target) and updates run by the caller give
    the same outputs and weights as targets given with the bins."""
    config = EpropConfig(lr=1e-2, update_every=5)
    x = bins(40)
    targets = np.random.default_rng(5).standard_normal((40, 2)).astype(np.float32)
    on_time = Engine(load_decoder(paths["a"]), adapt=True, eprop=config)
    want = [on_time.step(row, targets[i], float(i)).values for i, row in enumerate(x)]
    ring = SharedState.create(2, bins_capacity=8)
    late = Engine(load_decoder(paths["a"]), adapt=True, eprop=config, sinks=[ring.write_bin],
                  defer_updates=True)  # fmt: skip
    got = []
    for i, row in enumerate(x):
        decoded = late.step(row, None, float(i))
        got.append(decoded.values)
        assert decoded.target is None and late.awaits_target(decoded.seq)
        assert late.provide_target(decoded.seq, targets[i])
        assert not late.provide_target(decoded.seq, targets[i])  # it has one now
        assert ring.set_target(decoded.seq, targets[i])
        if late.update_due:
            late.run_update()
            assert not late.awaits_target(decoded.seq)  # its window has closed
            assert not late.provide_target(decoded.seq, targets[i])
    np.testing.assert_array_equal(np.stack(got), np.stack(want))
    assert late.status()["adaptation"] == on_time.status()["adaptation"]
    np.testing.assert_array_equal(ring.latest().target, targets[-1])
    assert not ring.set_target(0, targets[0])  # no longer held
    ring.close()
    frozen = Engine(load_decoder(paths["a"]), defer_updates=True)
    assert not frozen.provide_target(frozen.step(x[0], None, 0.0).seq, targets[0])
    assert not frozen.update_due


def test_non_finite_channels_are_replaced_by_the_input_mean_and_all_bad_bins_dropped(
    paths: dict[str, Path],
) -> None:
    engine = Engine(load_decoder(paths["a"]))
    mean = OnlineRSNN(load_checkpoint(paths["a"]).model).normalisation[0]
    x = bins(6)
    broken = x.copy()
    broken[1, [0, 3]] = np.nan
    broken[2, 3] = np.inf
    broken[4] = np.nan  # no finite channel: dropped, no sequence number used
    repaired = np.delete(x, 4, axis=0)
    repaired[1, [0, 3]] = mean[[0, 3]]
    repaired[2, 3] = mean[3]
    out = [engine.step(row, None, float(i)) for i, row in enumerate(broken)]
    assert out[4] is None
    kept = [b for b in out if b is not None]
    assert [b.seq for b in kept] == [0, 1, 2, 3, 4]
    np.testing.assert_array_equal(np.stack([b.values for b in kept]),
                                  reference(paths["a"], repaired))  # fmt: skip
    status = engine.status()
    assert status["bins_dropped"] == 1
    assert status["non_finite_inputs"] == [1, 0, 0, 2] + [0] * (N_IN - 4)


def test_eprop_update_runs_after_the_bin_is_published(
    paths: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The sinks have the bin that closes a window before its weight update starts: learning
    never delays the output."""
    events: list[str] = []
    engine = Engine(load_decoder(paths["a"]), adapt=True, eprop=EpropConfig(update_every=5),
                    sinks=[lambda decoded: events.append(f"bin {decoded.seq}")])  # fmt: skip
    _log_updates(engine, events, monkeypatch)
    targets = np.random.default_rng(5).standard_normal((10, 2)).astype(np.float32)
    for i, row in enumerate(bins(10)):
        engine.step(row, targets[i], float(i))
    window = [f"bin {i}" for i in range(5)], [f"bin {i}" for i in range(5, 10)]
    assert events == [*window[0], "update", *window[1], "update"]
    assert engine.status()["adaptation"]["updates_applied"] == 2


def _log_updates(engine: Engine, events: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """Append "update" to ``events`` as each of the engine's e-prop updates starts."""
    learner = engine.learner
    assert learner is not None
    real_update = learner.update

    def observed_update() -> None:
        events.append("update")
        real_update()

    monkeypatch.setattr(learner, "update", observed_update)


@pytest.mark.parametrize("known_before_decoding", [True, False])
def test_the_daemons_deferred_update_runs_after_the_bin_is_published(
    paths: dict[str, Path], monkeypatch: pytest.MonkeyPatch, known_before_decoding: bool
) -> None:
    """The daemon's loop (BinDecoder, updates deferred) publishes the bin that closes a window
    before the window's update starts, whether the targets come with the bins (an array) or
    after them (a function of the decoded output)."""
    events: list[str] = []
    engine = Engine(load_decoder(paths["a"]), adapt=True, eprop=EpropConfig(update_every=5),
                    sinks=[lambda decoded: events.append(f"bin {decoded.seq}")],
                    defer_updates=True)  # fmt: skip
    _log_updates(engine, events, monkeypatch)
    truth = np.random.default_rng(5).standard_normal((10, 2)).astype(np.float32)
    targets = ArrayTargets(truth) if known_before_decoding else FunctionTargets(
        lambda index, _decoded: truth[index]
    )  # fmt: skip
    out = np.empty((10, 2), dtype=np.float32)
    BinDecoder(engine, targets).run(bins(10), np.arange(10.0), out)
    window = [f"bin {i}" for i in range(5)], [f"bin {i}" for i in range(5, 10)]
    assert events == [*window[0], "update", *window[1], "update"]
    assert engine.status()["adaptation"]["updates_applied"] == 2


def test_tracking_engine_z_scores_each_model_by_the_stream(paths: dict[str, Path]) -> None:
    """With tracking, each model's input normalisation follows the stream from its own
    stored statistics; a swapped-in model starts again from its own."""
    engine = Engine(load_decoder(paths["a"]), track_inputs_s=0.5)  # 10 bins
    stored = load_decoder(paths["b"]).decoder.normalisation.copy()
    x = 3.0 * bins(200) + 5.0  # rates tripled and shifted
    for i, row in enumerate(x[:100]):
        engine.step(row, None, i)
    assert engine.tracker is not None and engine.tracker.tau_s == 0.5
    np.testing.assert_allclose(engine.tracker.mean, x[:100].mean(axis=0), rtol=0.15)
    engine.request_swap(paths["b"])
    engine.step(x[100], None, 100.0)
    assert engine.model_id == load_decoder(paths["b"]).model_id
    expected = InputTracker(stored.copy(), 0.05, 0.5)
    expected.observe(x[100])
    np.testing.assert_array_equal(engine.tracker.mean, expected.mean)
    assert Engine(load_decoder(paths["a"])).tracker is None
