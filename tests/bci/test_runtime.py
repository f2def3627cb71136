"""Process settings: glibc trimming, single-threaded BLAS."""

from __future__ import annotations

import platform

import pytest

from bci.runtime import retain_freed_memory


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
