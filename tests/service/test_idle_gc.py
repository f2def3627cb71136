"""Tests for service.idle_gc: garbage collection between bins instead of inside them."""

from __future__ import annotations

import gc
import uuid
import weakref
from collections.abc import Iterator
from pathlib import Path

import pytest
from factories import tiny_checkpoint
from serving import wait_for

from service.daemon import Daemon
from service.idle_gc import IdleCollector
from service.settings import Settings
from streams.player import simulate_stream
from streams.synthetic import SyntheticConfig


class Node:
    """A cycle member (only the cyclic collector frees it)."""

    def __init__(self) -> None:
        self.other: Node | None = None


def cyclic_garbage() -> weakref.ref:
    """A two-node cycle no one refers to; a weak reference to one of its nodes."""
    a, b = Node(), Node()
    a.other, b.other = b, a
    return weakref.ref(a)


@pytest.fixture
def automatic_collection() -> Iterator[None]:
    """Automatic collection on, thresholds as CPython's defaults, restored afterwards."""
    enabled, threshold = gc.isenabled(), gc.get_threshold()
    gc.enable()
    gc.set_threshold(700, 10, 10)
    yield
    gc.set_threshold(*threshold)
    (gc.enable if enabled else gc.disable)()


def test_inside_no_automatic_collection_and_start_objects_frozen(
    automatic_collection: None,
) -> None:
    with IdleCollector():
        assert not gc.isenabled()
        assert gc.get_freeze_count() > 0  # modules and all that lived at entry
        ref = cyclic_garbage()
        for _ in range(5_000):  # far past the young threshold: nothing collects on its own
            cyclic_garbage()
        assert ref() is not None
    assert gc.isenabled()
    assert gc.get_freeze_count() == 0


def test_collects_what_is_due_by_the_thresholds_and_frees_cycles(
    automatic_collection: None,
) -> None:
    with IdleCollector() as collector:
        gc.collect()
        assert collector.collect_due() is None  # nothing allocated since
        ref = cyclic_garbage()
        for _ in range(400):  # 800 nodes: past the young generation's 700
            cyclic_garbage()
        assert collector.collect_due() == 0
        assert ref() is None
        assert collector.collect_due() is None
        assert collector.collections == [1, 0, 0]


def test_an_older_generation_is_collected_once_its_count_passes_its_threshold(
    automatic_collection: None,
) -> None:
    with IdleCollector() as collector:
        generations = []
        for _ in range(13):
            for _ in range(400):
                cyclic_garbage()
            generations.append(collector.collect_due())
    # the middle generation's count passes 10 after the 11th young collection, as in CPython
    assert generations == [0] * 11 + [1, 0]
    assert collector.collections == [12, 1, 0]


def test_collection_switched_off_by_the_user_stays_off(automatic_collection: None) -> None:
    gc.set_threshold(0)
    with IdleCollector() as collector:
        for _ in range(1_000):
            cyclic_garbage()
        assert collector.collect_due() is None


def test_collectors_at_once_restore_the_process_state_when_the_last_exits(
    automatic_collection: None,
) -> None:
    first, second = IdleCollector(), IdleCollector()
    first.__enter__()
    second.__enter__()
    first.__exit__(None, None, None)
    assert not gc.isenabled()  # the second loop still runs
    assert gc.get_freeze_count() > 0
    second.__exit__(None, None, None)
    assert gc.isenabled()
    assert gc.get_freeze_count() == 0


@pytest.mark.timeout(120)
def test_a_decoding_daemon_collects_between_bins_and_restores_collection_at_stop(
    tmp_path: Path, automatic_collection: None
) -> None:
    """A real daemon owns collection while it decodes: cycles made meanwhile are still
    freed, and automatic collection is back once it stops."""
    name = f"bci-test-idle-gc-{uuid.uuid4().hex[:8]}"
    model = tiny_checkpoint(tmp_path / "m.safetensors", n_in=12, n_hidden=16, seed=0, rate=2.0)
    settings = Settings(stream=name, source_id=f"bci-player-{name}", model=model,
                        output_name=f"{name}-decoded", token="t")  # fmt: skip
    config = SyntheticConfig(n_channels=12, duration_s=30.0, seed=1)
    player = simulate_stream(config, name=name, speed=2.0, loop=True)
    daemon = Daemon(settings)
    try:
        player.start()
        daemon.start()
        assert wait_for(lambda: daemon.state == "decoding"), daemon.state_message
        assert not gc.isenabled()
        refs = [cyclic_garbage() for _ in range(2_000)]  # past the young generation's threshold
        assert wait_for(lambda: all(r() is None for r in refs)), "cycles not collected"
        assert sum(daemon._collector.collections) >= 1
    finally:
        player.stop()
        daemon.stop()
    assert gc.isenabled()
    assert gc.get_freeze_count() == 0
