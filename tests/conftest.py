"""Fixtures shared by every test package.

pytest puts this folder on ``sys.path`` (it holds a ``conftest.py`` and no ``__init__.py``), so
test modules import the shared builders with ``from factories import ...``.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest


@pytest.fixture(scope="module")
def one_torch_thread() -> Iterator[None]:
    """One torch intra-op thread for a module that trains: two threads on two busy cores stall
    training about ten-fold (OpenMP barriers; see :mod:`bci.torch_threads`). Request it with
    ``pytestmark = pytest.mark.usefixtures("one_torch_thread")`` so it is set before the
    module's own module-scoped fixtures train anything."""
    from bci.torch_threads import torch_threads  # torch: only for modules that ask

    with torch_threads(1):
        yield
