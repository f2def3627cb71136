"""Where a bin's time goes inside the decoder loop: the stages between a sample's stamp and
its decoded bin's push, timed in one process.

The e2e pusher (``e2e_processes.push``: 96-channel Poisson counts on a fixed stamp grid, one
sample per bin, the target velocity with it) feeds a :class:`service.daemon.Daemon` that runs
its real-time loop on this process's main thread, as the decoder process does (no API
process: the loop alone). The script wraps, for this run only, the calls below with
``perf_counter`` timers (about 1 µs each) and reports medians and p90s over the bins after
the warm-up:

- ``stamp -> pull returns``: the loop's blocking ``pull_sample`` returns, minus the sample's
  stamp (the first LSL hop, as the relay of ``e2e_latency.py`` pays it);
- ``pull returns -> push starts``: from there to the decoded bin's ``push`` (inlet
  bookkeeping and ring, front-end, engine, output checks): the decoder's own share;
- the parts: ``LslInlet._accept`` (timestamp audit, ring write), ``FrontEnd.feed``, the
  decode kernel (``OnlineRSNN.advance``) for the bin, and for ``Engine.prewarm``'s scratch bin
  half a millisecond before it, ``KinematicsOutlet.push`` and liblsl's ``push_sample`` in it.

It also reports the loop thread's garbage collections after the warm-up (a ``gc.callbacks``
probe): how many of each generation, their median and longest pause, and how many fell
between a bin's pull and its push (the loop runs them between bins: ``service/idle_gc.py``).

Target (the budget ``e2e_latency.py``'s p50 target leaves the decoder beyond the relay's two
hops): ``pull returns -> push starts`` p50 <= 0.15 ms.

With ``--per-bin N`` each bin is N samples (1 kHz counts into 20 ms bins: ``--rate 1000
--per-bin 20``); the inlet and front-end stages then run once per sample, and a bin's push is
matched to the pull of its last sample.

Usage: ``python benchmarks/loop_stages.py [--rate 250] [--per-bin 1] [--bins 2000]
[--warmup 300] [--adapt off|on] [--json OUT]``.
"""

from __future__ import annotations

import argparse
import gc
import multiprocessing
import tempfile
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pylsl
from e2e_latency import make_checkpoint
from e2e_processes import Input, push

from streams.lsl_config import quiet_liblsl

TARGET_LOOP_P50_US = 150.0
_CTX = multiprocessing.get_context("spawn")


class CollectionProbe:
    """(generation, start, duration) of each garbage collection on the loop's thread, on
    ``perf_counter`` (s), while installed in ``gc.callbacks``."""

    def __init__(self, thread: int) -> None:
        self.collections: list[tuple[int, float, float]] = []
        self._thread, self._start = thread, 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if threading.get_ident() != self._thread:
            return
        if phase == "start":
            self._start = time.perf_counter()
        else:
            self.collections.append(
                (info["generation"], self._start, time.perf_counter() - self._start)
            )


class StageTimer:
    """``perf_counter`` (start, duration) pairs (s) of wrapped methods called on the thread
    that made the timer (the loop's; the target inlet's thread is not timed), per label."""

    def __init__(self) -> None:
        self.durations: dict[str, list[tuple[float, float]]] = defaultdict(list)
        self._restore: list[tuple[type, str, Callable]] = []
        self.thread = threading.get_ident()

    def wrap(self, cls: type, name: str, label: str) -> None:
        original = getattr(cls, name)
        durations = self.durations[label]
        clock, thread, get_ident = time.perf_counter, self.thread, threading.get_ident

        def timed(*args: Any, **kwargs: Any) -> Any:
            if get_ident() != thread:
                return original(*args, **kwargs)
            start = clock()
            try:
                return original(*args, **kwargs)
            finally:
                durations.append((start, clock() - start))

        self.replace(cls, name, timed)

    def replace(self, cls: type, name: str, function: Callable) -> None:
        """Put ``function`` in place of ``cls.name`` until :meth:`restore`."""
        self._restore.append((cls, name, getattr(cls, name)))
        setattr(cls, name, function)

    def restore(self) -> None:
        for cls, name, original in reversed(self._restore):
            setattr(cls, name, original)


def _instrument(timer: StageTimer, pulls: list, pushes: list) -> None:
    """Wrap the loop's stages; ``pulls`` gets (stamp, local time) of each sample the main
    thread's ``pull_sample`` returns, ``pushes`` (stamp, local time) of each decoded push."""
    from bci.online import OnlineRSNN
    from service.engine import Engine
    from streams.frontend import FrontEnd
    from streams.lsl_inlet import LslInlet
    from streams.lsl_outlet import KinematicsOutlet

    main = timer.thread
    pull_sample, outlet_push = pylsl.StreamInlet.pull_sample, KinematicsOutlet.push

    def pulled(self: pylsl.StreamInlet, *args: Any, **kwargs: Any) -> Any:
        sample, stamp = pull_sample(self, *args, **kwargs)
        if stamp is not None and threading.get_ident() == main:
            pulls.append((stamp, pylsl.local_clock(), time.perf_counter()))
        return sample, stamp

    def pushed(self: KinematicsOutlet, values: Any, timestamp: float | None = None) -> None:
        if timestamp is not None:  # a decoded bin (holds carry no stamp)
            pushes.append((timestamp, pylsl.local_clock(), time.perf_counter()))
        outlet_push(self, values, timestamp)

    timer.replace(pylsl.StreamInlet, "pull_sample", pulled)
    timer.replace(KinematicsOutlet, "push", pushed)
    timer.wrap(LslInlet, "_accept", "LslInlet._accept (audit, ring)")
    timer.wrap(FrontEnd, "feed", "FrontEnd.feed")
    timer.wrap(OnlineRSNN, "advance", "decode kernel, the bin")
    timer.wrap(Engine, "prewarm", "decode kernel, prewarm")
    kernel, timed_prewarm = timer.durations["decode kernel, the bin"], Engine.prewarm

    def prewarm(self: Engine) -> None:  # its kernel call is timed as the prewarm's
        before = len(kernel)
        timed_prewarm(self)
        del kernel[before:]

    timer.replace(Engine, "prewarm", prewarm)
    timer.wrap(KinematicsOutlet, "push", "KinematicsOutlet.push")
    timer.wrap(pylsl.StreamOutlet, "push_sample", "  liblsl push_sample")


def run(stream: Input, n_bins: int, warmup: int, adapt: bool) -> dict[str, Any]:
    """Decode ``warmup + n_bins`` pushed bins in this process; per-stage statistics (µs)."""
    from service.daemon import Daemon
    from service.settings import Settings

    timer, pulls, pushes = StageTimer(), [], []
    probe = CollectionProbe(timer.thread)
    tag = uuid.uuid4().hex[:8]
    name, source_id = f"stages-{tag}", f"stages-src-{tag}"
    with tempfile.TemporaryDirectory(prefix="loop-stages-") as tmp:
        learning = {"adapt": True, "target_stream": f"{name}-kinematics"} if adapt else {}
        model = make_checkpoint(Path(tmp), stream.bin_rate)
        settings = Settings(stream=name, source_id=source_id, output_name=f"{name}-out",
                            model=model, token="t", **learning)  # fmt: skip
        started, stop, results = _CTX.Event(), _CTX.Event(), _CTX.Queue()
        pusher = _CTX.Process(target=push, daemon=True, args=(name, source_id, stream,
                              warmup + n_bins, 5.0 if adapt else 0.0, 7, started, stop,
                              results))  # fmt: skip
        seconds = (warmup + n_bins) / stream.bin_rate + 1.0
        _instrument(timer, pulls, pushes)
        gc.callbacks.append(probe)
        try:
            daemon = Daemon(settings).prepare()
            pusher.start()

            def stop_when_pushed() -> None:  # the pusher waits for the loop's inlet
                if started.wait(70.0):
                    time.sleep(seconds)
                daemon.request_stop()

            threading.Thread(target=stop_when_pushed, daemon=True).start()
            daemon.run()  # returns at request_stop, streams closed
        finally:
            gc.callbacks.remove(probe)
            timer.restore()
            stop.set()
            if pusher.pid is not None:
                pusher.join(10.0)
        warm = _back_to_back(model, n_bins)
    if not started.is_set():
        raise RuntimeError("the pusher did not start within 70 s")
    pulls, pushes = np.array(pulls), np.array(pushes)
    result, paths = _summarise(timer, pulls, pushes, warmup, stream.sample_rate)
    result["stages"]["decode kernel, back to back"] = warm
    result["collections"] = _collections(probe, paths)
    return result


def _collections(probe: CollectionProbe, paths: np.ndarray) -> list[dict[str, Any]]:
    """Per generation: the loop thread's collections after the warm-up, their median and
    longest pause (ms), and how many began on a bin's path (``paths``: (pull returned, push
    started) of each matched bin, ``perf_counter`` s)."""
    if not len(paths):
        return []
    found = np.array(probe.collections, dtype=float).reshape(-1, 3)
    found = found[found[:, 1] >= paths[0, 0]]
    # the path that starts last before each collection: does it end after the collection?
    k = np.searchsorted(paths[:, 0], found[:, 1], side="right") - 1
    on_path = (k >= 0) & (found[:, 1] < paths[np.maximum(k, 0), 1])
    rows = []
    for generation in range(3):
        mine = found[:, 0] == generation
        pauses = found[mine, 2] * 1e3
        rows.append({"generation": generation, "n": int(mine.sum()),
                     "median_ms": float(np.median(pauses)) if len(pauses) else 0.0,
                     "max_ms": float(pauses.max()) if len(pauses) else 0.0,
                     "between_pull_and_push": int(on_path[mine].sum())})  # fmt: skip
    return rows


def _back_to_back(model: Path, n: int) -> dict[str, Any]:
    """The kernel's floor: ``n`` steps in a row (weights and code in the caches), µs."""
    from bci.checkpoint import load_decoder

    from _common import time_calls

    decoder = load_decoder(model).decoder
    state, x = decoder.initial_state(), decoder.normalisation[0].copy()
    for _ in range(100):
        decoder.step(x, state)
    ns = time_calls(lambda _: decoder.step(x, state), n)
    p50, p90 = np.percentile(ns, [50, 90]) / 1e3
    return {"n": n, "p50_us": float(p50), "p90_us": float(p90)}


def _summarise(
    timer: StageTimer, pulls: np.ndarray, pushes: np.ndarray, warmup: int, sample_rate: float
) -> tuple[dict[str, Any], np.ndarray]:
    """Match each decoded push to the pull of its bin's last sample (the nearest stamp, within
    a quarter sample period: the push carries it mapped to the local clock, tens of µs off)
    and reduce every stage after the warm-up to p50 / p90; also (pull returned, push
    started) of each matched bin (``perf_counter`` s)."""
    pushes = pushes[warmup:]
    after = np.clip(np.searchsorted(pulls[:, 0], pushes[:, 0]), 1, len(pulls) - 1)
    before = after - 1
    k = np.where(pulls[after, 0] - pushes[:, 0] < pushes[:, 0] - pulls[before, 0], after, before)
    matched = np.abs(pulls[k, 0] - pushes[:, 0]) < 0.25 / sample_rate
    hop = pulls[k[matched], 1] - pulls[k[matched], 0]
    loop = pushes[matched, 1] - pulls[k[matched], 1]
    paths = np.column_stack((pulls[k[matched], 2], pushes[matched, 2]))
    stages = {"stamp -> pull returns": hop, "pull returns -> push starts": loop}
    after_warmup = pushes[0, 2]  # perf_counter time of the first measured bin's push
    for label, timed in timer.durations.items():
        starts, durations = np.asarray(timed).reshape(-1, 2).T
        stages[label] = durations[starts >= after_warmup]
    rows = {}
    for label, d in stages.items():
        if len(d):
            p50, p90 = np.percentile(d, [50, 90]) * 1e6
            rows[label] = {"n": len(d), "p50_us": float(p50), "p90_us": float(p90)}
    return {"bins_matched": int(matched.sum()), "stages": rows}, paths


def main() -> None:
    from _common import print_table, verdict, write_json  # torch: not in the pusher's import

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=int, default=250, help="samples per second (250)")
    parser.add_argument(
        "--per-bin",
        type=int,
        default=1,
        help="samples per bin (1; 1 kHz counts, 20 ms bins: --rate 1000 --per-bin 20)",
    )
    parser.add_argument("--bins", type=int, default=2000, help="measured bins (2000)")
    parser.add_argument("--warmup", type=int, default=300, help="discarded bins first (300)")
    parser.add_argument("--adapt", choices=("off", "on"), default="on",
                        help="e-prop from the pushed target stream (on)")  # fmt: skip
    parser.add_argument("--json", help="write results to this JSON file")
    args = parser.parse_args()
    if min(args.bins, args.rate, args.per_bin) < 1 or args.warmup < 0:
        parser.error("--bins, --rate and --per-bin must be positive, --warmup >= 0")
    quiet_liblsl()
    stream = Input(args.rate, args.per_bin)
    result = run(stream, args.bins, args.warmup, args.adapt == "on")
    print(f"\n{stream.label}, adaptation {args.adapt}, {result['bins_matched']} bins "
          f"matched after {args.warmup} warm-up")  # fmt: skip
    print_table(["stage", "n", "p50 µs", "p90 µs"],
                [[label, s["n"], s["p50_us"], s["p90_us"]]
                 for label, s in result["stages"].items()])  # fmt: skip
    print("\ngarbage collections on the loop's thread, after the warm-up")
    print_table(["generation", "n", "median ms", "max ms", "between pull and push"],
                [[c["generation"], c["n"], c["median_ms"], c["max_ms"],
                  c["between_pull_and_push"]] for c in result["collections"]])  # fmt: skip
    loop = result["stages"]["pull returns -> push starts"]["p50_us"]
    met = loop <= TARGET_LOOP_P50_US
    check = verdict(f"pull returns -> push starts p50 <= {TARGET_LOOP_P50_US:g} µs", met,
                    f"{loop:.0f} µs" + ("" if met else f", {loop - TARGET_LOOP_P50_US:.0f} µs "
                                        "over"))  # fmt: skip
    write_json(args.json, {"benchmark": "loop_stages", "input": stream.label,
                           "adapt": args.adapt == "on", "bins": args.bins,
                           "warmup": args.warmup, **result, "verdict": check})  # fmt: skip


if __name__ == "__main__":
    main()
