"""The decoded stream's output: push each bin, refuse implausible ones, hold while lost.

Every decoded bin goes to the ``<output>-kinematics`` outlet stamped with its input bin's end
on the local clock. An output beyond the model's bound (or not finite) is never pushed: the
bin's slot holds zero velocity, the refusal is counted and the engine rolls back to the
previous model unless that one was refused too. While the stream is lost (or came back with
another schema) the outlet holds zero velocity at the model's bin rate.

Latency: for every decoded bin, ``pylsl.local_clock()`` right after the push minus the bin's
close on the local clock (its end time plus the inlet's clock offset when known). Bins slower
than the deadline count as deadline misses. A bin whose input was stamped ahead of the local
clock is counted, and its latency runs from its input's arrival instead.
"""

from __future__ import annotations

import logging
import socket
import time

import numpy as np
import pylsl

from service.engine import Engine
from service.settings import Settings
from service.shared_state import DecodedBin, SharedState
from streams.lsl_outlet import KINEMATICS_SUFFIX, KinematicsOutlet

__all__ = ["DecodedOutput", "ensure_output_free", "output_source_id"]

logger = logging.getLogger(__name__)


class DecodedOutput:
    """Push ``engine``'s decoded bins to ``outlet`` and record their latency in ``shared``.

    ``deadline_s``: a bin slower than this (s) is a deadline miss; ``labels``: the
    kinematics' labels, one per output. Counters: ``refused`` (non-finite or implausible
    outputs, zero pushed instead) with ``last_refusal`` (why the latest one was refused, and
    what was done), ``future_stamped`` (bins whose input was stamped ahead of the local clock)
    with ``largest_lead_s`` (the largest such lead, s), ``hold_pushes`` (zero-velocity
    samples pushed while the stream was lost).
    """

    def __init__(
        self,
        outlet: KinematicsOutlet,
        engine: Engine,
        shared: SharedState,
        deadline_s: float,
        labels: tuple[str, ...],
    ) -> None:
        self.outlet = outlet
        self.engine = engine
        self.shared = shared
        self.deadline_s = deadline_s
        self.labels = labels
        self.refused = 0
        self.last_refusal = ""
        self.future_stamped = 0
        self.largest_lead_s = 0.0
        self.hold_pushes = 0
        self.next_hold = 0.0  # monotonic time of the next zero-velocity push while lost
        self._refused_models: set[str] = set()

    def push(self, decoded: DecodedBin, clock_offset: float | None, last_arrival: float) -> None:
        """Push ``decoded`` (zero velocity in place of an implausible output) and record its
        latency; ``clock_offset``: the inlet's (s; None: unknown), ``last_arrival``: the
        local clock time input samples last came (s)."""
        outlet = self.outlet
        if not outlet.running:
            return
        local_stamp = decoded.timestamp + (clock_offset or 0.0)
        values = decoded.values
        if not (np.abs(values) <= self.engine.output_bound).all():  # NaN: refused
            self._refuse(decoded)
            values = np.zeros_like(values)  # the bin's slot holds zero velocity
        outlet.push(values, local_stamp)
        now = pylsl.local_clock()
        latency = now - local_stamp
        future = latency < 0  # stamped ahead of this clock: measure from the arrival instead
        if future:
            self.future_stamped += 1
            self.largest_lead_s = max(self.largest_lead_s, -latency)
            latency = now - last_arrival
        self.shared.record_latency(
            latency, latency > self.deadline_s, clock_offset is not None, future
        )

    def _refuse(self, decoded: DecodedBin) -> None:
        """A non-finite or implausible output is never pushed: count it, roll back to the
        previous model unless it was refused too (else hold zero velocity), say why."""
        engine = self.engine
        bound = engine.output_bound
        k = int(np.flatnonzero(~(np.abs(decoded.values) <= bound))[0])
        self.refused += 1
        self._refused_models.add(decoded.model_id)
        reason = (
            f"bin {decoded.seq}: {self.labels[k]} = {float(decoded.values[k]):.3g} "
            f"beyond the bound {float(bound[k]):.3g} of model {decoded.model_id}"
        )
        previous = engine.previous_model_id
        if previous is not None and previous not in self._refused_models:
            engine.rollback()
            self._refused_models.add(previous)  # rolled back to once; never ping-pong
            reason += f"; rolled back to model {previous}"
        else:
            reason += "; holding zero velocity until a plausible model is swapped in"
        if reason != self.last_refusal:
            logger.error("output refused: %s", reason)
        self.last_refusal = reason

    def hold_tick(self) -> None:
        """While lost: push zero velocity once per bin."""
        now = time.monotonic()
        if now < self.next_hold:
            return
        bin_s = self.engine.bin_s
        # keep the bin rate; after a pause longer than a bin (or the first tick) restart from now
        following = self.next_hold + bin_s
        self.next_hold = following if following > now else now + bin_s
        outlet = self.outlet
        if outlet.running and self.labels:
            outlet.push(np.zeros(len(self.labels), dtype=np.float32))
            self.hold_pushes += 1


def ensure_output_free(settings: Settings, wait_s: float = 0.5) -> None:
    """``ValueError`` naming the outlet when another one already publishes the decoded
    stream's name (two daemons, one name: consumers would switch between them)."""
    name = f"{settings.output_base}{KINEMATICS_SUFFIX}"
    found = pylsl.resolve_byprop("name", name, 1, wait_s)
    if found:
        info = found[0]
        raise ValueError(
            f"an outlet named {name!r} already publishes (source_id {info.source_id()!r}, "
            f"host {info.hostname()!r}): stop it, or choose another --output-name"
        )


def output_source_id(settings: Settings, model_id: str) -> str:
    """The decoded stream's LSL source_id: host, output name and the first model's id; the
    supervisor keeps it across decoder restarts so consumers recover to the new decoder."""
    return f"bci-decoder@{socket.gethostname()}/{settings.output_base}/{model_id}"
