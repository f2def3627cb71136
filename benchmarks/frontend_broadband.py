"""Broadband input front-end: 30 kHz x 96 channels of voltage into threshold-crossing bins.

The synthetic population (:mod:`streams.synthetic`, 20 ms bins) is rendered as broadband
voltage (:func:`streams.native_rate.render_broadband`: Gaussian noise plus one spike waveform
per simulated spike) and fed to :class:`streams.frontend.FrontEnd` in chunks of ``--chunk-ms``
(1 ms: the packets a rig sends). After the calibration (2 s) every bin's crossings are matched
to the spikes injected into it, per bin and channel: found = sum min(crossings, injected),
false = sum max(crossings - injected, 0).

- ``offline``: CPU seconds (``time.process_time`` around the front-end calls only) per second
  of signal; samples in == samples processed (calibration + binned, none late or held).
- ``lsl``: the player process publishes the same kind of signal at 30 kHz over loopback; this
  process pulls it with a pylsl inlet and feeds the front-end as it arrives. Samples received
  == pushed; CPU of this whole process (inlet included) and of the front-end alone, per
  second of signal; the largest delay between a sample's timestamp and its pull.

Usage: ``python benchmarks/frontend_broadband.py [--seconds 30] [--chunk-ms 1,10]
[--lsl-seconds 10] [--json OUT]``.
Targets: <= 0.30 CPU s per s of signal; >= 95 % of the injected spikes found; <= 5 % of the
crossings false; no sample lost.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pylsl

from streams.frontend import Bins, FrontEnd
from streams.lsl_config import quiet_liblsl
from streams.native_rate import render_broadband, spike_amplitudes
from streams.player import SessionPlayer
from streams.synthetic import SyntheticConfig, simulate_session

from _common import print_table, write_json

RATE_HZ = 30_000.0
BIN_S = 0.02
CALIBRATION_S = 2.0
TARGET_CPU = 0.30
TARGET_FOUND = 0.95
TARGET_FALSE = 0.05


def _match(bins: Bins, origin: float, injected: np.ndarray) -> dict[str, float]:
    """Crossings per bin against the spikes injected (``injected[k]`` is the bin ending at
    ``origin + k * BIN_S``)."""
    k = np.rint((bins.end_times - origin) / BIN_S).astype(np.int64)
    inside = (k >= 0) & (k < injected.shape[0])
    truth, found = injected[k[inside]], bins.data[inside]
    n_found = float(np.minimum(found, truth).sum())
    n_false = float(np.maximum(found - truth, 0).sum())
    return {
        "bins": int(inside.sum()),
        "spikes_injected": int(truth.sum()),
        "spikes_found": int(n_found),
        "false_crossings": int(n_false),
        "found_fraction": n_found / max(float(truth.sum()), 1.0),
        "false_fraction": n_false / max(float(found.sum()), 1.0),
    }


def bench_offline(seconds: float, n_channels: int, chunk_ms: float, seed: int) -> dict:
    total_s = seconds + CALIBRATION_S
    config = SyntheticConfig(n_channels=n_channels, bin_s=BIN_S, duration_s=total_s, seed=seed)
    counts = simulate_session(config).neural
    rng = np.random.default_rng(seed)
    amplitudes = spike_amplitudes(n_channels, rng)
    origin = 1000.0  # bin k ends at origin + k * BIN_S (a whole multiple of the bin width)
    front = FrontEnd(
        "broadband", BIN_S, n_channels, sample_rate_hz=RATE_HZ, calibration_s=CALIBRATION_S
    )
    chunk = max(1, round(chunk_ms * 1e-3 * RATE_HZ))
    block = 50  # bins rendered at a time (1 s)
    injected = np.zeros_like(counts, dtype=np.int64)
    parts, cpu, fed = [], 0.0, 0
    for b in range(0, counts.shape[0], block):
        ends = origin + BIN_S * (np.arange(b, min(b + block, counts.shape[0])) + 1)
        signal = render_broadband(counts[b : b + block], ends, BIN_S, RATE_HZ, amplitudes, rng)
        injected[b : b + block] = signal.injected
        for a in range(0, signal.stamps.shape[0], chunk):
            started = time.process_time()
            parts.append(front.feed(signal.voltage[a : a + chunk], signal.stamps[a : a + chunk]))
            cpu += time.process_time() - started
        fed += signal.stamps.shape[0]
    parts.append(front.flush(origin + BIN_S * (counts.shape[0] + 1)))
    bins = Bins(*(np.concatenate([getattr(p, f) for p in parts]) for f in Bins._fields))
    counters = front.counters()
    processed = counters["calibration_samples"] + counters["samples_binned"]
    return {
        "leg": "offline",
        "chunk_ms": chunk_ms,
        "signal_s": total_s,
        "cpu_s_per_s": cpu / total_s,
        "samples_in": fed,
        "samples_processed": processed,
        "samples_lost": fed - processed,
        "late": counters["late"],
        **_match(bins, origin + BIN_S, injected),
    }


def bench_lsl(seconds: float, n_channels: int, seed: int) -> dict:
    total_s = seconds + CALIBRATION_S
    config = SyntheticConfig(n_channels=n_channels, bin_s=BIN_S, duration_s=total_s, seed=seed)
    counts = simulate_session(config).neural
    name = f"bench-broadband-{time.monotonic_ns()}"
    player = SessionPlayer(
        config,
        name=name,
        input_kind="broadband",
        wait_for_consumers=30.0,
        wait_for=("neural",),
        chunk_max=4,
    )
    with player:
        found = pylsl.resolve_byprop("name", name, minimum=1, timeout=30.0)
        inlet = pylsl.StreamInlet(found[0], max_buflen=30)
        inlet.open_stream(timeout=30.0)
        front = FrontEnd(
            "broadband", BIN_S, n_channels, sample_rate_hz=RATE_HZ, calibration_s=CALIBRATION_S
        )
        parts, front_cpu, received, max_delay = [], 0.0, 0, 0.0
        cpu_start = time.process_time()
        idle_since = None
        while True:
            data, stamps = inlet.pull_chunk(timeout=0.002, max_samples=8192, as_numpy=True)
            if len(stamps):
                idle_since = None
                max_delay = max(max_delay, pylsl.local_clock() - float(stamps[-1]))
                received += len(stamps)
                started = time.process_time()
                parts.append(front.feed(data, stamps))
                front_cpu += time.process_time() - started
            elif player.finished:
                idle_since = idle_since or time.monotonic()
                if time.monotonic() - idle_since > 0.5:
                    break
        cpu = time.process_time() - cpu_start
        pushed = player.counters()["pushed"][name]
        origin = player.start_time
    parts.append(front.flush(pylsl.local_clock()))
    bins = Bins(*(np.concatenate([getattr(p, f) for p in parts]) for f in Bins._fields))
    counters = front.counters()
    return {
        "leg": "lsl",
        "chunk_ms": float("nan"),
        "signal_s": total_s,
        "cpu_s_per_s": front_cpu / total_s,
        "process_cpu_s_per_s": cpu / total_s,
        "samples_in": pushed,
        "samples_processed": counters["calibration_samples"] + counters["samples_binned"],
        "samples_lost": pushed - received,
        "late": counters["late"],
        "max_pull_delay_ms": 1e3 * max_delay,
        **_match(bins, origin, counts.astype(np.int64)),
    }


def verdict(row: dict) -> str:
    ok = (
        row["cpu_s_per_s"] <= TARGET_CPU
        and row["found_fraction"] >= TARGET_FOUND
        and row["false_fraction"] <= TARGET_FALSE
        and row["samples_lost"] == 0
        and row["samples_in"] == row["samples_processed"]
    )
    return "PASS" if ok else "FAIL"


def main() -> None:
    quiet_liblsl()  # liblsl's own log lines stay out of the table
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30.0, help="signal after calibration")
    parser.add_argument("--channels", type=int, default=96)
    parser.add_argument("--chunk-ms", default="1,10", help="offline chunk sizes, comma-separated")
    parser.add_argument(
        "--lsl-seconds", type=float, default=10.0, help="LSL leg after calibration (0: skip)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", help="write results to this JSON file")
    args = parser.parse_args()
    rows = [
        bench_offline(args.seconds, args.channels, float(ms), args.seed)
        for ms in args.chunk_ms.split(",")
    ]
    if args.lsl_seconds > 0:
        rows.append(bench_lsl(args.lsl_seconds, args.channels, args.seed))
    for row in rows:
        row["verdict"] = verdict(row)
    print(
        f"broadband front-end: {args.channels} channels at {RATE_HZ:g} Hz, {BIN_S * 1e3:g} ms "
        f"bins, {CALIBRATION_S:g} s calibration"
    )
    print_table(
        [
            "leg",
            "chunk ms",
            "signal s",
            "CPU s / s",
            "samples in",
            "processed",
            "lost",
            "injected",
            "found",
            "false",
            "found %",
            "false %",
            "verdict",
        ],
        [
            [
                r["leg"],
                "as pulled" if r["leg"] == "lsl" else f"{r['chunk_ms']:g}",
                f"{r['signal_s']:g}",
                r["cpu_s_per_s"],
                r["samples_in"],
                r["samples_processed"],
                r["samples_lost"],
                r["spikes_injected"],
                r["spikes_found"],
                r["false_crossings"],
                f"{100 * r['found_fraction']:.2f}",
                f"{100 * r['false_fraction']:.2f}",
                r["verdict"],
            ]
            for r in rows
        ],
    )
    for r in rows:
        if r["leg"] == "lsl":
            print(
                f"lsl: this process (inlet + front-end) used {r['process_cpu_s_per_s']:.3f} CPU "
                f"s per s; largest pull delay {r['max_pull_delay_ms']:.1f} ms"
            )
    print(
        f"targets: CPU <= {TARGET_CPU:g} s per s, found >= {100 * TARGET_FOUND:g} %, false <= "
        f"{100 * TARGET_FALSE:g} %, no sample lost: "
        + ("PASS" if all(r["verdict"] == "PASS" for r in rows) else "FAIL")
    )
    write_json(args.json, {"benchmark": "frontend_broadband", "rows": rows})


if __name__ == "__main__":
    main()
