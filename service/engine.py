"""The decoding engine: one ``(decoder, state)`` pair (plus an optional e-prop learner), fed
one bin at a time by whatever source drives it (an LSL inlet, a session file).

The engine owns the model and its state and swaps both together. A hot swap is validated off
the processing thread (:meth:`Engine.request_swap`) and staged; the processing thread takes the
staged model at the start of its next :meth:`Engine.step` call, so a swap always falls
between two bins: sequence numbers continue, no bin is lost or decoded twice, and the new
model starts from its own initial state. A lock guards only the staging slot; it is never held
while decoding.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bci.activity import ActivityMeter
from bci.checkpoint import DecoderFile, load_decoder
from bci.compatibility import check_fits
from bci.eprop import EpropConfig, EpropLearner
from bci.input_tracking import InputTracker
from bci.manifest import Manifest
from bci.online import OnlineRSNN, OnlineState
from bci.plausibility import check_warm_up, output_bound
from service.shared_state import DecodedBin

__all__ = ["DecodedBin", "Engine", "Sink"]

logger = logging.getLogger(__name__)

Sink = Callable[[DecodedBin], None]


@dataclass
class _Slot:
    """A loaded model ready to decode: its file, decoder and (when adapting) its learner."""

    file: DecoderFile
    decoder: OnlineRSNN
    learner: EpropLearner | None
    model_id: str
    bound: np.ndarray  # (K,) largest plausible |output| (bci.plausibility.output_bound)
    tracker: InputTracker | None  # when the input normalisation follows the stream


@dataclass
class _Staged:
    slot: _Slot
    kind: str  # "swap" or "rollback"
    requested: float


class Engine:
    """Decode bins with a checkpoint's model; optionally adapt it online with e-prop.

    ``n_channels`` and ``bin_s`` describe the stream (default: the checkpoint's); a model
    whose channel count or bin width differs from them is refused, at construction and on
    swap. ``sinks`` are called with each :class:`DecodedBin` on the processing thread, in
    order; keep them fast (e.g. :meth:`SharedState.write_bin`). Each bin carries the spikes of
    ``raster_neurons`` hidden neurons spread evenly over the layer, and the engine keeps every
    hidden neuron's firing rate as an exponential moving average over ``rate_tau_s`` seconds.

    Learning targets may come late: :meth:`provide_target` gives a decoded bin its target
    while its e-prop window is open. With ``defer_updates`` the caller runs the window's
    weight update (:meth:`run_update`, when :attr:`update_due`) once the window's targets
    are in, before the next bin; otherwise :meth:`step` runs it after publishing.
    Sequence numbers start at ``first_seq``. A model with another number of outputs than the
    first is refused on swap (the outlet's channels are fixed).

    With ``track_inputs_s`` each model's input normalisation follows the stream's running
    mean and sd over that many seconds (:mod:`bci.input_tracking`), starting from the
    model's stored statistics when it is loaded.
    """

    def __init__(
        self,
        checkpoint: DecoderFile,
        adapt: bool = False,
        eprop: EpropConfig | None = None,
        *,
        sinks: Iterable[Sink] = (),
        n_channels: int | None = None,
        bin_s: float | None = None,
        raster_neurons: int = 32,
        rate_tau_s: float = 2.0,
        defer_updates: bool = False,
        first_seq: int = 0,
        track_inputs_s: float | None = None,
    ) -> None:
        if int(raster_neurons) != raster_neurons or raster_neurons < 0:
            raise ValueError(f"raster_neurons must be zero or more; got {raster_neurons!r}")
        if not rate_tau_s > 0:
            raise ValueError(f"rate_tau_s must be positive seconds; got {rate_tau_s!r}")
        self.defer_updates = bool(defer_updates)
        self.raster_neurons = int(raster_neurons)
        self.rate_tau_s = float(rate_tau_s)
        self.adapt = bool(adapt)
        self.track_inputs_s = track_inputs_s
        self.eprop = eprop if eprop is not None else EpropConfig()
        config = checkpoint.decoder.config
        self.n_channels = config.n_in if n_channels is None else int(n_channels)
        self.bin_s = config.dt_s if bin_s is None else float(bin_s)
        self.sinks: list[Sink] = list(sinks)
        self.n_out = config.n_out
        self._current = self._prepare(checkpoint)
        self._previous: _Slot | None = None
        self._state: OnlineState = self._current.decoder.initial_state()
        self._reset_activity()
        self._seq = int(first_seq)  # a restarted decoder continues the sequence
        self.non_finite_inputs = np.zeros(self.n_channels, dtype=np.int64)  # bins, per channel
        self.bins_dropped = 0  # bins without one finite channel
        self._lock = threading.Lock()  # guards _staged and the swap bookkeeping only
        self._staged: _Staged | None = None
        self._swaps_applied = 0
        self._swaps_refused = 0
        self._swaps_superseded = 0
        self._last_swap: dict[str, Any] | None = None
        self.on_swap: Callable[[dict[str, Any]], object] | None = None  # told of each applied

    # -- processing thread ---------------------------------------------------------------
    def step(self, x: np.ndarray, target: np.ndarray | None, timestamp: float) -> DecodedBin | None:
        """Decode bin ``x`` (C,) (learning from ``target`` (K,) when adapting) and publish it.

        A staged swap or rollback is applied first, so it takes effect between bins. Channels
        with a NaN or Inf are replaced by the model's normalisation mean and counted per
        channel (``non_finite_inputs``); a bin with no finite channel is dropped (counted in
        ``bins_dropped``, nothing published, None returned). With adaptation, a due e-prop
        weight update runs after the sinks have the bin.
        """
        if self._staged is not None:  # unlocked peek; the take below is locked
            self._apply_staged()
        slot = self._current
        if not math.isfinite(x.sum()):  # one pass over C values; the mask only when needed
            x = self._repaired(x, slot)
            if x is None:
                return None
        if slot.tracker is not None:
            slot.tracker.observe(x)
        learner = slot.learner
        if learner is not None:
            self._learner_bins.append((self._seq, learner.bins_seen))
            out = learner.step(x, target, self._state, update=False)
        else:
            out = slot.decoder.step(x, self._state)
        spikes = self._state.z
        decoded = DecodedBin(
            self._seq,
            timestamp,
            out.copy(),
            slot.model_id,
            None if target is None else np.array(target, dtype=np.float32),
            spikes[self._raster].astype(np.uint8),
        )
        self._seq += 1
        for sink in self.sinks:
            sink(decoded)
        self._activity.observe(spikes, x)  # bookkeeping after publishing
        if learner is not None and learner.update_due and not self.defer_updates:
            learner.update()  # after publishing: the update never delays this bin's output
        return decoded

    def _repaired(self, x: np.ndarray, slot: _Slot) -> np.ndarray | None:
        """``x`` with its non-finite channels set to ``slot``'s input mean (counted); None,
        counted as dropped, when no channel is finite."""
        bad = ~np.isfinite(x)
        if bad.all():
            self.bins_dropped += 1
            return None
        self.non_finite_inputs += bad
        return np.where(bad, slot.decoder.normalisation[0], x).astype(x.dtype)

    @property
    def update_due(self) -> bool:
        """True when the learner's window is full (see :meth:`run_update`)."""
        learner = self._current.learner
        return learner is not None and learner.update_due

    def run_update(self) -> None:
        """Apply the due e-prop weight update (processing thread, between bins)."""
        learner = self._current.learner
        if learner is not None and learner.update_due:
            learner.update()

    def awaits_target(self, seq: int) -> bool:
        """True while decoded bin ``seq`` can still be given a target (its window is open)."""
        learner = self._current.learner
        if learner is None:
            return False
        for known_seq, learner_bin in reversed(self._learner_bins):
            if known_seq == seq:
                return learner.in_window(learner_bin)
        return False

    def provide_target(self, seq: int, target: np.ndarray) -> bool:
        """Give decoded bin ``seq`` its learning target late (processing thread). True when
        it was stored: the bin is still in the learner's open window and had none."""
        learner = self._current.learner
        if learner is None:
            return False
        for known_seq, learner_bin in reversed(self._learner_bins):
            if known_seq == seq:
                return learner.set_target(learner_bin, target)
        return False

    def _apply_staged(self) -> None:
        with self._lock:
            staged, self._staged = self._staged, None
            if staged is None:
                return
            old = self._current
            self._previous, self._current = old, staged.slot
            self._state = staged.slot.decoder.initial_state()
            self._reset_activity()
            self.set_adaptation(self.adapt)  # a rolled-back model follows today's setting
            learner = staged.slot.learner
            if learner is not None and not learner.status.paused:
                learner.resume()  # its traces and window belong to the state just dropped
            self._swaps_applied += 1
            applied = self._last_swap = {
                "time": time.time(),
                "kind": staged.kind,
                "result": "applied",
                "model_id": staged.slot.model_id,
                "previous_model_id": old.model_id,
                "at_seq": self._seq,
                "error": None,
            }
        logger.info(
            "%s applied before bin %d: model %s -> %s",
            staged.kind,
            self._seq,
            old.model_id,
            staged.slot.model_id,
        )
        if self.on_swap is not None:
            self.on_swap(applied)

    # -- control (any thread) -------------------------------------------------------------
    def request_swap(self, checkpoint_path: str | os.PathLike[str]) -> str:
        """Load and validate a checkpoint on the calling thread, then stage it.

        The swap happens at the start of the next :meth:`step` call. Returns the new
        model's id. Raises :class:`bci.checkpoint.CheckpointError` (unreadable or invalid
        file) or ``ValueError`` (bin width, channels or kinematics other than the served
        model's, or non-finite output); the current model then keeps decoding. A swap staged
        but not yet applied is replaced.
        """
        path = Path(checkpoint_path)
        try:
            slot = self._prepare(load_decoder(path), served=self._current.file.manifest)
        except ValueError as error:  # CheckpointError is a ValueError
            with self._lock:
                self._swaps_refused += 1
                self._last_swap = {
                    "time": time.time(),
                    "kind": "swap",
                    "result": "refused",
                    "model_id": None,
                    "previous_model_id": None,
                    "at_seq": None,
                    "error": str(error),
                }
            logger.warning("swap to %s refused: %s", path, error)
            raise
        self._stage(slot, "swap")
        logger.info("swap to %s (model %s) staged", path, slot.model_id)
        return slot.model_id

    def rollback(self) -> str:
        """Stage the previous model (as it was when swapped out) to decode again from the next
        bin; returns its id. ``ValueError`` when there is no previous model."""
        with self._lock:
            previous = self._previous
        if previous is None:
            raise ValueError("no previous model to roll back to: no swap has been applied yet")
        self._stage(previous, "rollback")
        return previous.model_id

    def _stage(self, slot: _Slot, kind: str) -> None:
        with self._lock:
            if self._staged is not None:
                self._swaps_superseded += 1
                logger.warning(
                    "staged %s to %s replaced before it was applied",
                    self._staged.kind,
                    self._staged.slot.model_id,
                )
            self._staged = _Staged(slot, kind, time.time())

    def prewarm(self) -> None:
        """Decode the stored input means on a scratch state, off the output path: the
        weights and the kernel are in the caches when the next bin comes (after an idle
        wait a bin costs several times more, most of it fetching them). Changes no state,
        weight or count of the engine."""
        decoder = self._current.decoder
        decoder.step(decoder.normalisation[0], self._scratch)

    def _reset_activity(self) -> None:
        """Raster sample, firing rates, the learner's bin map and the prewarm state for the
        current model."""
        self._scratch = self._current.decoder.initial_state()
        n_hidden = self._current.decoder.n_hidden
        count = min(self.raster_neurons, n_hidden)
        self._raster = np.unique(np.linspace(0, n_hidden - 1, count).round().astype(np.intp))
        self._activity = ActivityMeter(n_hidden, self.bin_s, self.rate_tau_s)
        # (seq, learner bin index) of the bins that may still be in the learner's window
        self._learner_bins: deque[tuple[int, int]] = deque(maxlen=self.eprop.update_every)

    def set_adaptation(self, enabled: bool) -> None:
        """Start (a fresh learner for the current model) or stop adapting; later swaps follow.

        Call on the processing thread between bins. Stopping keeps the weights learned so far.
        """
        self.adapt = bool(enabled)
        slot = self._current
        if enabled and slot.learner is None:
            slot.learner = EpropLearner(slot.decoder, self.eprop)
        elif not enabled:
            slot.learner = None
        self._learner_bins.clear()

    @property
    def raster_indices(self) -> np.ndarray:
        """Indices of the hidden neurons whose spikes each :class:`DecodedBin` carries."""
        return self._raster.copy()

    def activity(self) -> dict[str, Any]:
        """Firing rates (Hz, moving average per hidden neuron) and weight norms (Frobenius)
        of the current model; a snapshot that may straddle one bin (any thread)."""
        decoder = self._current.decoder
        rates = self._activity.rates_hz.copy()
        n_in = decoder.n_in
        weights = decoder.weights  # (H, n_in + H): input then recurrent columns
        return {
            "model_id": self._current.model_id,
            "rate_tau_s": self.rate_tau_s,
            "firing_rates_hz": rates.tolist(),
            "mean_rate_hz": float(rates.mean()) if len(rates) else 0.0,
            "silent_fraction": float(np.mean(rates < 0.1)) if len(rates) else 0.0,
            "raster_indices": self._raster.tolist(),
            "input_events_hz": float(self._activity.input_events_hz),
            "weight_norms": {
                "input": float(np.linalg.norm(weights[:, :n_in])),
                "recurrent": float(np.linalg.norm(weights[:, n_in:])),
                "readout": float(np.linalg.norm(decoder.w_out)),
            },
        }

    @property
    def learner(self) -> EpropLearner | None:
        """The current model's e-prop learner (None when not adapting)."""
        return self._current.learner

    @property
    def tracker(self) -> InputTracker | None:
        """The current model's input tracker (None when not tracking)."""
        return self._current.tracker

    @property
    def model_id(self) -> str:
        return self._current.model_id

    @property
    def output_bound(self) -> np.ndarray:
        """(K,) largest plausible ``|output|`` of the current model, its kinematics' units."""
        return self._current.bound

    @property
    def previous_model_id(self) -> str | None:
        """The model a rollback would bring back (None before the first swap)."""
        previous = self._previous
        return None if previous is None else previous.model_id

    @property
    def bins_decoded(self) -> int:
        return self._seq

    def status(self) -> dict[str, Any]:
        """A JSON-ready snapshot of the engine (safe to call from any thread)."""
        with self._lock:
            current, previous = self._current, self._previous
            last_swap = None if self._last_swap is None else dict(self._last_swap)
            counts = {
                "applied": self._swaps_applied,
                "refused": self._swaps_refused,
                "superseded": self._swaps_superseded,
                "pending": self._staged is not None,
            }
        learner = current.learner
        return {
            "bins_decoded": self._seq,
            "model_id": current.model_id,
            "model_path": str(current.file.path),
            "previous_model_id": None if previous is None else previous.model_id,
            "adaptation": None if learner is None else dataclasses.asdict(learner.status),
            "last_swap": last_swap,
            "swaps": counts,
            "non_finite_inputs": self.non_finite_inputs.tolist(),
            "bins_dropped": self.bins_dropped,
        }

    # -- validation ------------------------------------------------------------------------
    def _prepare(self, checkpoint: DecoderFile, served: Manifest | None = None) -> _Slot:
        """Check a loaded model against the stream and, for a swap, the ``served`` model's
        inputs and outputs (runs on the caller's thread). A swap keeps the stream's channel
        match and the outlet's channels, so the model must take the served model's channels
        and decode its kinematics, in the same order."""
        decoder = checkpoint.decoder
        where = f"model {checkpoint.path}"
        fix = "swap in a model calibrated on the served model's channels and kinematics"
        match = check_fits(
            checkpoint.manifest, where, "the stream" if served is None else "the served model",
            bin_s=self.bin_s, n_channels=self.n_channels, n_kinematics=self.n_out,
            channel_labels=None if served is None else served.channel_labels,
            kinematics_labels=None if served is None else served.kinematics_labels,
            kinematics_fix=fix, channels_fix=fix,
        )  # fmt: skip
        if match.index is not None:
            raise ValueError(
                f"{where} takes the served model's channels in another order; {fix}, in its "
                "order (or restart bci serve with this model)"
            )
        try:
            check_warm_up(decoder, checkpoint.manifest)
        except ValueError as error:
            raise ValueError(f"{where}: {error}") from None
        learner = EpropLearner(decoder, self.eprop) if self.adapt else None
        bound = output_bound(checkpoint.manifest).astype(np.float32)
        tracker = None
        if self.track_inputs_s is not None:
            tracker = InputTracker(decoder.normalisation, decoder.dt_s, self.track_inputs_s)
        return _Slot(checkpoint, decoder, learner, checkpoint.model_id, bound, tracker)
