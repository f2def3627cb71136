"""Run a trained decoder bin by bin over a recording, frozen or adapting with e-prop."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from bci.eprop import EpropConfig, EpropLearner, EpropStatus
from bci.online import OnlineRSNN
from bci.rsnn import RSNN

TargetFn = Callable[[int, np.ndarray], np.ndarray | None]
"""``target(t, decoded) -> target for bin t`` (or None), e.g. an intention estimate."""


def decode_online(
    model: RSNN,
    neural: np.ndarray,
    targets: np.ndarray | TargetFn | None = None,
    eprop: EpropConfig | None = None,
) -> tuple[np.ndarray, EpropStatus | None]:
    """Decode ``neural`` (T, C) causally; with ``eprop`` learn from ``targets`` as it goes.

    ``targets`` is (T, K) (NaN rows: no target), or a function ``target(t, previous)`` of the
    bin index and the previous bin's decoded output (closed-loop intention estimation; the
    target of bin t is needed before bin t is decoded). Returns the decoded kinematics
    (T, K) and the learner's final status (None when frozen).
    """
    decoder = OnlineRSNN(model)
    state = decoder.initial_state()
    outputs = np.empty((neural.shape[0], model.config.n_out), dtype=np.float32)
    if eprop is None:
        for t, x in enumerate(neural):
            outputs[t] = decoder.step(x, state)
        return outputs, None
    learner = EpropLearner(decoder, eprop)
    target_of = targets if callable(targets) else None
    for t, x in enumerate(neural):
        if target_of is not None:
            # the target of bin t depends on what was decoded for it: decode, then learn
            target = target_of(t, outputs[t - 1] if t else np.zeros(outputs.shape[1]))
        elif targets is None or np.isnan(targets[t]).any():
            target = None
        else:
            target = targets[t]
        outputs[t] = learner.step(x, target, state)
    return outputs, learner.status
