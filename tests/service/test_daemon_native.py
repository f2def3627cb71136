"""The daemon decodes a rig's native-rate streams: 1 kHz counts and spike events from the
player, binned live by the front-end, give the bins (and so the outputs) of the recorded
session, and a trained decoder follows the kinematics (R² >= 0.5)."""

from __future__ import annotations

import uuid
from pathlib import Path

import numpy as np
import pytest
import pyxdf
from serving import N_CHANNELS, wait_for

from bci.checkpoint import load_decoder, save_checkpoint
from bci.metrics import r2_score
from bci.rsnn import RSNN, RSNNConfig
from bci.training import TrainConfig, train_rsnn
from service.daemon import Daemon
from service.settings import Settings
from service.shared_state import DecodedBin
from streams.player import SessionPlayer
from streams.session import Session, chronological_split
from streams.synthetic import SyntheticConfig, simulate_session

pytestmark = pytest.mark.timeout(150)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Session]:
    """A decoder trained on the first 70% of a 100 s session; 10 s of its last 20 are played."""
    session = simulate_session(SyntheticConfig(n_channels=N_CHANNELS, duration_s=100.0, seed=7))
    train, validation, test = chronological_split(session)
    model = RSNN(RSNNConfig(n_in=N_CHANNELS, n_hidden=64, n_out=2, dt_s=session.bin_s), seed=0)
    config = TrainConfig(window=100, burn_in=20, batch_size=16, max_steps=150, eval_every=50)
    train_rsnn(model, (train.neural, train.kinematics),
               (validation.neural, validation.kinematics), config)  # fmt: skip
    path = tmp_path_factory.mktemp("native") / "m.safetensors"
    return save_checkpoint(path, model, kinematics_labels=("vx", "vy")), test.slice(0, 200)


@pytest.mark.parametrize(("kind", "rate_hz"), [("counts", 1000.0), ("events", None)])
def test_native_rate_stream_decodes_the_sessions_bins(
    trained: tuple[Path, Session], kind: str, rate_hz: float | None, tmp_path: Path
) -> None:
    model, session = trained
    name = f"bci-test-native-{uuid.uuid4().hex[:8]}"
    record = tmp_path / "live.xdf"  # every input bin the front-end made, and its output
    settings = Settings(stream=name, source_id=f"bci-player-{name}", model=model,
                        output_name=f"{name}-decoded", token="t", record=record,
                        bin_grace_ms=200.0)  # a loaded machine's player may stall 5 ms  # fmt: skip
    decoded: list[DecodedBin] = []
    player = SessionPlayer(session, name=name, wait_for_consumers=30.0, wait_for=("neural",),
                           input_kind=kind, input_rate_hz=rate_hz)  # fmt: skip
    with Daemon(settings, sinks=[decoded.append]) as daemon, player:
        assert player.wait(60.0), "the player did not finish"
        # every played bin, then at least one empty bin closed by the grace period
        assert wait_for(lambda: len(decoded) >= session.n_bins, 30.0), daemon.state_message
        assert daemon.frontend is not None and daemon.frontend.kind == kind
        counters = daemon.frontend.counters()
    assert counters["late"] == 0
    streams = {st["info"]["name"][0]: st for st in pyxdf.load_xdf(str(record))[0]}
    inputs = streams[name]["time_series"]
    n = len(decoded)
    assert inputs.shape == (n, N_CHANNELS)
    # the live bins are the session's, from the first bin the stream began on (a bin that
    # was already under way when the daemon connected is left out), then empty grace bins
    first = next(k for k in range(session.n_bins) if np.array_equal(inputs[0], session.neural[k]))
    played = session.n_bins - first
    np.testing.assert_array_equal(inputs[:played], session.neural[first:])
    assert not inputs[played:].any()  # bins closed by the grace period after the last sample
    # and decoded as offline decoding of the same bins decodes them
    offline = load_decoder(model).decoder
    state = offline.initial_state()
    expected = np.stack([offline.step(x, state).copy() for x in session.neural[first:]])
    live = np.stack([b.values for b in decoded[:played]])
    np.testing.assert_array_equal(live, expected)
    r2, _ = r2_score(session.kinematics[first:], live)
    assert r2 >= 0.5, r2
