"""The decoder's lifecycle: one vocabulary for the daemon, the API process and the metrics,
and the supervisor's word on the decoder process.

The daemon owns the state (``Daemon.state``); the API process reads it from the status
document and adds ``restarting`` (the supervisor restarts a dead decoder process) and
``error`` (the decoder stopped answering). A state is its value in JSON, logs and metrics,
and compares equal to it.
"""

from __future__ import annotations

from enum import Enum

__all__ = ["DecoderState", "SupervisorState"]


class DecoderState(str, Enum):
    """Where the decoder stands (see :mod:`service.daemon` for each transition)."""

    STARTING = "starting"
    WAITING_FOR_STREAM = "waiting-for-stream"
    DECODING = "decoding"
    STREAM_LOST = "stream-lost"  # stalled or lost after data had flowed: the output holds
    SCHEMA_MISMATCH = "schema-mismatch"  # the stream does not fit the model: the output holds
    RESTARTING = "restarting"
    STOPPED = "stopped"
    ERROR = "error"

    def __str__(self) -> str:
        return self.value

    @property
    def holds_output(self) -> bool:
        """Whether the output holds zero velocity in this state (once data had flowed)."""
        return self in (DecoderState.STREAM_LOST, DecoderState.SCHEMA_MISMATCH)


class SupervisorState(str, Enum):
    """What the supervisor says of the decoder process (in the shared header, by position)."""

    RUNNING = "running"
    RESTARTING = "restarting"  # it died and is being started again
    STOPPED = "stopped"

    def __str__(self) -> str:
        return self.value
