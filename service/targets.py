"""Learning targets for online adaptation from a live LSL stream, matched to neural bins.

The daemon decodes each neural bin as soon as it arrives; the target for that bin (e.g. the
true cursor velocity from the task computer, or the simulator's ``<name>-kinematics``
stream) comes on its own stream. :class:`TargetFeed` keeps the target samples not yet used
and hands the engine the one whose timestamp is within half a bin of the neural bin's, both
mapped to the local clock with their inlet's clock offset. The daemon asks when the bin is
decoded and, if the target has not arrived yet, again until the bin's e-prop window closes;
a bin whose target never comes learns nothing. The caller records each bin's outcome
(:meth:`TargetFeed.record`) so the feed's status counts matched and unmatched bins.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from typing import Any

import numpy as np

from bci.intention import intended_velocity, rotation_target
from streams.lsl_inlet import LslInlet

__all__ = ["IntentionTargets", "TargetFeed"]

logger = logging.getLogger(__name__)


class TargetFeed:
    """Targets (K values per sample) from the LSL stream ``name`` for a decoder of K outputs.

    ``bin_s`` is the neural bin width (seconds): a target matches a bin when their local
    timestamps differ by at most ``bin_s / 2``. ``inlet_options`` and ``source_id`` go to
    :class:`~streams.lsl_inlet.LslInlet`. :meth:`match` is for one (the decoding) thread;
    :meth:`status` may be called from any thread.
    """

    def __init__(
        self,
        name: str,
        n_out: int,
        bin_s: float,
        inlet_options: dict[str, Any] | None = None,
        source_id: str | None = None,
    ) -> None:
        if not bin_s > 0:
            raise ValueError(f"bin_s must be positive seconds; got {bin_s!r}")
        self.name = name
        self.n_out = int(n_out)
        self.tolerance_s = 0.5 * float(bin_s)
        options = {"wake_on_sample": False, "poll_interval_s": min(0.001, bin_s / 4)}
        options.update(inlet_options or {})
        # polled, not woken per sample: targets are attached late anyway, and a thread
        # waking with every target would compete with the neural bin arriving with it
        self.inlet = LslInlet(name=name, source_id=source_id, **options)
        self._stamps = np.empty(0, dtype=np.float64)  # pending targets, local clock, ascending
        self._values = np.empty((0, self.n_out), dtype=np.float32)
        self._lock = threading.Lock()  # guards the counters and the problem text
        self._matched = 0
        self._unmatched = 0
        self._problem = ""

    def start(self) -> TargetFeed:
        self.inlet.start()
        return self

    def use_bin_width(self, bin_s: float) -> None:
        """Match within half of ``bin_s``, the neural stream's bin width on its own clock
        (a player at 4x sends 50 ms bins 12.5 ms apart: half a session bin would reach the
        previous bin's target while this bin's is still on its way)."""
        if not bin_s > 0:
            raise ValueError(f"bin_s must be positive seconds; got {bin_s!r}")
        self.tolerance_s = 0.5 * float(bin_s)

    def stop(self) -> None:
        self.inlet.stop()

    def match(self, local_timestamp: float) -> np.ndarray | None:
        """The target for the bin stamped ``local_timestamp`` (local clock, s), or None
        (not arrived yet, or none). Targets before this bin are dropped: ask in time order."""
        self._take_new()
        stamps = self._stamps
        if not len(stamps):
            return None
        target = None
        i = int(np.searchsorted(stamps, local_timestamp))
        nearest = min((j for j in (i - 1, i) if 0 <= j < len(stamps)),
                      key=lambda j: abs(stamps[j] - local_timestamp))  # fmt: skip
        if abs(stamps[nearest] - local_timestamp) <= self.tolerance_s:
            target = self._values[nearest].copy()
        # what lies before this bin can match no later bin
        keep = int(np.searchsorted(stamps, local_timestamp - self.tolerance_s))
        self._stamps, self._values = stamps[keep:], self._values[keep:]
        return target

    def target_for(
        self, index: int, local_timestamp: float, decoded: np.ndarray
    ) -> np.ndarray | None:
        """The learning target of a bin (the stream's sample for it; ``index`` and
        ``decoded`` unused): the :class:`~service.decoding.TargetSource` protocol."""
        return self.match(local_timestamp)

    def settled(self, local_timestamp: float) -> bool:
        """True when a target stamped after this bin's window has arrived: none can still
        come for the bin (targets arrive in time order)."""
        return bool(len(self._stamps)) and self._stamps[-1] > local_timestamp + self.tolerance_s

    def record(self, matched: bool) -> None:
        """Count one bin's outcome: learned from a target, or went without."""
        with self._lock:
            if matched:
                self._matched += 1
            else:
                self._unmatched += 1

    def _take_new(self) -> None:
        inlet = self.inlet
        info = inlet.info
        if info is None:
            return
        if info.n_channels != self.n_out:
            self._report(
                f"target stream {self.name!r} has {info.n_channels} channels but the decoder "
                f"outputs {self.n_out}; send one target value per decoded kinematic"
            )
            return
        try:
            data, stamps = inlet.read_new()
        except RuntimeError:  # connected, ring not adopted yet
            return
        if not len(stamps):
            return
        local = stamps + (inlet.clock_offset or 0.0)
        self._stamps = np.concatenate([self._stamps, local])
        self._values = np.concatenate([self._values, data.astype(np.float32, copy=False)])
        if len(self._stamps) > 1 and np.any(np.diff(self._stamps) < 0):
            order = np.argsort(self._stamps, kind="stable")
            self._stamps, self._values = self._stamps[order], self._values[order]

    def _report(self, problem: str) -> None:
        with self._lock:
            new = problem != self._problem
            self._problem = problem
        if new:
            logger.error("%s", problem)

    def status(self) -> dict[str, Any]:
        """JSON-ready: the inlet's state and counters, bins matched / without a target."""
        with self._lock:
            matched, unmatched, problem = self._matched, self._unmatched, self._problem
        inlet = self.inlet
        return {
            "name": self.name,
            "state": inlet.state,
            "message": problem or inlet.state_message,
            "bins_matched": matched,
            "bins_without_target": unmatched,
            "counters": dataclasses.asdict(inlet.counters()),
        }


class IntentionTargets:
    """ReFIT learning targets from a goal-position stream and a cursor-position stream.

    For each bin the decoded velocity ``v`` is pointed from the cursor at the goal
    (:func:`bci.intention.intended_velocity`, zero within ``hold_radius``, position units)
    and turned into a rotation-only target (:func:`bci.intention.rotation_target`), so
    online learning corrects the direction without shrinking the decoded speed. Both streams
    carry one position per sample (as many values as the decoder outputs), timestamped like
    the neural bins; a bin learns when both have a sample within half a bin of it.
    """

    def __init__(self, goal: TargetFeed, cursor: TargetFeed, hold_radius: float) -> None:
        if not hold_radius >= 0:
            raise ValueError(f"hold_radius must be zero or positive; got {hold_radius!r}")
        self.goal, self.cursor, self.hold_radius = goal, cursor, float(hold_radius)

    def start(self) -> IntentionTargets:
        self.goal.start()
        self.cursor.start()
        return self

    def use_bin_width(self, bin_s: float) -> None:
        self.goal.use_bin_width(bin_s)
        self.cursor.use_bin_width(bin_s)

    def stop(self) -> None:
        self.goal.stop()
        self.cursor.stop()

    def target_for(
        self, index: int, local_timestamp: float, decoded: np.ndarray
    ) -> np.ndarray | None:
        """ReFIT: ``decoded`` (this bin's output) rotated toward the goal from the cursor,
        both matched to the bin by timestamp (see :mod:`service.decoding`)."""
        goal = self.goal.match(local_timestamp)
        cursor = self.cursor.match(local_timestamp)
        if goal is None or cursor is None:
            return None
        intended = intended_velocity(decoded, cursor, goal, self.hold_radius)
        return rotation_target(decoded, intended).astype(np.float32)

    def settled(self, local_timestamp: float) -> bool:
        return self.goal.settled(local_timestamp) or self.cursor.settled(local_timestamp)

    def record(self, matched: bool) -> None:
        self.goal.record(matched)

    def status(self) -> dict[str, Any]:
        """The goal feed's status (bins matched / without target) and the cursor feed's."""
        return {**self.goal.status(), "kind": "intention", "cursor": self.cursor.status()}
