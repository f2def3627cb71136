"""The decoder process's modules import without torch, and a checkpoint loads and decodes
(with e-prop adapting) in a fresh interpreter that never imports it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from factories import tiny_checkpoint

from bci.checkpoint import load_decoder
from bci.eprop import EpropConfig, EpropLearner

ROOT = Path(__file__).resolve().parents[2]
DECODER_PROCESS = """
import sys

import numpy as np

import bci.checkpoint, bci.eprop, bci.intention, bci.online
from bci.runtime import single_threaded_blas

assert "torch" not in sys.modules, "importing the decoder modules imported torch"
single_threaded_blas()
path, neural_path, out_path = sys.argv[1:]
loaded = bci.checkpoint.load_decoder(path)
learner = bci.eprop.EpropLearner(loaded.decoder, bci.eprop.EpropConfig(update_every=5))
state = loaded.decoder.initial_state()
neural = np.load(neural_path)
outputs = [learner.step(x, np.zeros(2), state).copy() for x in neural]
assert learner.status.updates_applied > 0
np.save(out_path, np.array(outputs))
assert "torch" not in sys.modules, "loading or decoding imported torch"
print(loaded.model_id)
"""


def test_decoder_process_runs_without_torch(tmp_path: Path) -> None:
    path = tiny_checkpoint(tmp_path / "m.safetensors", n_in=8, n_hidden=24, seed=2)
    neural = np.random.default_rng(0).poisson(3.0, size=(40, 8)).astype(np.float32)
    np.save(tmp_path / "neural.npy", neural)
    paths = [str(ROOT), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}  # this checkout's bci first
    result = subprocess.run(
        [sys.executable, "-c", DECODER_PROCESS, str(path), str(tmp_path / "neural.npy"),
         str(tmp_path / "out.npy")],
        capture_output=True, text=True, env=env, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr

    loaded = load_decoder(path)
    assert result.stdout.strip() == loaded.model_id
    learner = EpropLearner(loaded.decoder, EpropConfig(update_every=5))
    state = loaded.decoder.initial_state()
    expected = [learner.step(x, np.zeros(2), state).copy() for x in neural]
    np.testing.assert_array_equal(np.load(tmp_path / "out.npy"), np.array(expected))
