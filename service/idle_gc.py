"""Python's cyclic garbage collection, moved off the decode path.

CPython collects a generation whenever the count of container objects allocated since the last
collection passes a threshold: at whatever line allocates, including between a sample's pull
and its decoded bin's push. In the decoder loop at 250 Hz with adaptation on
(``benchmarks/loop_stages.py``, which probes them) a young-generation collection came about
every 100 bins and took 0.06-0.1 ms, a middle one 0.1-0.6 ms, and about one in 14 fell on a
bin's path.

:class:`IdleCollector` turns automatic collection off while the loop runs; the loop calls
:meth:`IdleCollector.collect_due` between bins, after the push, and it runs the collection that
CPython's thresholds say is due (the same rule: the oldest generation whose count passed its
threshold), so garbage is reclaimed as before, at a time no bin waits for. On entry the
objects alive then (modules, the model) are frozen into the permanent generation
(:func:`gc.freeze`), so a full collection does not walk them again (reference counting still
frees them; only a cycle among them, e.g. a first model swapped out, waits for the loop's
end); when the last collector in the process exits they are unfrozen and automatic
collection is restored as it was (collection is process-wide: loops running at once, e.g.
daemons on threads in a test, share the state).
"""

from __future__ import annotations

import gc
import threading

__all__ = ["IdleCollector"]

_lock = threading.Lock()
_entered = 0  # collectors inside their context in this process
_was_enabled = False  # automatic collection before the first of them entered


class IdleCollector:
    """Context manager for a real-time loop's thread: no automatic collection inside; call
    :meth:`collect_due` when the loop is idle. ``collections`` counts the collections it ran
    per generation (0, 1, 2)."""

    def __init__(self) -> None:
        self.collections = [0, 0, 0]

    def __enter__(self) -> IdleCollector:
        global _entered, _was_enabled
        with _lock:
            if _entered == 0:
                _was_enabled = gc.isenabled()
                gc.disable()
                gc.collect()  # nothing that is garbage now is frozen
                gc.freeze()
            _entered += 1
        return self

    def __exit__(self, *exc: object) -> None:
        global _entered
        with _lock:
            _entered -= 1
            if _entered == 0:
                gc.unfreeze()
                if _was_enabled:
                    gc.enable()

    def collect_due(self) -> int | None:
        """Run the collection CPython would have run by now, if one is due; the generation
        collected, or None. A threshold of 0 (collection off) is respected."""
        threshold, count = gc.get_threshold(), gc.get_count()
        if threshold[0] == 0 or count[0] <= threshold[0]:
            return None
        generation = max(g for g in (0, 1, 2) if count[g] > threshold[g])
        gc.collect(generation)
        self.collections[generation] += 1
        return generation
