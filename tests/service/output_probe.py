"""A separate process that reads a decoded LSL stream and records, for every sample, its
timestamp, its values and when it arrived (``pylsl.local_clock()``), so a test can judge the
output stream without its own threads disturbing the measurement.

Run as ``python output_probe.py NAME OUT.npz``; it reads until SIGTERM (or SIGINT), then
writes ``stamps``, ``arrivals`` and ``values``.
"""

from __future__ import annotations

import signal
import sys

import numpy as np
import pylsl


def main(name: str, out: str) -> None:
    stop = False

    def request_stop(*_: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    infos = pylsl.resolve_byprop("name", name, 1, 30.0)
    if not infos:
        raise SystemExit(f"stream {name} not found")
    inlet = pylsl.StreamInlet(infos[0], max_buflen=60)
    inlet.open_stream(10.0)
    print("ready", flush=True)
    stamps, arrivals, values = [], [], []
    while not stop:
        sample, stamp = inlet.pull_sample(timeout=0.1)
        if stamp is not None:
            arrivals.append(pylsl.local_clock())
            stamps.append(stamp)
            values.append(sample)
    np.savez(out, stamps=np.asarray(stamps), arrivals=np.asarray(arrivals),
             values=np.asarray(values, dtype=np.float32).reshape(len(values), -1))  # fmt: skip


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
