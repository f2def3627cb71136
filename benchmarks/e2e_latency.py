"""End-to-end latency of the decoding daemon against the floor of two LSL hops, one run.

Per input, all on one machine and one ``pylsl.local_clock``:

- pusher (``multiprocessing`` spawn): outlet ``<neural>`` (96 channels of Poisson counts at
  the sample rate) and ``<neural>-kinematics`` (vx, vy at the bin rate). Samples are stamped
  on a fixed grid, ``t0 + (k + 1) / sample_rate`` with ``t0`` a whole multiple of the bin
  width, and pushed when the local clock reaches their stamp (sleep, then spin), so each
  bin's last sample is stamped at the bin's end: the moment the bin closes. The target
  sample goes out with a bin's last sample, stamped alike.
- under test, either
  - ``relay``: a process that pulls each sample (blocking ``pull_sample``) and pushes it on,
    same stamp, to ``<out>-kinematics``: the physical floor of the path's two LSL hops; or
  - ``daemon``: ``bci serve --stream <neural> --model M --output-name <out> --port 0`` (with
    ``--adapt --target-stream <neural>-kinematics`` for adaptation on), whose decoder process
    bins the stream (one sample per bin, or 1 kHz counts summed into 20 ms bins) and stamps
    each output with the bin's end;
- reader (spawn): pulls ``<out>-kinematics`` with a blocking ``pull_sample``; per sample it
  records ``local_clock()`` at receipt minus the sample's timestamp: output received minus
  bin close. Outputs are matched to the bins' closing stamps (within a quarter sample
  period); others (the relay's other samples, zero-velocity holds) are not measured.

Optionally ``--dashboards 0,N`` runs each daemon case again with N dashboard clients in one
more process: each holds ``GET /api/v1/feed`` open (Server-Sent Events, parsed as they come)
and, as the page does, fetches ``/api/v1/model`` and ``/model/available`` when the model
changes.

Model: RSNN 96 inputs / 256 hidden / 2 outputs with the default ALIF fraction (0.5, as
``bci calibrate``), ``dt_s`` = the bin width, untrained, normalisation fitted on Poisson counts.

Usage: ``python benchmarks/e2e_latency.py [--rates 50,250] [--counts 1000:20] [--adapt on]
[--bins 3000] [--dashboards 0,5] [--json OUT]``.
Targets, measured in the same run (adaptation on, every input): p50 <= relay p50 + 0.15 ms and
p99 <= 1.5 x relay p99; with N dashboards, p99 <= 1.1 x p99 without.
"""

from __future__ import annotations

import argparse
import math
import multiprocessing
import os
import queue
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from e2e_processes import (
    N_IN,
    N_OUT,
    SPIKE_RATE_HZ,
    Input,
    load_dashboards,
    push,
    read_output,
    relay,
)

from streams.lsl_config import quiet_liblsl
from streams.lsl_outlet import KINEMATICS_SUFFIX

_CTX = multiprocessing.get_context("spawn")
N_HIDDEN = 256
TARGET_P50_EXTRA_MS = 0.15  # p50 <= relay p50 + this
TARGET_P99_FACTOR = 1.5  # p99 <= this x relay p99
TARGET_DASHBOARD_FACTOR = 1.1  # p99 with dashboards <= this x p99 without


# --- daemon --------------------------------------------------------------------------------


def make_checkpoint(folder: Path, bin_rate: float, seed: int = 0) -> Path:
    """An untrained 96/256/2 RSNN with ``dt_s = 1 / bin_rate`` and normalisation fitted on
    Poisson counts per bin, saved under ``folder``."""
    from bci.checkpoint import save_checkpoint
    from bci.rsnn import RSNN, RSNNConfig

    rng = np.random.default_rng(seed)
    config = RSNNConfig(n_in=N_IN, n_hidden=N_HIDDEN, n_out=N_OUT, dt_s=1.0 / bin_rate)
    model = RSNN(config, seed)
    model.fit_normalisation(
        rng.poisson(SPIKE_RATE_HZ / bin_rate, (2000, N_IN)).astype(np.float32),
        rng.standard_normal((2000, N_OUT)).astype(np.float32),
    )
    return save_checkpoint(
        folder / f"rsnn-{bin_rate:g}hz.safetensors", model, kinematics_labels=("vx", "vy")
    )


class Serve:
    """``bci serve`` in its own process group, output to files in ``logs``; a context manager
    that kills the group if :meth:`stop` did not end it."""

    def __init__(self, args: list[str], source_id: str, logs: Path) -> None:
        bci = Path(sys.executable).with_name("bci")
        if not bci.is_file():
            raise FileNotFoundError(f"{bci} not found: install the package (pip install -e .)")
        self.stdout_path, self.stderr_path = logs / "serve.out", logs / "serve.err"
        with self.stdout_path.open("w") as out, self.stderr_path.open("w") as err:
            self.proc = subprocess.Popen(
                [str(bci), "serve", *args],
                stdout=out,
                stderr=err,
                env={**os.environ, "BCI_SOURCE_ID": source_id},
                start_new_session=True,
            )

    def wait_url(self, timeout: float) -> str:
        """The API base URL once the daemon printed it and answers ``/health``."""
        deadline = time.monotonic() + timeout
        base = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"bci serve exited with {self.proc.returncode}: {self.tail()}")
            if base is None:
                for line in self.stdout_path.read_text().splitlines():
                    if line.startswith("serving http://"):
                        base = line.split()[1]
            if base is not None:
                try:
                    httpx.get(f"{base}/health", timeout=1.0).raise_for_status()
                    return base
                except httpx.HTTPError:
                    pass
            time.sleep(0.1)
        raise RuntimeError(f"bci serve did not answer within {timeout:g} s: {self.tail()}")

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGINT, then wait; the exit code, or None if it had to be killed."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self._kill()
                return None
        return self.proc.returncode

    def tail(self, chars: int = 2000) -> str:
        """The end of the daemon's stderr."""
        return self.stderr_path.read_text()[-chars:]

    def _kill(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait()

    def __enter__(self) -> Serve:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc.poll() is None:
            self._kill()


def _take(results: Any, tag: str, timeout: float, got: dict[str, Any]) -> dict[str, Any]:
    """The payload a child put under ``tag`` (others that arrive first are kept in ``got``)."""
    deadline = time.monotonic() + timeout
    while tag not in got:
        left = deadline - time.monotonic()
        if left <= 0:
            raise RuntimeError(f"no result from the {tag} process within {timeout:g} s")
        try:
            key, payload = results.get(timeout=min(left, 1.0))
        except queue.Empty:
            continue
        got[key] = payload
    if "error" in got[tag]:
        raise RuntimeError(f"{tag}: {got[tag]['error']}")
    return got[tag]


def _wait_ready(event: Any, timeout: float, results: Any, tag: str, got: dict) -> None:
    """Wait for a child's ``event``; on timeout raise with the child's reason if it gave one."""
    if not event.wait(timeout):
        _take(results, tag, 1.0, got)
        raise RuntimeError(f"the {tag} process is not ready after {timeout:g} s")


def _wait_decoding(base: str, timeout: float) -> str:
    """Poll ``/health`` until the daemon says decoding; the last state seen."""
    deadline = time.monotonic() + timeout
    state = "?"
    while time.monotonic() < deadline:
        try:
            state = httpx.get(f"{base}/health", timeout=2.0).json()["state"]
        except httpx.HTTPError:
            state = "unreachable"
        if state == "decoding":
            return state
        time.sleep(0.05)
    return state


def run_case(
    stream: Input,
    under_test: str,
    adapt: bool,
    dashboards: int,
    n_bins: int,
    warmup: int,
    model: Path,
    logs: Path,
    realtime: bool = False,
) -> dict[str, Any]:
    """One pusher, reader and ``under_test`` ("relay" or "daemon", with dashboards) run;
    ``realtime``: the relay and the decoder process at SCHED_FIFO priority (``--realtime``)."""
    tag = uuid.uuid4().hex[:8]
    neural, output, source_id = f"e2e-{tag}", f"e2e-out-{tag}", f"e2e-src-{tag}"
    n_total = warmup + n_bins
    stop, reader_ready, dash_ready, started, relay_ready = (_CTX.Event() for _ in range(5))
    results = _CTX.Queue()
    children: list[multiprocessing.process.BaseProcess] = []
    got: dict[str, Any] = {}
    case_logs = logs / f"{under_test}-{stream.sample_rate}-{stream.per_bin}-{dashboards}-{tag}"
    case_logs.mkdir()
    daemon_latency: dict[str, Any] = {"p50_ms": None, "p99_ms": None}
    exit_code: int | None = 0

    def spawn(target: Any, *targs: Any) -> None:
        child = _CTX.Process(target=target, args=(*targs, results), daemon=True)
        child.start()
        children.append(child)

    def measure(base: str | None) -> tuple[dict[str, Any], dict[str, Any]]:
        spawn(read_output, f"{output}{KINEMATICS_SUFFIX}", reader_ready, stop)
        _wait_ready(reader_ready, 45.0, results, "reader", got)
        if dashboards and base is not None:
            spawn(load_dashboards, base, dashboards, dash_ready, stop)
            _wait_ready(dash_ready, 30.0, results, "dashboards", got)
        wait_target_s = 5.0 if adapt else 0.0
        spawn(push, neural, source_id, stream, n_total, wait_target_s, 7, started, stop)
        _wait_ready(started, 70.0, results, "pusher", got)
        if base is not None and (state := _wait_decoding(base, 30.0)) != "decoding":
            raise RuntimeError(f"daemon state {state!r} after the pusher started")
        pushed = _take(results, "pusher", n_total / stream.bin_rate + 60.0, got)
        time.sleep(1.0)  # the last outputs reach the reader
        return pushed, base

    try:
        if under_test == "relay":
            spawn(relay, neural, f"{output}{KINEMATICS_SUFFIX}", stream.sample_rate,
                  realtime, relay_ready, stop)  # fmt: skip
            pushed, _ = measure(None)
            stop.set()
            _take(results, "relay", 30.0, got)
        else:
            args = ["--stream", neural, "--model", str(model), "--output-name", output]
            args += ["--port", "0", "--token", uuid.uuid4().hex]  # it prints the port it got
            if adapt:
                args += ["--adapt", "--target-stream", f"{neural}{KINEMATICS_SUFFIX}"]
            if realtime:
                args += ["--realtime"]
            with Serve(args, source_id, case_logs) as serve:
                try:
                    pushed, base = measure(serve.wait_url(60.0))
                    daemon_latency = httpx.get(f"{base}/metrics/latency", timeout=5.0).json()
                finally:
                    stop.set()
                    exit_code = serve.stop()
        read = _take(results, "reader", 30.0, got)
        dash = _take(results, "dashboards", 30.0, got) if dashboards else None
    finally:
        stop.set()
        for child in children:
            child.join(10.0)
            if child.is_alive():
                child.kill()
                child.join()
    row = _summarise(stream, warmup, pushed, read, dash, daemon_latency)
    return row | {"under_test": under_test, "adapt": adapt, "daemon_exit_code": exit_code,
                  "realtime": realtime}  # fmt: skip


def _match(sent: np.ndarray, stamps: np.ndarray, tolerance: float) -> np.ndarray:
    """Index of the closing stamp each output carries, or -1.

    Outputs arrive in order, so each is matched to the first not yet matched closing stamp
    within ``tolerance`` (s) of its own.
    """
    idx = np.full(len(stamps), -1, dtype=np.int64)
    j = 0
    for i, stamp in enumerate(stamps):
        while j < len(sent) and sent[j] < stamp - tolerance:
            j += 1
        if j < len(sent) and sent[j] <= stamp + tolerance:
            idx[i] = j
            j += 1
    return idx


def _summarise(
    stream: Input,
    warmup: int,
    pushed: dict[str, Any],
    read: dict[str, Any],
    dash: dict[str, Any] | None,
    daemon_latency: dict[str, Any],
) -> dict[str, Any]:
    """Match outputs to closed bins; latency from bin close over the measured bins (ms)."""
    sent, stamps, received = pushed["bin_ends"], read["stamps"], read["received"]
    idx = _match(sent, stamps, 0.25 / stream.sample_rate)
    measured = idx >= warmup
    latency = (received - stamps)[measured] * 1e3
    if not len(latency):
        latency = np.array([math.nan])
    n_measured = len(sent) - warmup
    n_received = int(measured.sum())
    p50, p99 = (float(v) for v in np.percentile(latency, [50, 99]))
    return {
        "input": stream.label,
        "sample_rate_hz": stream.sample_rate,
        "samples_per_bin": stream.per_bin,
        "dashboards": 0 if dash is None else dash["clients"],
        "bins": n_measured,
        "received": n_received,
        "lost": n_measured - n_received,
        "p50_ms": p50,
        "p99_ms": p99,
        "max_ms": float(np.max(latency)),
        "daemon_p50_ms": daemon_latency["p50_ms"],
        "daemon_p99_ms": daemon_latency["p99_ms"],
        "daemon_latency": daemon_latency,
        "push_lag_p99_ms": pushed["lag_p99_ms"],
        "push_lag_max_ms": pushed["lag_max_ms"],
        "target_stream_connected": pushed["target_connected"],
        "dashboard_clients": dash,
    }


def verdicts(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each daemon row against the relay of its input and, with dashboards, against the same
    case without: the targets of the module docstring, ``met`` or ``MISSED`` with the bound."""
    out = []
    for row in rows:
        if row["under_test"] != "daemon":
            continue
        same = [r for r in rows if r["input"] == row["input"]]
        relay = next(r for r in same if r["under_test"] == "relay")
        checks = {}
        if row["dashboards"] == 0:
            checks["p50 <= relay p50 + 0.15 ms"] = (
                row["p50_ms"],
                relay["p50_ms"] + TARGET_P50_EXTRA_MS,
            )
            checks["p99 <= 1.5 x relay p99"] = (row["p99_ms"], TARGET_P99_FACTOR * relay["p99_ms"])
        else:
            alone = next(r for r in same if r["under_test"] == "daemon" and r["adapt"] ==
                         row["adapt"] and r["dashboards"] == 0)  # fmt: skip
            checks["p99 <= 1.1 x p99 without dashboards"] = (
                row["p99_ms"],
                TARGET_DASHBOARD_FACTOR * alone["p99_ms"],
            )
        for name, (value, bound) in checks.items():
            applies = row["adapt"]  # the targets are set for adaptation on
            verdict = ("met" if value <= bound else "MISSED") if applies else "-"
            out.append({"input": row["input"], "adapt": row["adapt"],
                        "dashboards": row["dashboards"], "target": name, "value_ms": value,
                        "bound_ms": bound, "verdict": verdict})  # fmt: skip
    return out


def _int_list(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v.strip()]


def _adapt_list(text: str) -> list[bool]:
    choices = {"off": False, "on": True}
    values = [v.strip() for v in text.split(",") if v.strip()]
    if not values or any(v not in choices for v in values):
        raise argparse.ArgumentTypeError(f"--adapt takes off, on or off,on; got {text!r}")
    return [choices[v] for v in values]


def _counts(text: str) -> list[Input]:
    out = []
    for item in (v.strip() for v in text.split(",") if v.strip()):
        rate, _, bin_ms = item.partition(":")
        per_bin = round(float(rate) * float(bin_ms) / 1e3)
        if per_bin < 1 or abs(float(rate) * float(bin_ms) / 1e3 - per_bin) > 1e-9:
            raise argparse.ArgumentTypeError(
                f"--counts takes RATE_HZ:BIN_MS with a whole number of samples per bin; "
                f"got {item!r}"
            )
        out.append(Input(int(rate), per_bin))
    return out


def _parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", type=_int_list, default="50,250",
                        help="per-bin input rates, Hz (50,250)")  # fmt: skip
    parser.add_argument("--counts", type=_counts, default="1000:20",
                        help="counts inputs RATE_HZ:BIN_MS (1000:20; '' for none)")  # fmt: skip
    parser.add_argument("--adapt", type=_adapt_list, default="on", help="off, on or off,on")
    parser.add_argument("--bins", type=int, default=3000, help="measured bins per case (3000)")
    parser.add_argument("--warmup", type=int, default=200, help="discarded bins first (200)")
    parser.add_argument(
        "--dashboards",
        type=_int_list,
        default="0,5",
        help="dashboard client counts to run each daemon case with (0,5)",
    )
    parser.add_argument(
        "--realtime",
        action="store_true",
        help="the decoder process (bci serve --realtime) and the relay at SCHED_FIFO priority",
    )
    parser.add_argument("--json", help="write results to this JSON file")
    args = parser.parse_args()
    if args.bins < 1 or args.warmup < 0 or any(r <= 0 for r in args.rates):
        parser.error("--bins and --rates must be positive, --warmup >= 0")
    return args


def _run_all(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Per input: the relay, then the daemon for each adaptation and dashboard setting."""
    inputs = [Input(rate, 1) for rate in args.rates] + args.counts
    rows = []
    with tempfile.TemporaryDirectory(prefix="e2e-latency-") as tmp:
        folder = Path(tmp)
        for stream in inputs:
            model = make_checkpoint(folder, stream.bin_rate)
            cases = [("relay", False, 0)] + [("daemon", adapt, n) for adapt in args.adapt
                                             for n in args.dashboards]  # fmt: skip
            for under_test, adapt, n in cases:
                row = run_case(stream, under_test, adapt, n, args.bins, args.warmup, model,
                               folder, args.realtime)  # fmt: skip
                rows.append(row)
                print(
                    f"{stream.label} {under_test} adapt {'on' if adapt else 'off'} "
                    f"dashboards {n}: p50 {row['p50_ms']:.3f} ms p99 {row['p99_ms']:.3f} ms, "
                    f"lost {row['lost']}",
                    flush=True,
                )

    return rows


def main() -> None:
    quiet_liblsl()  # liblsl's own log lines stay out of the table
    from bci.config import RSNNConfig

    from _common import print_table, write_json

    args = _parse_args()
    # SIGTERM unwinds like Ctrl-C, so every case's finally stops its daemon and children
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    load_at_start = os.getloadavg()
    rows = _run_all(args)
    print(
        f"\nbin close (its last sample's stamp) -> output received over LSL, {args.bins} bins "
        f"per case after {args.warmup} warm-up; daemon = its /metrics/latency (push to its "
        "outlet)" + ("; decoder and relay at SCHED_FIFO priority" if args.realtime else "")
    )
    print_table(
        ["input", "under test", "adapt", "dash", "bins", "lost", "p50 ms", "p99 ms", "max ms",
         "daemon p50 ms", "daemon p99 ms", "push lag max ms"],
        [[r["input"], r["under_test"], "on" if r["adapt"] else "off", r["dashboards"],
          r["bins"], r["lost"], r["p50_ms"], r["p99_ms"], r["max_ms"], r["daemon_p50_ms"],
          r["daemon_p99_ms"], r["push_lag_max_ms"]] for r in rows],
    )  # fmt: skip
    checks = verdicts(rows)
    print("\ntargets (adaptation on; the relay measured in the same run)")
    print_table(
        ["input", "adapt", "dash", "target", "value ms", "bound ms", "verdict"],
        [[c["input"], "on" if c["adapt"] else "off", c["dashboards"], c["target"],
          c["value_ms"], c["bound_ms"], c["verdict"]] for c in checks],
    )  # fmt: skip
    missed = [c for c in checks if c["verdict"] == "MISSED"]
    print(f"verdict: {'all targets met' if not missed else f'{len(missed)} target(s) MISSED'}")
    for r in rows:
        case = f"{r['input']} {r['under_test']} dash {r['dashboards']}"
        if r["daemon_exit_code"] != 0:
            print(f"warning: {case}: bci serve exited with {r['daemon_exit_code']} on SIGINT")
        if r["under_test"] == "daemon" and r["adapt"] and not r["target_stream_connected"]:
            print(f"note: {case}: the daemon never connected to the target stream")
    config = RSNNConfig(n_in=N_IN, n_hidden=N_HIDDEN, n_out=N_OUT)  # default ALIF fraction
    write_json(
        args.json,
        {
            "benchmark": "e2e_latency",
            "cpu_count": os.cpu_count(),
            "load_average": {"start": load_at_start, "end": os.getloadavg()},  # 1, 5, 15 min
            "bins": args.bins,
            "warmup": args.warmup,
            "realtime": args.realtime,
            "model": {
                "n_in": N_IN,
                "n_hidden": N_HIDDEN,
                "n_out": N_OUT,
                "alif_fraction": config.alif_fraction,
                "n_alif": config.n_alif,
                "trained": False,
            },
            "spike_rate_hz": SPIKE_RATE_HZ,
            "targets": {
                "p50_extra_ms": TARGET_P50_EXTRA_MS,
                "p99_factor": TARGET_P99_FACTOR,
                "dashboard_factor": TARGET_DASHBOARD_FACTOR,
                "adapt": True,
            },
            "cases": rows,
            "verdicts": checks,
        },
    )


if __name__ == "__main__":
    main()
