"""Which training and initialisation changes raise the SNN's test R², recording by recording.

Every variant is the baseline recipe (the defaults before these options existed: homogeneous
time constants, no input augmentation, windows of 100 bins with 20 of burn-in, rate_reg 1)
with one idea added; then, if two or more ideas raised the mean test R² on more than one
recording while keeping activation sparsity >= 0.9, their combination (``combined``); a
variant written ``a+b`` is ideas a and b together. Each run trains the
default-size SNN through :func:`calibration.evaluate.evaluate_decoders` (chronological
70/10/20 split, test R² as in ``benchmarks/accuracy.py``), once per seed.

Usage::

    python benchmarks/recipe_ablation.py --session A.npz B.npz ... [--seeds N]
        [--variants baseline,hetero_tau,input_noise+long_window,...] [--json OUT]

The table gives, per recording and variant, test R² (mean ± sd over seeds), its change
against the baseline, activation sparsity (the fraction of hidden neuron-bins without a
spike, on the test part) and BPTT seconds; the verdict line names the ideas that raised R²
on more than one recording.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bci.training import TrainConfig
from calibration.evaluate import EvaluationConfig, evaluate_decoders
from streams.session import Session, load_session

from _common import print_table, write_json

MIN_SPARSITY = 0.9
BASELINE: tuple[dict[str, Any], dict[str, Any]] = (
    {"tau_spread": 1.0},
    {"input_noise": 0.0, "channel_dropout": 0.0, "window": 100, "burn_in": 20, "rate_reg": 1.0},
)
# idea -> (RSNNConfig fields, TrainConfig fields) over the baseline
IDEAS: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "hetero_tau": ({"tau_spread": 3.0}, {}),
    "input_noise": ({}, {"input_noise": 0.5}),
    "strong_noise": ({}, {"input_noise": 1.0}),
    "channel_dropout": ({}, {"channel_dropout": 0.1}),
    "long_window": ({}, {"window": 200, "burn_in": 50}),
    "rate_reg": ({}, {"rate_reg": 0.1}),
}
COMBINED = "combined"


def variant_config(ideas: list[str], seed: int, max_steps: int) -> EvaluationConfig:
    """SNN-only evaluation config: the baseline with ``ideas`` applied in order."""
    snn, train = dict(BASELINE[0]), dict(BASELINE[1])
    for idea in ideas:
        snn.update(IDEAS[idea][0])
        train.update(IDEAS[idea][1])
    return EvaluationConfig(
        decoders=("snn",),
        snn=snn,
        train=replace(TrainConfig(max_steps=max_steps), **train),
        seed=seed,
    )


def run_variant(
    session: Session, ideas: list[str], seeds: int, first_seed: int, max_steps: int
) -> dict:
    """Train and score the SNN with ``ideas`` once per seed; R² per seed and means."""
    r2s, sparsity, seconds, steps = [], [], [], []
    for seed in range(first_seed, first_seed + seeds):
        evaluation = evaluate_decoders(session, variant_config(ideas, seed, max_steps))
        entry = evaluation.results["snn"]
        r2s.append(entry["r2"])
        sparsity.append(entry["neurobench"]["ActivationSparsity"])
        seconds.append(evaluation.snn_training.seconds)
        steps.append(evaluation.snn_training.steps)
    return {
        "ideas": ideas,
        "r2": float(np.mean(r2s)),
        "r2_sd": float(np.std(r2s, ddof=1)) if seeds > 1 else 0.0,
        "r2_seeds": r2s,
        "activation_sparsity": float(np.mean(sparsity)),
        "train_seconds": float(np.mean(seconds)),
        "train_steps": float(np.mean(steps)),
    }


def helped(results: dict[str, dict[str, dict]], variant: str) -> list[str]:
    """Recordings on which ``variant`` raised the mean test R² over the baseline with
    activation sparsity >= 0.9."""
    return [
        recording
        for recording, runs in results.items()
        if variant in runs
        and runs[variant]["r2"] > runs["baseline"]["r2"]
        and runs[variant]["activation_sparsity"] >= MIN_SPARSITY
    ]


def table_rows(results: dict[str, dict[str, dict]]) -> list[list[object]]:
    rows = []
    for recording, runs in results.items():
        base = runs["baseline"]["r2"]
        for variant, r in runs.items():
            rows.append(
                [
                    recording,
                    variant,
                    f"{r['r2']:.3f} ± {r['r2_sd']:.3f}",
                    f"{r['r2'] - base:+.3f}",
                    r["activation_sparsity"],
                    r["train_seconds"],
                    int(r["train_steps"]),
                ]
            )
    return rows


def verdict(results: dict[str, dict[str, dict]], variants: list[str]) -> str:
    """One line naming the variants that raised R² on more than one recording."""
    winners = {v: helped(results, v) for v in variants if v != "baseline"}
    named = [f"{v} ({', '.join(recs)})" for v, recs in winners.items() if len(recs) > 1]
    if not named:
        return "Verdict: no variant raised test R² on more than one recording."
    return "Verdict: raised test R² on more than one recording: " + "; ".join(named) + "."


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--session", nargs="+", required=True, help="session files (.npz)")
    parser.add_argument("--seeds", type=int, default=1, help="seeds per variant")
    parser.add_argument("--seed", type=int, default=0, help="first seed")
    parser.add_argument(
        "--variants",
        default=",".join(["baseline", *IDEAS, COMBINED]),
        help="comma-separated subset of baseline,"
        + ",".join([*IDEAS, COMBINED])
        + f" (baseline always runs; {COMBINED}: the ideas that raised R² on more than one "
        "recording, when two or more did; a+b: ideas a and b together)",
    )
    parser.add_argument("--steps", type=int, default=TrainConfig().max_steps, help="max BPTT steps")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--json", help="write results to this JSON file (after every run)")
    args = parser.parse_args()
    variants = [v for v in args.variants.split(",") if v != "baseline"]
    unknown = sorted({i for v in variants if v != COMBINED for i in v.split("+")} - set(IDEAS))
    if unknown or args.seeds < 1:
        parser.error(f"unknown variant(s) {unknown} or --seeds < 1")
    torch.set_num_threads(args.threads)

    start = time.perf_counter()
    names = {path: Path(path).stem for path in args.session}
    sessions = {path: load_session(path) for path in args.session}
    results: dict[str, dict[str, dict]] = {names[p]: {} for p in args.session}

    def record(variant: str, ideas: list[str]) -> None:
        for path, session in sessions.items():
            run = run_variant(session, ideas, args.seeds, args.seed, args.steps)
            results[names[path]][variant] = run
            print(
                f"{names[path]} {variant}: R² {run['r2']:.3f} "
                f"({time.perf_counter() - start:.0f} s)",
                flush=True,
            )
            write_json(args.json, {"benchmark": "recipe_ablation", "results": results})

    record("baseline", [])
    for variant in (v for v in variants if v != COMBINED):
        record(variant, variant.split("+"))
    if COMBINED in variants:
        combined = [i for i in IDEAS if i in variants and len(helped(results, i)) > 1]
        if len(combined) > 1:
            print(f"{COMBINED}: {'+'.join(combined)}", flush=True)
            record(COMBINED, combined)
        else:
            print(f"{COMBINED}: skipped, fewer than two ideas raised R² on more than one recording")
    headers = ["recording", "variant", "R² (mean ± sd)", "ΔR²", "sparsity", "train s", "steps"]
    print(
        f"{len(args.session)} recording(s), {args.seeds} seed(s), "
        f"{time.perf_counter() - start:.0f} s"
    )
    print_table(headers, table_rows(results))
    line = verdict(results, [v for v in results[names[args.session[0]]]])
    print(line)
    write_json(
        args.json,
        {
            "benchmark": "recipe_ablation",
            "seeds": args.seeds,
            "ideas": {k: {"snn": v[0], "train": v[1]} for k, v in IDEAS.items()},
            "baseline": {"snn": BASELINE[0], "train": BASELINE[1]},
            "seconds": time.perf_counter() - start,
            "results": results,
            "verdict": line,
        },
    )


if __name__ == "__main__":
    main()
