"""Process settings: torch threads for a block, glibc trimming."""

from __future__ import annotations

import platform

import pytest
import torch

from bci.runtime import retain_freed_memory, torch_threads


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


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_retain_freed_memory_is_accepted_by_glibc_and_idempotent() -> None:
    assert retain_freed_memory() is True
    assert retain_freed_memory() is True


def test_single_threaded_blas_covers_scipy_blas_used_by_numba() -> None:
    from threadpoolctl import threadpool_info

    from bci.runtime import single_threaded_blas

    limiter = single_threaded_blas()
    try:
        blas = [lib for lib in threadpool_info() if lib["user_api"] == "blas"]
        assert any("scipy.libs" in lib["filepath"] for lib in blas), blas
        assert all(lib["num_threads"] == 1 for lib in blas), blas
    finally:
        limiter.restore_original_limits()
