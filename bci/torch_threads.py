"""Torch's intra-op thread count for a block of training or baseline fitting.

Decoder matrices are small: a second torch thread buys little, and on a machine whose cores
are busy OpenMP barriers stall training up to ten-fold (measured on the 2-core dev machine).
Kept apart from :mod:`bci.runtime` so that the decoder process never imports torch.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch


@contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Use ``n`` torch intra-op threads inside the block (``None``: leave as is)."""
    previous = torch.get_num_threads()
    if n is not None and n != previous:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if torch.get_num_threads() != previous:
            torch.set_num_threads(previous)
