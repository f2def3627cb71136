"""Numba kernels compiled for a fixed list of signatures, one process at a time.

Numba's on-disk cache is not safe for processes that compile at once: each adds its new
signatures to the function's index under the first free file number it sees, so two
processes adding different signatures can both write file 1, and the index then names one
signature's machine code for the other's (numba issue 10128; a float32 call ran float64
code and failed with "can't unbox array from PyObject"). The daemon's decoder process, the
API process, replays and calibration trials all start Numba, often together.

:func:`kernel` therefore declares each kernel's signatures and compiles (or loads from the
cache) one only when it is first called, while holding an exclusive ``flock`` that every
process of this package takes for it: writers never meet, and a process loads only the
signatures it uses (about 35 ms each from the cache). A call with undeclared types raises
``TypeError`` rather than adding a signature. Kernels take C-contiguous, writeable arrays
(Numba types a read-only array apart); :func:`as_argument` makes one where needed.
"""

from __future__ import annotations

import fcntl
import logging
import os
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numba
import numpy as np
from numba.core import sigutils

__all__ = [
    "CUBE",
    "FLOAT_TYPES",
    "MATRIX",
    "VECTOR",
    "as_argument",
    "cache_lock_path",
    "for_floats",
    "kernel",
    "void",
]

logger = logging.getLogger(__name__)

FLOAT_TYPES = ("float32", "float64")  # the decoder's dtypes
# C-contiguous arrays of the float type that :func:`for_floats` fills in.
VECTOR, MATRIX, CUBE = "{f}[::1]", "{f}[:, ::1]", "{f}[:, :, ::1]"


def void(*arguments: str) -> str:
    """The signature of a kernel that returns nothing and takes ``arguments`` (Numba types)."""
    return f"void({', '.join(arguments)})"


def for_floats(template: str) -> list[str]:
    """One signature per float dtype: ``{f}`` in ``template`` becomes each of them."""
    return [template.format(f=name) for name in FLOAT_TYPES]


def as_argument(array: np.ndarray, dtype: type) -> np.ndarray:
    """``array`` as kernels take it: of ``dtype``, C-contiguous and writeable; copied only
    where it is not so already (e.g. a broadcast or read-only view). About 0.2 µs when it
    is: the decoder's step asks every bin."""
    flags = array.flags
    if array.dtype == dtype and flags.c_contiguous and flags.writeable:
        return array
    return np.require(array, dtype, ["C", "W"])


def cache_lock_path() -> Path:
    """The lock file: in Numba's cache folder where one is configured (``NUMBA_CACHE_DIR``),
    in the system's temporary folder otherwise."""
    folder = numba.config.CACHE_DIR or tempfile.gettempdir()
    return Path(folder) / "bci-numba-cache.lock"


@contextmanager
def _cache_lock() -> Iterator[None]:
    path = cache_lock_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # Read-only is enough for flock, and lets other users of a shared folder lock it too.
        fd = os.open(path, os.O_RDONLY | os.O_CREAT, 0o644)
    except OSError as exc:  # e.g. a read-only file system: Numba may still cache elsewhere
        logger.warning("compiling Numba kernels without the cache lock %s (%s): processes "
                       "that compile at once may mix up the cache", path, exc)  # fmt: skip
        yield
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock; so does the process's death


def kernel(signatures: Sequence[str], **options: Any) -> Callable[[Callable], Any]:
    """``numba.njit(cache=True, nogil=True, **options)`` that compiles only ``signatures``
    (Numba signature strings, e.g. ``"void(float32[::1], float64)"``), each on its first
    call and under the cache lock."""
    declared = {sigutils.normalize_signature(signature)[0] for signature in signatures}

    def compile_declared(function: Callable) -> Any:
        dispatcher = numba.njit(cache=True, nogil=True, **options)(function)
        compile_any = dispatcher.compile

        def compile_locked(signature: Any) -> Any:  # Numba calls it on a new argument type
            arguments = sigutils.normalize_signature(signature)[0]
            if arguments not in declared:
                raise TypeError(f"No matching definition for argument type(s) "
                                f"{', '.join(map(str, arguments))} of {function.__name__}; "
                                f"declared: {sorted(map(str, signatures))}")  # fmt: skip
            with _cache_lock():
                return compile_any(signature)

        dispatcher.compile = compile_locked
        return dispatcher

    return compile_declared
