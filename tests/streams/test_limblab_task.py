"""Goal and cursor per bin from a limblab WF trial table: a hand-made file, and the real
Spike files where ``../shared/data`` is present."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.io

from streams.limblab_task import load_limblab_task
from streams.session import SessionError

SPIKE = Path(__file__).resolve().parents[2] / "../shared/data/neural/spike_wf"


def write(path: Path, table: np.ndarray, n_bins: int = 20) -> Path:
    struct = {
        "timeframe": np.arange(n_bins) * 0.5,
        "cursorposbin": np.c_[np.arange(n_bins), -np.arange(n_bins)].astype(float),
        "trialtable": table,
    }
    scipy.io.savemat(path, {"binnedData": struct})
    return path


def test_goal_is_the_target_centre_from_go_cue_to_trial_end(tmp_path: Path) -> None:
    #                start UL x UL y LR x LR y  on   go   end  R   id
    table = np.array([[0.4, 6.5, 1.5, 9.5, -1.5, 0.9, 1.0, 3.0, 82, 1],
                      [4.0, -1.5, -6.5, 1.5, -9.5, 5.0, 5.2, 6.0, 70, 2]])  # fmt: skip
    task = load_limblab_task(write(tmp_path / "wf.mat", table))
    expected = np.zeros((20, 2))
    expected[2:6] = (8.0, 0.0)  # bins starting at 1.0, 1.5, 2.0, 2.5
    expected[11] = (0.0, -8.0)  # the bin starting at 5.5 (5.0 starts before the go cue)
    np.testing.assert_array_equal(task.goal, expected)
    assert task.hold_radius == 1.5
    np.testing.assert_array_equal(task.cursor[:, 0], np.arange(20))


def test_a_trial_without_go_cue_sets_no_goal(tmp_path: Path) -> None:
    """The lab writes -1 for a missing time: such a trial (or one with its times out of
    order) leaves the centre as the goal, instead of the outer target from time -1 on."""
    #                start UL x UL y LR x LR y  on   go   end  R   id
    table = np.array([[0.4, 6.5, 1.5, 9.5, -1.5, -1.0, -1.0, 3.0, 82, 1],
                      [4.0, -1.5, -6.5, 1.5, -9.5, 5.0, 7.0, 6.0, 70, 2],
                      [6.5, -1.5, -6.5, 1.5, -9.5, 7.0, 7.2, 8.5, 82, 2]])  # fmt: skip
    task = load_limblab_task(write(tmp_path / "wf.mat", table))
    expected = np.zeros((20, 2))
    expected[15:17] = (0.0, -8.0)  # bins starting at 7.5 and 8.0: the third trial only
    np.testing.assert_array_equal(task.goal, expected)


def test_other_trial_table_layout_refused(tmp_path: Path) -> None:
    with pytest.raises(SessionError, match="10"):
        load_limblab_task(write(tmp_path / "x.mat", np.zeros((2, 7))))


def test_spike_targets_cover_each_trial() -> None:
    path = SPIKE / "Spike_07-18-12_WF_001.mat"
    if not path.is_file():
        pytest.skip(f"recorded data file {path.resolve()} is absent")
    task = load_limblab_task(path)
    assert task.goal.shape == task.cursor.shape == (24000, 2)
    radius = np.linalg.norm(task.goal, axis=1)
    assert set(np.round(np.unique(radius), 2)) == {0.0, 8.0}  # centre or an outer target
    # go cue to trial end is about a third of the day (0.69 while its trial without a go
    # cue at 670 s made the outer target the goal of every bin before it)
    assert 0.3 < np.mean(radius > 0) < 0.35 and task.hold_radius == 1.5
