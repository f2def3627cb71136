"""The GRU/LSTM search runs on the SNN search's machinery: same study file format, sampler,
pruner and records; resumable; settings checked."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from factories import cosine_tuned_counts, smooth_velocity

from calibration.search import SearchError, TrialData
from calibration.search_rnn import RNNSearchSpace, rnn_search

SPACE = RNNSearchSpace(hidden_factors=(0.5, 1.0), layers=(1,), windows=(20,), epochs=2)


@pytest.fixture(scope="module")
def data() -> TrialData:
    v = smooth_velocity(500)
    x = cosine_tuned_counts(v, 8, np.random.default_rng(0)).astype(np.float32)
    return TrialData(x[:400], v[:400], x[400:], v[400:], bin_s=0.05, seed=3)


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_search_records_and_resumes(cell: str, data: TrialData, tmp_path: Path) -> None:
    study = tmp_path / f"{cell}.study.sqlite"
    first = rnn_search(cell, 2, data, study, base_hidden=8, space=SPACE)
    assert [t["trial"] for t in first.trials] == [0, 1]
    for trial in first.trials:
        assert set(trial["params"]) == {"hidden", "layers", "lr", "weight_decay", "window"}
        assert trial["params"]["hidden"] in (4, 8)
        assert 1 <= trial["steps"] <= SPACE.epochs and np.isfinite(trial["val_r2"])
    assert first.best in (0, 1)
    again = rnn_search(cell, 3, data, study, base_hidden=8, space=SPACE)
    assert again.resumed == 2 and len(again.trials) == 3
    assert again.trials[:2] == first.trials


def test_study_made_for_another_cell_is_refused(data: TrialData, tmp_path: Path) -> None:
    study = tmp_path / "x.study.sqlite"
    rnn_search("gru", 1, data, study, base_hidden=8, space=SPACE)
    with pytest.raises(SearchError, match="decoder"):
        rnn_search("lstm", 1, data, study, base_hidden=8, space=SPACE)
