"""``bci export --nir``: a LIF checkpoint becomes a NIR file; ALIF models are refused with the
flag that fixes them; the documented ``bci calibrate`` recipe exports as is, with a report."""

from __future__ import annotations

from pathlib import Path

import nir
import numpy as np
import pytest
from factories import tiny_checkpoint

from bci.checkpoint import load_checkpoint
from bci.neurons import RESET_MODES
from bci.nir_export import DIALECTS
from bci.surrogates import SURROGATES
from service.cli import DIALECT_CHOICES, RESET_CHOICES, SURROGATE_CHOICES, main
from streams.limblab import load_limblab_session
from streams.session import save_session


def _checkpoint(tmp_path: Path, **config: object) -> Path:
    return tiny_checkpoint(tmp_path / "model.safetensors", **config)


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
    assert "4 ALIF (adaptive-threshold) neurons" in err and "--alif-fraction 0" in err
    assert not out.exists()


JANGO = Path(__file__).parents[2] / "../shared/data/neural/Jango_20141203_default_offline_data.mat"


@pytest.fixture(scope="module")
def jango(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The first 5 minutes (6,000 bins) of Jango as an NPZ session."""
    if not JANGO.is_file():
        pytest.skip(f"real data missing: {JANGO.resolve()}")
    session = load_limblab_session(JANGO).slice(0, 6000)
    return save_session(tmp_path_factory.mktemp("jango") / "jango.npz", session)


def test_recipe_calibrates_a_decoder_that_exports_with_no_extra_options(
    jango: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    checkpoint, out = tmp_path / "lif.safetensors", tmp_path / "lif.nir"
    recipe = ["--alif-fraction", "0", "--reset", "zero", "--surrogate", "fast_sigmoid"]
    argv = ["calibrate", str(jango), *recipe, "--steps", "60", "--hidden", "32"]
    assert main([*argv, "--out", str(checkpoint)]) == 0
    config = load_checkpoint(checkpoint).model.config
    assert (config.alif_fraction, config.reset, config.surrogate) == (0.0, "zero", "fast_sigmoid")
    capsys.readouterr()

    assert main(["export", "--nir", str(checkpoint), str(out), "--report"]) == 0
    printed = capsys.readouterr().out
    assert isinstance(nir.read(out).nodes["hidden"], nir.LIF)
    assert "neurons: 32 LIF hidden + 2 LI readout" in printed
    assert "synapses: " in printed and "fan-in per hidden neuron: max " in printed
    assert f"test part of {jango}: 1200 bins" in printed
    r2 = dict(
        line.split()
        for line in printed.splitlines()
        if line.split()[:1] in (["float32"], ["8-bit"], ["4-bit"])
    )
    assert set(r2) == {"float32", "8-bit", "4-bit"}
    assert float(r2["float32"]) == pytest.approx(
        load_checkpoint(checkpoint).manifest.metrics["test"]["snn"]["r2"], abs=1e-4
    )


def test_default_model_refusal_is_one_line_naming_the_flags(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    checkpoint = _checkpoint(tmp_path)  # RSNNConfig defaults: ALIF neurons, reset by subtraction
    assert main(["export", "--nir", str(checkpoint), str(tmp_path / "m.nir")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("bci export: error: cannot export to NIR")
    assert "--alif-fraction 0" in err and "--reset zero" in err


def test_report_needs_a_session_it_can_find(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    checkpoint = _checkpoint(tmp_path, alif_fraction=0.0, reset="zero")
    out = str(tmp_path / "m.nir")
    assert main(["export", "--nir", str(checkpoint), out, "--session", "s.npz"]) == 2
    assert "--session picks the session --report scores on: add --report" in capsys.readouterr().err
    assert main(["export", "--nir", str(checkpoint), out, "--report"]) == 2
    assert "give one with --session" in capsys.readouterr().err


def test_dialect_flag_writes_the_consumer_shape(tmp_path: Path) -> None:
    checkpoint = _checkpoint(tmp_path, alif_fraction=0.0, reset="zero")
    out = tmp_path / "norse.nir"
    assert main(["export", "--nir", str(checkpoint), str(out), "--dialect", "norse"]) == 0
    graph = nir.read(out)
    assert graph.metadata["dialect"] == "norse"
    np.testing.assert_array_equal(graph.nodes["hidden"].r, 1.0)


def test_flag_choices_are_the_librarys() -> None:
    assert RESET_CHOICES == RESET_MODES
    assert SURROGATE_CHOICES == tuple(sorted(SURROGATES))
    assert DIALECT_CHOICES == DIALECTS
