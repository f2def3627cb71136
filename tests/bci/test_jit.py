"""Kernels compiled for fixed signatures, one process at a time (bci.jit).

The race the lock guards against is Numba's: processes that add signatures to one on-disk
cache at once can leave its index naming one signature's machine code for another's. Its
window is a few milliseconds wide, too narrow to hit on purpose, so the test observes the
lock itself: a process does not compile while another holds it.
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from bci.eprop_optimizer import apply_step
from bci.jit import as_argument

KERNEL_MODULE = """
import os
import time

import numpy as np

from bci.jit import kernel, void

TYPES = os.environ["KERNEL_TYPES"].split(",")


@kernel([void(f"{t}[::1]", f"{t}[::1]") for t in TYPES])
def double(x, out):
    for i in range(x.shape[0]):
        out[i] = 2 * x[i] + 1


for name in TYPES:  # each signature compiles on its first call
    x = np.arange(3, dtype=name)
    out = np.zeros_like(x)
    double(x, out)
    assert (out == 2 * x + 1).all()
print(time.time())  # compiled
"""


def _start(folder: Path, types: list[str]) -> subprocess.Popen:
    env = {**os.environ, "NUMBA_CACHE_DIR": str(folder / "cache"), "KERNEL_TYPES": ",".join(types)}
    env["PYTHONPATH"] = os.pathsep.join([str(folder), env.get("PYTHONPATH", "")])
    command = [sys.executable, "-c", "import doubling"]
    return subprocess.Popen(
        command, env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )


@pytest.fixture
def kernel_folder(tmp_path: Path) -> Path:
    (tmp_path / "doubling.py").write_text(KERNEL_MODULE)
    return tmp_path


def test_a_process_waits_for_the_cache_lock_before_compiling(kernel_folder: Path) -> None:
    lock = kernel_folder / "cache" / "bci-numba-cache.lock"
    lock.parent.mkdir()
    fd = os.open(lock, os.O_RDONLY | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        waiter = _start(kernel_folder, ["float32", "float64"])
        time.sleep(3.0)  # about twice what importing numba and compiling take here
        assert waiter.poll() is None, waiter.communicate()[1]
    finally:
        released_at = time.time()
        os.close(fd)
    out, err = waiter.communicate(timeout=60)
    assert waiter.returncode == 0, err
    assert float(out) >= released_at


def test_without_a_lock_file_kernels_compile_and_say_so(kernel_folder: Path) -> None:
    (kernel_folder / "cache" / "bci-numba-cache.lock").mkdir(parents=True)  # cannot be opened
    process = _start(kernel_folder, ["float64"])
    _, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    assert "without the cache lock" in err


def test_a_kernel_refuses_types_it_was_not_compiled_for() -> None:
    declared = list(apply_step.signatures)
    with pytest.raises(TypeError, match="No matching definition"):
        apply_step(np.zeros(3, np.int64), np.zeros(3, np.int64), 1.0, 1.0)
    assert list(apply_step.signatures) == declared


def test_as_argument_copies_only_what_a_kernel_cannot_take() -> None:
    plain = np.zeros(4)
    assert as_argument(plain, np.float64) is plain
    read_only = np.broadcast_to(np.ones(3), (1, 3))
    taken = as_argument(read_only, np.float64)
    assert taken.flags.writeable and taken.flags.c_contiguous
    np.testing.assert_array_equal(taken, read_only)
    strided = np.arange(8.0)[::2]
    assert as_argument(strided, np.float32).flags.c_contiguous
