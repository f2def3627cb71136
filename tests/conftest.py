"""Fixtures shared by every test package.

pytest puts this folder on ``sys.path`` (it holds a ``conftest.py`` and no ``__init__.py``), so
test modules import the shared builders with ``from factories import ...``.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

# Numba's on-disk cache (``cache=True`` kernels) is not safe for processes that compile the same
# function at once: two that add different signatures can take the same file number, and one
# then runs the other's machine code ("can't unbox array"). Each xdist worker, and every process
# its tests start, gets a cache folder of its own; this must happen before numba is imported.
_WORKER = os.environ.get("PYTEST_XDIST_WORKER")
if _WORKER:
    assert "numba" not in sys.modules, "numba was imported before tests/conftest.py"
    os.environ["NUMBA_CACHE_DIR"] = str(Path(__file__).parent.parent / ".numba-cache" / _WORKER)


@pytest.fixture(scope="module")
def one_torch_thread() -> Iterator[None]:
    """One torch intra-op thread for a module that trains: two threads on two busy cores stall
    training about ten-fold (OpenMP barriers; see :mod:`bci.torch_threads`). Request it with
    ``pytestmark = pytest.mark.usefixtures("one_torch_thread")`` so it is set before the
    module's own module-scoped fixtures train anything."""
    from bci.torch_threads import torch_threads  # torch: only for modules that ask

    with torch_threads(1):
        yield
