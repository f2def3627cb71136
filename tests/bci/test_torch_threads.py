"""Torch threads for a block: set, then restored even on error."""

from __future__ import annotations

import pytest
import torch

from bci.torch_threads import torch_threads


def test_sets_and_restores_even_on_error() -> None:
    before = torch.get_num_threads()
    target = 1 if before != 1 else 2
    with pytest.raises(RuntimeError, match="boom"), torch_threads(target):
        assert torch.get_num_threads() == target
        raise RuntimeError("boom")
    assert torch.get_num_threads() == before


def test_none_leaves_the_setting_alone() -> None:
    before = torch.get_num_threads()
    with torch_threads(None):
        assert torch.get_num_threads() == before
    assert torch.get_num_threads() == before
