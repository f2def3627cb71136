"""Serving helpers shared by the service tests: a real uvicorn server in a thread, small
trained checkpoints, a condition poller and a client of the decoded stream."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pylsl
import safetensors.numpy
import uvicorn
from fastapi import FastAPI

from bci.checkpoint import save_checkpoint, tensor_sha256
from bci.rsnn import RSNN, RSNNConfig
from bci.training import TrainConfig, train_rsnn
from service.daemon import Daemon
from streams.synthetic import SyntheticConfig, simulate_session

N_CHANNELS = 16


def wait_for(predicate: Callable[[], bool], timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def train_checkpoint(path: Path, seed: int) -> Path:
    session = simulate_session(SyntheticConfig(n_channels=N_CHANNELS, duration_s=40.0, seed=7))
    x, y = session.neural.astype(np.float32), session.kinematics.astype(np.float32)
    split = int(0.8 * len(x))
    model = RSNN(RSNNConfig(n_in=N_CHANNELS, n_hidden=32, n_out=2, dt_s=0.05), seed=seed)
    config = TrainConfig(window=40, burn_in=10, batch_size=8, max_steps=30, eval_every=10)
    train_rsnn(model, (x[:split], y[:split]), (x[split:], y[split:]), config)
    return save_checkpoint(path, model, kinematics_labels=("vx", "vy"))


@dataclass
class Served:
    name: str
    client: httpx.Client
    daemon: Daemon
    models: Path
    ids: dict[str, str]
    port: int


@contextmanager
def run_server(app: FastAPI) -> Iterator[int]:
    """Serve ``app`` with uvicorn in a thread on a free port; yields the port."""
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        assert wait_for(lambda: server.started, 30.0), "uvicorn did not start"
        yield server.servers[0].sockets[0].getsockname()[1]
    finally:
        server.should_exit = True
        thread.join(15.0)
    assert not thread.is_alive()


def free_port() -> int:
    """A TCP port on 127.0.0.1 free right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def rewrite(source: Path, out: Path, *, manifest: str | None = None, **tensors: tuple) -> Path:
    """A copy of checkpoint ``source`` with ``manifest`` as its manifest text, or with tensor
    entries set (``w_out=((0, 0), 1e38)``) and the checksum recomputed: only the intended
    defect remains."""
    raw = source.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + n])
    arrays = dict(safetensors.numpy.load(raw))
    for name, (index, value) in tensors.items():
        arrays[name][index] = value
    text = header["__metadata__"]["manifest"]
    if manifest is None:
        parsed = json.loads(text)
        parsed["sha256"] = tensor_sha256(arrays)
        manifest = json.dumps(parsed)
    safetensors.numpy.save_file(arrays, str(out), metadata={"manifest": manifest})
    return out


class OutputReader(threading.Thread):
    """A pylsl client of a decoded-kinematics stream that keeps every sample and its
    timestamp, recovering (by source_id) when the outlet is replaced."""

    def __init__(self, name: str) -> None:
        super().__init__(daemon=True)
        infos = pylsl.resolve_byprop("name", name, 1, 15.0)
        assert infos, f"decoded stream {name} not found"
        self.inlet = pylsl.StreamInlet(infos[0], max_buflen=60, recover=True)
        self.inlet.open_stream(10.0)
        self.values: list[list[float]] = []
        self.stamps: list[float] = []
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            samples, stamps = self.inlet.pull_chunk(timeout=0.1)
            self.values.extend(samples)
            self.stamps.extend(stamps)

    def finish(self) -> tuple[np.ndarray, np.ndarray]:
        """The samples received, ``(n, K)`` float32, and their timestamps ``(n,)`` (s)."""
        self.stop.set()
        self.join(5.0)
        self.inlet.close_stream()
        return np.asarray(self.values, dtype=np.float32), np.asarray(self.stamps)
