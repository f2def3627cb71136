"""Process settings without torch: BLAS thread counts and the C allocator's trimming.

Torch's own thread count is :func:`bci.torch_threads.torch_threads` (the decoder process
imports this module and must not import torch).

A training step allocates and frees some twenty (T, B, H) buffers (megabytes each). By
default glibc hands such blocks back to the kernel on free, so every step page-faults them in
again; in a virtual machine that doubled the step time (``benchmarks/train_speed.py``).
:func:`retain_freed_memory` keeps freed blocks in the process heap instead.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

from threadpoolctl import threadpool_limits

logger = logging.getLogger(__name__)

_M_TRIM_THRESHOLD = -1  # glibc mallopt parameter numbers (malloc.h)
_M_MMAP_THRESHOLD = -3
_RETAIN_BYTES = 1 << 30


def retain_freed_memory() -> bool:
    """Ask glibc to keep freed blocks up to 1 GiB in the heap (no ``mmap``/trim per step).

    Process-wide and idempotent; returns False (and changes nothing) where the C library is
    not glibc. Freed memory stays reserved for reuse, so the process's resident size does
    not shrink after a training run.
    """
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):
        logger.debug("mallopt unavailable (C library %s); allocator left as is", name)
        return False
    ok = mallopt(_M_MMAP_THRESHOLD, _RETAIN_BYTES) == 1
    ok = mallopt(_M_TRIM_THRESHOLD, _RETAIN_BYTES) == 1 and ok
    return ok


def single_threaded_blas() -> threadpool_limits:
    """Limit every BLAS library loaded in the process (NumPy's, SciPy's) to one thread.

    For the real-time path: per-bin products are far too small to split, and when torch's
    OpenMP threads or another process hold the cores, idle BLAS workers spin: a
    (1024 x 10)(10 x 352) product took 7 ms instead of 0.25 ms. Returns the limiter; call
    its ``restore_original_limits()`` to undo.
    """
    import scipy.linalg.cython_blas  # noqa: F401  (Numba's np.dot calls SciPy's BLAS: load it now)

    return threadpool_limits(limits=1, user_api="blas")
