"""``<output>-events``: the daemon's events as an LSL Markers stream, so a lab's recording
(LabRecorder, ``bci record``) holds them beside the neural and decoded streams.

One string channel at an irregular rate (type ``Markers``, source_id the decoded stream's
plus ``-events``). Each sample is one JSON object, stamped with ``pylsl.local_clock()`` when
it happened::

    {"event": "swap", "model_id": "...", "previous_model_id": "...", "at_seq": 1234}

Events (``event``, and the fields beside it):

=================== ==========================================================================
``swap``            a hot swap applied between two bins: ``model_id``, ``previous_model_id``,
                    ``at_seq`` (the first bin decoded by the new model)
``rollback``        a rollback applied, same fields
``adaptation``      ``action``: enable, disable, pause, resume or reset
``learning_rate``   ``lr``: the new e-prop learning rate
``eprop_rollback``  the learner rejected an update and rolled its weights back: ``rollbacks``
                    (count so far), ``reason``
``stream_lost``     the neural stream was lost (zero velocity held): ``message``
``stream_restored`` decoding resumed after a loss or a schema mismatch: ``message``
``schema_mismatch`` the stream does not fit the model (nothing decoded): ``message``
=================== ==========================================================================
"""

from __future__ import annotations

import json
import logging
from typing import Any

import pylsl

__all__ = ["EVENTS_SUFFIX", "EventOutlet"]

logger = logging.getLogger(__name__)

EVENTS_SUFFIX = "-events"


class EventOutlet:
    """The Markers outlet ``<output_base>-events``; :meth:`publish` pushes one event."""

    def __init__(self, output_base: str, source_id: str) -> None:
        self.name = f"{output_base}{EVENTS_SUFFIX}"
        info = pylsl.StreamInfo(self.name, "Markers", 1, pylsl.IRREGULAR_RATE,
                                pylsl.cf_string, f"{source_id}{EVENTS_SUFFIX}")  # fmt: skip
        info.desc().append_child_value("content", "bci serve events, one JSON object each")
        self._outlet: pylsl.StreamOutlet | None = pylsl.StreamOutlet(info)
        self.published = 0

    def publish(self, event: str, **fields: Any) -> None:
        """Push ``{"event": event, **fields}`` stamped now (nothing after :meth:`close`)."""
        if self._outlet is None:
            return
        text = json.dumps({"event": event, **fields}, separators=(",", ":"))
        self._outlet.push_sample([text], pylsl.local_clock())
        self.published += 1
        logger.info("event %s", text)

    def close(self) -> None:
        outlet, self._outlet = self._outlet, None
        del outlet  # destroys the liblsl outlet
