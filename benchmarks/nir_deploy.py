"""Accuracy cost of the NIR-exportable recipe against the default one, on real sessions.

Two recipes, trained alike (same split, step budget and seed) on each session in
``../shared/data/neural``: the default decoder (``bci calibrate``: half the hidden neurons
ALIF, reset by subtraction) and the exportable one (``bci calibrate --alif-fraction 0 --reset
zero``: LIF only, reset to zero, which ``bci export --nir`` writes exactly with no options).
Each is scored on the test part (chronological 70/10/20 split, R² as NeuroBench) with float
weights and with weights quantized to 8 and 4 bits (:mod:`bci.hardware`); the Wiener filter
on the same split shows how decodable each session is.

Usage::

    python benchmarks/nir_deploy.py [--steps 300] [--json OUT]

Verdict: the exportable recipe is within ``--max-cost`` (0.05) R² of the default on every
session.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np
import scipy.io

from bci.nir_export import export_nir
from bci.training import TrainConfig
from calibration.deploy import quantized_r2
from calibration.evaluate import EvaluationConfig, evaluate_decoders
from streams.limblab import load_limblab_session
from streams.session import Session, chronological_split

from _common import print_table, write_json

DATA = Path(__file__).resolve().parents[1] / "../shared/data/neural"
SESSIONS = {  # name: file under DATA
    "Jango 2014-12-03": "Jango_20141203_default_offline_data.mat",
    "Spike 2012-07-18": "spike_wf/Spike_07-18-12_WF_001.mat",
    "Spike 2012-08-07": "spike_wf/Spike_08-07-12_WF_001.mat",
}
SPIKE_BIN_S = 0.05  # the spike_wf days' bin width (data README)
RECIPES = {
    "default (ALIF 0.5, subtract)": {"alif_fraction": 0.5, "reset": "subtract"},
    "exportable (LIF, zero)": {"alif_fraction": 0.0, "reset": "zero"},
}


def _load(path: Path) -> Session:
    """Jango through the limblab loader; a spike_wf day laid on its 50 ms grid, because its
    ``timeframe`` is stored in float32 (steps jitter by up to 5e-5 s), which the loader's
    uniform-spacing check refuses."""
    if not path.name.startswith("Spike_"):
        return load_limblab_session(path)
    data = scipy.io.loadmat(path, squeeze_me=True, struct_as_record=False)["binnedData"]
    n = len(data.timeframe)
    grid = data.timeframe[0] + SPIKE_BIN_S * np.arange(n)
    if np.abs(data.timeframe - grid).max() > 1e-3:
        raise ValueError(f"{path}: timeframe is not on a {SPIKE_BIN_S} s grid")
    return Session(
        neural=data.spikeratedata * SPIKE_BIN_S,
        timestamps=grid + SPIKE_BIN_S,
        bin_s=SPIKE_BIN_S,
        kinematics=data.velocbin[:, :2],
        kinematics_labels=("vx", "vy"),
    )


def _exports(model: object) -> bool:
    try:
        export_nir(model)  # type: ignore[arg-type]
    except ValueError:
        return False
    return True


def _session_records(name: str, session: Session, steps: int, seed: int) -> list[dict[str, Any]]:
    """One session's results: the Wiener filter's test R², then each recipe's (float and
    quantized), whether it exports to NIR, and its training time (s)."""
    _, val, test = chronological_split(session)
    wiener = evaluate_decoders(session, EvaluationConfig(decoders=("wiener",)))
    records: list[dict[str, Any]] = [
        {
            "session": name,
            "recipe": "Wiener filter (reference)",
            "exports": None,
            "r2": {"float32": wiener.results["wiener"]["r2"]},
            "seconds": None,
        }
    ]
    for recipe, snn in RECIPES.items():
        start = time.perf_counter()
        config = EvaluationConfig(
            decoders=("snn",),
            snn=snn,
            train=TrainConfig(max_steps=steps, seed=seed),
            seed=seed,
        )
        model = evaluate_decoders(session, config).snn
        r2 = quantized_r2(model, val, test)
        records.append(
            {
                "session": name,
                "recipe": recipe,
                "exports": _exports(model),
                "r2": r2,
                "seconds": time.perf_counter() - start,
            }
        )
        print(f"{name}, {recipe}: R² {r2['float32']:.3f} ({records[-1]['seconds']:.0f} s)")
    return records


def _print_results(records: list[dict[str, Any]]) -> None:
    """The results, one row per session and recipe."""
    print_table(
        ["session", "recipe", "exports to NIR", "test R²", "8-bit R²", "4-bit R²"],
        [
            [
                r["session"],
                r["recipe"],
                {True: "yes", False: "no", None: "-"}[r["exports"]],
                *r["r2"].values(),
                *["-"] * (3 - len(r["r2"])),
            ]
            for r in records
        ],
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300, help="BPTT steps per model (300)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-cost", type=float, default=0.05, help="verdict threshold (R²)")
    parser.add_argument("--json", help="write results to this JSON file")
    args = parser.parse_args()

    records = []
    for name, file in SESSIONS.items():
        path = DATA / file
        if not path.is_file():
            print(f"skipping {name}: {path.resolve()} is missing")
            continue
        records += _session_records(name, _load(path), args.steps, args.seed)

    print()
    _print_results(records)
    r2 = {(r["session"], r["recipe"]): r["r2"]["float32"] for r in records}
    default, exportable = RECIPES
    costs = {s: r2[s, default] - r2[s, exportable] for s, recipe in r2 if recipe == default}
    print()
    for session, cost in costs.items():
        print(f"cost of the exportable recipe on {session}: {cost:+.3f} R²")
    ok = bool(costs) and max(costs.values()) <= args.max_cost
    verdict = f"exportable recipe within {args.max_cost} R² of the default on every session"
    print(f"verdict: {verdict}: {'PASS' if ok else 'FAIL'}")
    write_json(
        args.json,
        {
            "benchmark": "nir_deploy",
            "steps": args.steps,
            "seed": args.seed,
            "results": records,
            "cost": costs,
            "verdict": {"rule": verdict, "pass": ok},
        },
    )


if __name__ == "__main__":
    main()
