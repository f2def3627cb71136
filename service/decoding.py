"""The one decode loop: bins through an :class:`~service.engine.Engine`, each bin given its
learning target, e-prop updates run once a window's targets are in.

``bci replay --fast``, the daemon's live loop and the benchmarks all decode through
:class:`BinDecoder`. Learning targets come through one protocol, :class:`TargetSource`, with
four sources: an array (:class:`ArrayTargets`), a function (:class:`FunctionTargets`), an LSL
target stream (:class:`service.targets.TargetFeed`) and ReFIT intention
(:class:`IntentionArrays` offline, :class:`service.targets.IntentionTargets` live).

Order per bin: the engine decodes it and publishes it (sinks: outlet, shared state), *then*
the target is looked up and attached while the bin's e-prop window is open, and the window's
weight update runs once every bin in it has its target (or is settled without one), or half
a bin after it fell due when a target is late. A target therefore never delays its bin.

ReFIT has one definition here, the same offline and live: the target of bin ``t`` rotates
bin ``t``'s own decoded velocity toward the goal, from the cursor position stamped with bin
``t`` (:func:`bci.intention.intended_velocity`, then :func:`bci.intention.rotation_target`).
"""

from __future__ import annotations

import copy
import time
from collections import deque
from collections.abc import Callable
from typing import Protocol

import numpy as np

from bci.checkpoint import DecoderFile
from bci.eprop import EpropConfig, EpropStatus
from bci.intention import intended_velocity, rotation_target
from bci.runtime import single_threaded_blas
from service.engine import Engine
from service.shared_state import DecodedBin

__all__ = [
    "ArrayTargets",
    "BinDecoder",
    "FunctionTargets",
    "IntentionArrays",
    "TargetSource",
    "decode_recording",
]


class TargetSource(Protocol):
    """Where learning targets come from. ``index`` counts bins from the start of the run,
    ``local_stamp`` is the bin's end on the local clock (s), ``decoded`` its output (K,)."""

    def target_for(
        self, index: int, local_stamp: float, decoded: np.ndarray
    ) -> np.ndarray | None: ...

    def settled(self, local_stamp: float) -> bool:
        """True when no target can still come for the bin stamped ``local_stamp``."""
        ...

    def record(self, matched: bool) -> None:
        """Count one bin's outcome: learned from a target, or went without."""
        ...


class _Immediate:
    """Offline sources answer at once: every bin is settled when asked."""

    matched = 0
    unmatched = 0
    known_before_decoding = False  # True: the target does not depend on the decoded output

    def settled(self, local_stamp: float) -> bool:
        return True

    def record(self, matched: bool) -> None:
        if matched:
            self.matched += 1
        else:
            self.unmatched += 1


class ArrayTargets(_Immediate):
    """Targets from a (T, K) array, one row per bin in order; a row with a NaN: no target.
    Known before decoding, so each bin is given its target with it (as a late one would be
    attached, bit for bit, at less cost)."""

    known_before_decoding = True

    def __init__(self, targets: np.ndarray) -> None:
        self.targets = np.asarray(targets, dtype=np.float32)
        self._has_target = (~np.isnan(self.targets).any(axis=1)).tolist()  # per row, cheap to ask

    def target_for(self, index: int, local_stamp: float, decoded: np.ndarray) -> np.ndarray | None:
        return self.targets[index] if self._has_target[index] else None


class FunctionTargets(_Immediate):
    """Targets from ``fn(index, decoded) -> target or None``."""

    def __init__(self, fn: Callable[[int, np.ndarray], np.ndarray | None]) -> None:
        self.fn = fn

    def target_for(self, index: int, local_stamp: float, decoded: np.ndarray) -> np.ndarray | None:
        return self.fn(index, decoded)


class IntentionArrays(_Immediate):
    """ReFIT targets from recorded goal and cursor positions, (T, K) each (NaN: no goal)."""

    def __init__(self, goal: np.ndarray, cursor: np.ndarray, hold_radius: float) -> None:
        if not hold_radius >= 0:
            raise ValueError(f"hold_radius must be zero or positive; got {hold_radius!r}")
        self.goal = np.asarray(goal, dtype=np.float64)
        self.cursor = np.asarray(cursor, dtype=np.float64)
        self.hold_radius = float(hold_radius)

    def target_for(self, index: int, local_stamp: float, decoded: np.ndarray) -> np.ndarray | None:
        goal, cursor = self.goal[index], self.cursor[index]
        if np.isnan(goal).any() or np.isnan(cursor).any():
            return None
        intended = intended_velocity(decoded, cursor, goal, self.hold_radius)
        return rotation_target(decoded, intended).astype(np.float32)


class BinDecoder:
    """Decode bins with ``engine``, learning (when the engine adapts) from ``targets``.

    Call :meth:`step` for each bin as it closes, and :meth:`learn` whenever there is time
    (after each batch of bins, and while waiting for input): it attaches the targets that are
    in and runs a due weight update. ``on_target(seq, target)`` is told of each attached
    target (e.g. to show it beside the decoded bin).
    """

    def __init__(
        self,
        engine: Engine,
        targets: TargetSource | None = None,
        on_target: Callable[[int, np.ndarray], object] | None = None,
    ) -> None:
        if not engine.defer_updates:
            raise ValueError("BinDecoder runs the e-prop updates: build the Engine with "
                             "defer_updates=True")  # fmt: skip
        self.engine = engine
        self.targets = targets
        self.on_target = on_target
        self.index = 0  # bins decoded by this loop
        # decoded bins without a target yet: (seq, index, local stamp, decoded values)
        self._awaiting: deque[tuple[int, int, float, np.ndarray]] = deque()
        self._due_since = 0.0  # monotonic time the update fell due; 0: not due

    @property
    def waiting_for_targets(self) -> bool:
        """True while a due update waits for late targets (poll again soon)."""
        return bool(self._due_since)

    def step(self, x: np.ndarray, timestamp: float, local_stamp: float) -> DecodedBin | None:
        """Decode and publish one bin (``timestamp``: its end on the source clock); None when
        the engine dropped it (no finite channel)."""
        targets, learning = self.targets, self.engine.learner is not None
        if learning and targets is not None and getattr(targets, "known_before_decoding", False):
            target = targets.target_for(self.index, local_stamp, None)
            decoded = self.engine.step(x, target, timestamp)
            if decoded is not None:
                targets.record(target is not None)
        else:
            decoded = self.engine.step(x, None, timestamp)
            if learning and targets is not None and decoded is not None:
                self._awaiting.append((decoded.seq, self.index, local_stamp, decoded.values))
        self.index += 1
        return decoded

    def learn(self) -> None:
        """Give decoded bins the targets that are in, then run the e-prop update once its
        window's targets are in (or half a bin after it fell due)."""
        engine, targets = self.engine, self.targets
        while self._awaiting and targets is not None:
            seq, index, stamp, values = self._awaiting[0]
            target = targets.target_for(index, stamp, values)
            if target is None and not targets.settled(stamp) and engine.awaits_target(seq):
                break
            self._awaiting.popleft()
            stored = target is not None and engine.provide_target(seq, target)
            if stored and self.on_target is not None:
                self.on_target(seq, target)
            targets.record(stored)
        if not engine.update_due:
            self._due_since = 0.0
            return
        now = time.monotonic()
        if not self._due_since:
            self._due_since = now
        if not self._awaiting or now - self._due_since >= 0.5 * engine.bin_s:
            engine.run_update()
            self._due_since = 0.0

    def run(self, neural: np.ndarray, timestamps: np.ndarray, out: np.ndarray) -> None:
        """Decode a whole recording (``neural`` (T, C), ``timestamps`` (T,) s) into ``out``
        (T, K), learning as live, bin by bin (offline sources answer at once); a dropped bin
        (no finite channel) is NaN."""
        step, learn = self.step, self.learn
        for t in range(neural.shape[0]):
            decoded = step(neural[t], timestamps[t], timestamps[t])
            out[t] = np.nan if decoded is None else decoded.values
            learn()


def decode_recording(
    model: DecoderFile,
    neural: np.ndarray,
    targets: TargetSource | None = None,
    eprop: EpropConfig | None = None,
    timestamps: np.ndarray | None = None,
    track_inputs_s: float | None = None,
) -> tuple[np.ndarray, EpropStatus | None]:
    """Decode a recording ``neural`` (T, C) bin by bin as the daemon would, frozen, or with
    ``eprop`` adapting from ``targets``; with ``track_inputs_s`` the input normalisation
    follows the recording (:mod:`bci.input_tracking`). Returns the outputs (T, K) and the
    learner's final status (None when frozen). ``timestamps`` (T,) default to the bin ends
    from 0. The model is copied: ``model.decoder`` is not changed."""
    neural = np.ascontiguousarray(neural, dtype=np.float32)
    n_bins = neural.shape[0]
    if timestamps is None:
        timestamps = (np.arange(n_bins) + 1) * model.decoder.dt_s
    engine = Engine(
        _private_copy(model),
        adapt=eprop is not None,
        eprop=eprop,
        n_channels=neural.shape[1],
        defer_updates=True,
        track_inputs_s=track_inputs_s,
    )
    out = np.empty((n_bins, model.decoder.n_out), dtype=np.float32)
    limiter = single_threaded_blas()
    try:
        BinDecoder(engine, targets if eprop is not None else None).run(neural, timestamps, out)
    finally:
        limiter.restore_original_limits()
    learner = engine.learner
    return out, None if learner is None else learner.status


def _private_copy(model: DecoderFile) -> DecoderFile:
    """``model`` with a decoder of its own (learning changes a decoder's weights in place)."""
    decoder = copy.deepcopy(model.decoder)
    return DecoderFile(model.manifest, decoder, model.path)
