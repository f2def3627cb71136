"""``bci export --nir``: a LIF checkpoint becomes a NIR file; ALIF models are refused."""

from __future__ import annotations

from pathlib import Path

import nir
import numpy as np
import pytest

from bci.checkpoint import save_checkpoint
from bci.rsnn import RSNN, RSNNConfig
from service.cli import main


def _checkpoint(tmp_path: Path, **config: object) -> Path:
    model = RSNN(RSNNConfig(n_in=4, n_hidden=8, n_out=2, **config), seed=0)
    return save_checkpoint(tmp_path / "model.safetensors", model, kinematics_labels=("vx", "vy"))


def test_lif_checkpoint_exports_and_reads_back(tmp_path: Path) -> None:
    checkpoint = _checkpoint(tmp_path, alif_fraction=0.0, reset="zero")
    out = tmp_path / "model.nir"
    assert main(["export", "--nir", str(checkpoint), str(out)]) == 0
    graph = nir.read(out)
    assert isinstance(graph.nodes["hidden"], nir.LIF)
    assert np.asarray(graph.nodes["w_out"].weight).shape == (2, 8)


def test_alif_checkpoint_is_refused_with_its_neuron_type(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    checkpoint = _checkpoint(tmp_path, alif_fraction=0.5, reset="zero")
    out = tmp_path / "model.nir"
    assert main(["export", "--nir", str(checkpoint), str(out)]) == 2
    err = capsys.readouterr().err
    assert "4 ALIF (adaptive-threshold) neurons" in err and "alif_fraction=0" in err
    assert not out.exists()
