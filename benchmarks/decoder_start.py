"""Start time and resident memory of the decoder process, without and with torch.

Each case is a fresh interpreter that does what the decoder process does before its first
bin: import the daemon (``service.daemon``), load a 96/256/2 checkpoint with
``bci.checkpoint.load_decoder`` (safetensors' NumPy API), and decode one bin (the Numba
kernels' cached compilations load at their first call, :mod:`bci.jit`). It reports the seconds
from interpreter start to each step, the resident memory (VmRSS) after the first bin and
whether torch was imported.
The reference case imports torch first, as the daemon did before it went torch-free.

Usage: ``python benchmarks/decoder_start.py [--runs 5] [--json OUT]``.
Target: the decoder process never imports torch.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

_CHILD = r"""
import json, sys, time
t0 = time.perf_counter()
if {with_torch}:
    import torch  # noqa: F401
import numpy as np
import service.daemon  # noqa: F401  what the decoder process imports
from bci.checkpoint import load_decoder
t_import = time.perf_counter()
decoder = load_decoder(sys.argv[1]).decoder
t_load = time.perf_counter()
decoder.step(np.zeros(decoder.n_in, dtype=decoder.dtype), decoder.initial_state())
t_step = time.perf_counter()
rss = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmRSS"))
print(json.dumps({{"import_s": t_import - t0, "load_s": t_load - t0, "first_bin_s": t_step - t0,
                  "rss_mib": rss / 1024, "torch": "torch" in sys.modules}}))
"""


def _checkpoint(folder: Path) -> Path:
    from bci.checkpoint import save_checkpoint
    from bci.rsnn import RSNN, RSNNConfig

    rng = np.random.default_rng(0)
    model = RSNN(RSNNConfig(n_in=96, n_hidden=256, n_out=2, dt_s=0.02), seed=0)
    model.fit_normalisation(
        rng.poisson(0.6, (2000, 96)).astype(np.float32),
        rng.standard_normal((2000, 2)).astype(np.float32),
    )
    return save_checkpoint(folder / "rsnn.safetensors", model, kinematics_labels=("vx", "vy"))


def _run(path: Path, with_torch: bool) -> dict:
    code = _CHILD.format(with_torch=with_torch)
    out = subprocess.run(
        [sys.executable, "-c", code, str(path)], capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    from _common import print_table, verdict, write_json

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="interpreters per case (5)")
    parser.add_argument("--json", help="write results to this JSON file")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="decoder-start-") as tmp:
        path = _checkpoint(Path(tmp))
        _run(path, False)  # the Numba cache is written once, outside the measurement
        for with_torch in (False, True):
            runs = [_run(path, with_torch) for _ in range(args.runs)]
            median = {k: float(np.median([r[k] for r in runs])) for k in runs[0] if k != "torch"}
            rows.append({"case": "decoder process" + (" + torch" if with_torch else ""),
                         "torch_imported": any(r["torch"] for r in runs), **median})  # fmt: skip
    print(f"median of {args.runs} fresh interpreters: seconds from start; VmRSS after 1 bin")
    print_table(
        ["case", "imports s", "+ checkpoint s", "+ first bin s", "RSS MiB", "torch imported"],
        [[r["case"], r["import_s"], r["load_s"], r["first_bin_s"], r["rss_mib"],
          r["torch_imported"]] for r in rows],
    )  # fmt: skip
    torch_imported = rows[0]["torch_imported"]
    result = verdict(
        "the decoder process imports no torch",
        not torch_imported,
        f"{rows[0]['case']}: torch {'imported' if torch_imported else 'not imported'}",
    )
    write_json(args.json, {"benchmark": "decoder_start", **result, "target_met": result["met"],
                           "runs": args.runs, "cases": rows})  # fmt: skip


if __name__ == "__main__":
    main()
