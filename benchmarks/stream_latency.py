"""LSL streaming through LslInlet's ring: push-to-ring latency and the highest sustained rate.

A separate process (``multiprocessing`` spawn) owns the outlet. It pushes, on a fixed
schedule, chunks of the samples that are due; the last sample of each chunk is stamped with
``pylsl.local_clock()`` at the push (liblsl derives the earlier ones from the nominal rate)
and flagged in channel 1. Channel 0 counts samples. The consumer runs a
:class:`streams.lsl_inlet.LslInlet` (acquisition thread woken by liblsl as samples arrive,
default settings) and, like the daemon, blocks in ``wait_for_data()`` and then reads
``read_new()``; when a flagged sample shows up it takes ``local_clock()`` and records
``now - stamp``: push to read by the consumer thread, on one machine and one clock.

- latency: 96 and 384 channels at 1 kHz (about one sample per push), p50 / p99 / max.
- sustained rate: for 96 and 384 channels the rate steps up (1, 2, 5, 10, 20, 30, 50 kHz, ...)
  for ``--seconds`` each. A rate is sustained when every sample arrives exactly once and in
  order (counter), nothing overflows the ring, the producer ended on schedule, and the
  latency in the last second stays under ``--max-latency-ms`` (a growing backlog shows as
  latency that grows without bound). A failed step is repeated ``--retries`` times (the
  machine may be shared); the sweep stops at the first rate that still fails. Target: 96
  channels sustained at 30 kHz, a rig's broadband.

Usage: ``python benchmarks/stream_latency.py [--seconds 3] [--json OUT]``.
"""

from __future__ import annotations

import argparse
import math
import multiprocessing
import time
import uuid
from dataclasses import dataclass
from typing import Any

import numpy as np
import pylsl

from streams.lsl_config import quiet_liblsl
from streams.lsl_inlet import LslInlet
from streams.lsl_outlet import open_outlet, wait_for_consumers
from streams.schedule import PushSchedule

_CTX = multiprocessing.get_context("spawn")
CHANNELS = (96, 384)
RATES = (1_000, 2_000, 5_000, 10_000, 20_000, 30_000, 50_000, 100_000, 200_000, 500_000)
BROADBAND = (96, 30_000)  # a rig's broadband: channels, rate (Hz) to be sustained
_MAX_PUSH = 4096  # samples per push_chunk at most


# --- producer process ----------------------------------------------------------------------


def _produce(
    name: str,
    source_id: str,
    n_channels: int,
    rate: float,
    n_samples: int,
    ready: Any,
    stop: Any,
    stats: Any,
) -> None:
    """Push ``n_samples`` on schedule ``t0 + k / rate``.

    ``stats`` = [pushed, largest lag behind the schedule (s), done flag, lag of the final push].
    """
    outlet = open_outlet(
        name,
        "Benchmark",
        ["counter", "stamped", *(f"ch{c}" for c in range(2, n_channels))],
        "a.u.",
        rate,
        source_id=source_id,
        component="stream_latency benchmark",
    )
    block = np.tile(np.arange(n_channels, dtype=np.float32), (_MAX_PUSH, 1))
    ready.set()
    if not wait_for_consumers([outlet], 60.0, stop):
        return
    time.sleep(0.2)  # let the inlet settle before the clock starts
    clock = pylsl.local_clock
    schedule = PushSchedule(clock(), rate, n_samples)

    def push(k: int, n: int) -> int:
        chunk = block[:n]
        chunk[:, 0] = np.arange(k, k + n, dtype=np.float32)
        chunk[:, 1] = 0.0
        chunk[-1, 1] = 1.0
        now = clock()
        lag = now - float(schedule.stamps(k + n - 1))  # how late the newest sample is pushed
        outlet.push_chunk(chunk, now)  # the last sample is stamped at the push
        stats[0] = k + n
        stats[1] = max(stats[1], lag)
        stats[3] = lag
        return n

    schedule.run(push, stop, chunk_max=_MAX_PUSH)
    stats[2] = 1.0
    stop.wait(30.0)  # keep the outlet open until the consumer has everything


# --- consumer -----------------------------------------------------------------------------


@dataclass
class Run:
    channels: int
    rate: int
    seconds: float
    pushed: int
    received: int
    order_errors: int
    overflowed: int
    producer_max_lag_ms: float
    producer_end_lag_ms: float
    latency_ms: np.ndarray
    latency_last_s_ms: np.ndarray
    wall_s: float

    @property
    def lost(self) -> int:
        return self.pushed - self.received

    def sustained(self, max_latency_ms: float) -> bool:
        return (
            self.lost == 0
            and self.order_errors == 0
            and self.overflowed == 0
            and self.producer_end_lag_ms < max_latency_ms  # the rate was really offered
            and self.latency_last_s_ms.size > 0
            and float(np.percentile(self.latency_last_s_ms, 99)) < max_latency_ms
        )

    def row(self, max_latency_ms: float) -> dict[str, Any]:
        lat = self.latency_ms if self.latency_ms.size else np.array([math.nan])
        last = self.latency_last_s_ms if self.latency_last_s_ms.size else np.array([math.nan])
        return {
            "channels": self.channels,
            "rate_hz": self.rate,
            "seconds": self.seconds,
            "pushed": self.pushed,
            "received": self.received,
            "lost": self.lost,
            "order_errors": self.order_errors,
            "overflowed": self.overflowed,
            "producer_max_lag_ms": self.producer_max_lag_ms,
            "producer_end_lag_ms": self.producer_end_lag_ms,
            "latency_p50_ms": float(np.percentile(lat, 50)),
            "latency_p99_ms": float(np.percentile(lat, 99)),
            "latency_max_ms": float(np.max(lat)),
            "last_second_p99_ms": float(np.percentile(last, 99)),
            "latency_samples": int(self.latency_ms.size),
            "sustained": self.sustained(max_latency_ms),
        }


def run_stream(channels: int, rate: int, seconds: float) -> Run:
    """One producer process at ``rate`` Hz for ``seconds``; consume through LslInlet."""
    n_samples = round(rate * seconds)
    tag = uuid.uuid4().hex[:10]
    name, source_id = f"bench-{channels}ch-{rate}hz-{tag}", f"bench-src-{tag}"
    ready, stop = _CTX.Event(), _CTX.Event()
    stats = _CTX.Array("d", 4, lock=False)
    producer = _CTX.Process(
        target=_produce,
        args=(name, source_id, channels, float(rate), n_samples, ready, stop, stats),
        daemon=True,
    )
    producer.start()
    try:
        if not ready.wait(60.0):
            raise RuntimeError(f"producer for {name} did not start")
        inlet = LslInlet(name=name, source_id=source_id, buffer_s=max(10.0, 2 * seconds))
        with inlet:
            if not inlet.wait_connected(30.0):
                raise RuntimeError(f"inlet did not connect: {inlet.state_message}")
            expected = 0
            order_errors = 0
            latencies: list[np.ndarray] = []
            stamps_of_latency: list[np.ndarray] = []
            started = time.monotonic()
            deadline = started + seconds + 30.0
            quiet_since = None
            while time.monotonic() < deadline:
                inlet.wait_for_data(0.1)
                data, stamps = inlet.read_new()
                now = pylsl.local_clock()
                if len(stamps):
                    quiet_since = None
                    counter = data[:, 0].astype(np.int64)
                    order_errors += int(
                        np.count_nonzero(counter != np.arange(expected, expected + len(counter)))
                    )
                    expected = int(counter[-1]) + 1
                    flagged = data[:, 1] == 1.0
                    latencies.append(now - stamps[flagged])
                    stamps_of_latency.append(stamps[flagged])
                    if expected >= n_samples:
                        break
                else:
                    done = stats[2] == 1.0
                    if done:  # the producer finished: wait briefly for stragglers
                        quiet_since = quiet_since or time.monotonic()
                        if time.monotonic() - quiet_since > 2.0:
                            break
            wall = time.monotonic() - started
            counters = inlet.counters()
    finally:
        stop.set()
        producer.join(10.0)
        if producer.is_alive():
            producer.kill()
            producer.join()
    latency = np.concatenate(latencies) * 1e3 if latencies else np.zeros(0)
    stamp_arr = np.concatenate(stamps_of_latency) if stamps_of_latency else np.zeros(0)
    last = latency[stamp_arr >= stamp_arr.max() - 1.0] if stamp_arr.size else np.zeros(0)
    return Run(
        channels=channels,
        rate=rate,
        seconds=seconds,
        pushed=int(stats[0]),
        received=int(counters.samples_written),
        order_errors=order_errors,
        overflowed=int(counters.overflowed),
        producer_max_lag_ms=float(stats[1]) * 1e3,
        producer_end_lag_ms=float(stats[3]) * 1e3,
        latency_ms=latency,
        latency_last_s_ms=last,
        wall_s=wall,
    )


def _parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="seconds per rate step (3)")
    parser.add_argument(
        "--latency-seconds", type=float, default=10.0, help="seconds of the 1 kHz runs (10)"
    )
    parser.add_argument(
        "--max-latency-ms",
        type=float,
        default=50.0,
        help="last-second p99 latency (and producer lag) a sustained rate stays under (50)",
    )
    parser.add_argument(
        "--retries", type=int, default=1, help="repeats of a failed step before stopping (1)"
    )
    parser.add_argument("--json", help="write results to this JSON file")
    return parser.parse_args()


def _sweep(args: argparse.Namespace) -> tuple[list[dict], dict[int, int | None]]:
    """Each channel count at rising rates until a step fails twice; the rows and the highest
    sustained rate per channel count."""
    rows: list[dict] = []
    highest: dict[int, int | None] = {}
    for channels in CHANNELS:
        highest[channels] = None
        for rate in RATES:
            for attempt in range(1 + max(args.retries, 0)):
                row = run_stream(channels, rate, args.seconds).row(args.max_latency_ms)
                row["attempt"] = attempt + 1
                rows.append(row)
                if row["sustained"]:
                    break
            if not row["sustained"]:
                break
            highest[channels] = rate
    return rows, highest


def main() -> None:
    quiet_liblsl()  # liblsl's own log lines stay out of the table
    # _common imports torch: keep it out of the producers
    from _common import print_table, verdict, write_json

    args = _parse_args()
    latency_rows = [
        run_stream(channels, 1_000, args.latency_seconds).row(args.max_latency_ms)
        for channels in CHANNELS
    ]
    print("push -> available in the LslInlet ring, 1 kHz, local_clock on one machine")
    print_table(
        ["channels", "rate Hz", "samples", "lost", "p50 ms", "p99 ms", "max ms"],
        [[r["channels"], r["rate_hz"], r["received"], r["lost"], r["latency_p50_ms"],
          r["latency_p99_ms"], r["latency_max_ms"]] for r in latency_rows],
    )  # fmt: skip
    sweep_rows, highest = _sweep(args)
    print(
        f"\nrate sweep, {args.seconds:g} s per step; a failed step is repeated "
        f"{args.retries} time(s), the sweep stops when it fails again"
    )
    print_table(
        ["channels", "rate Hz", "try", "pushed", "lost", "order err", "overflow",
         "producer lag max/end ms", "p50 ms", "p99 ms", "last s p99 ms", "sustained"],
        [[r["channels"], r["rate_hz"], r["attempt"], r["pushed"], r["lost"], r["order_errors"],
          r["overflowed"], f"{r['producer_max_lag_ms']:.1f} / {r['producer_end_lag_ms']:.1f}",
          r["latency_p50_ms"], r["latency_p99_ms"], r["last_second_p99_ms"],
          "yes" if r["sustained"] else "no"] for r in sweep_rows],
    )  # fmt: skip
    print()
    print_table(
        ["channels", "highest sustained rate Hz", "MB/s (float32)"],
        [[c, rate or 0, (rate or 0) * c * 4 / 1e6] for c, rate in highest.items()],
    )
    channels, rate = BROADBAND
    sustained = highest.get(channels) or 0
    broadband = verdict(
        f"{channels} channels sustained at {rate:,} Hz (broadband)",
        sustained >= rate,
        f"highest sustained {sustained:,} Hz",
    )
    write_json(
        args.json,
        {
            "benchmark": "stream_latency",
            "consumer": "wait_for_data",
            "seconds_per_step": args.seconds,
            "max_latency_ms": args.max_latency_ms,
            "latency": latency_rows,
            "sweep": sweep_rows,
            "highest_sustained_hz": {str(c): r for c, r in highest.items()},
            "verdicts": [broadband],
        },
    )


if __name__ == "__main__":
    main()
