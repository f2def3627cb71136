"""An XDF recording of what the daemon decoded: each neural input bin and its decoded output.

Two streams, both stamped on the daemon's local clock (the input bin's timestamp plus the
inlet's clock offset, which is also the stamp of the decoded sample on the outlet):

- stream 1 ``<input name>``: the neural bins as decoded (type Neural, float32);
- stream 2 ``<output name>``: the decoded kinematics (type Kinematics, float32).

The decoding loop only puts ``(timestamp, input, output)`` on a queue; a writer thread
appends them to the file in batches (every ``flush_s``), so disk I/O never delays a bin. The
file is written as ``FILE.part`` and renamed when :meth:`DecodedRecording.close` finishes it.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from streams.lsl_outlet import KINEMATICS_TYPE, NEURAL_TYPE
from streams.xdf_writer import XdfWriter

__all__ = ["DecodedRecording"]

logger = logging.getLogger(__name__)

_INPUT, _OUTPUT = 1, 2


class DecodedRecording:
    """Record input bins and decoded outputs to the XDF file ``path``.

    ``rate_hz`` is the bin rate (the streams' nominal rate); ``input_name`` /
    ``output_name`` and ``output_labels`` describe the streams. Raises FileExistsError when
    ``path`` exists and ``overwrite`` is False.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        input_name: str,
        n_channels: int,
        output_name: str,
        output_labels: Sequence[str],
        rate_hz: float,
        overwrite: bool = False,
        flush_s: float = 0.25,
    ) -> None:
        self.path = Path(path)
        self.flush_s = float(flush_s)
        self._writer = XdfWriter(self.path, overwrite=overwrite)
        self._writer.add_stream(_INPUT, input_name, NEURAL_TYPE, int(n_channels), rate_hz,
                                "float32")  # fmt: skip
        self._writer.add_stream(_OUTPUT, output_name, KINEMATICS_TYPE, len(output_labels),
                                rate_hz, "float32", channel_labels=list(output_labels))  # fmt: skip
        self._queue: queue.SimpleQueue[tuple[float, np.ndarray, np.ndarray] | None] = (
            queue.SimpleQueue()
        )
        self.bins = 0  # bins written to the file
        self.error = ""  # why recording stopped early, if it did
        self._thread = threading.Thread(target=self._run, name="bci-recording", daemon=True)
        self._thread.start()

    def add(self, timestamp: float, neural: np.ndarray, decoded: np.ndarray) -> None:
        """Queue one bin: ``timestamp`` (local clock, s), input (C,), output (K,)."""
        if not self.error:
            self._queue.put((timestamp, neural, decoded))

    def close(self, timeout: float = 10.0) -> Path:
        """Write what is queued and finish the file; returns its path, or the ``.part``
        file holding what was written when writing failed (safe to call twice)."""
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join(timeout)
        if self.error:
            return self._writer.part_path
        return self._writer.close()

    def _run(self) -> None:
        done = False
        while not done and not self.error:
            rows = []
            try:
                item = self._queue.get(timeout=self.flush_s)
                while item is not None:
                    rows.append(item)
                    item = self._queue.get_nowait()
                done = True  # None: the last batch
            except queue.Empty:
                pass
            if rows:
                self._write(rows)

    def _write(self, rows: list[tuple[float, np.ndarray, np.ndarray]]) -> None:
        stamps = np.array([r[0] for r in rows], dtype=np.float64)
        try:
            self._writer.write_samples(_INPUT, stamps, np.stack([r[1] for r in rows]))
            self._writer.write_samples(_OUTPUT, stamps, np.stack([r[2] for r in rows]))
        except (OSError, ValueError) as error:  # decoding goes on without the recording
            self.error = f"{type(error).__name__}: {error}"
            logger.error("recording to %s failed (%s); nothing more is recorded", self.path,
                         self.error)  # fmt: skip
            self._writer.abort()
            return
        self.bins += len(rows)
