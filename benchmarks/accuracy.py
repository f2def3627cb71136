"""Decoding accuracy of the SNN against the Wiener, Kalman, GRU and LSTM baselines on one
session, mean +- sd over seeds, with NeuroBench's efficiency figures.

Chronological 70/10/20 train/validation/test split; every decoder is trained on the
kinematics in the file and scored on the test part (R² as in NeuroBench: per dimension
1 - SSE / (n var), then averaged). With ``--trials N`` the SNN, the GRU and the LSTM each
get the same hyperparameter search first (N trials of Optuna TPE with pruning, scored on
the validation part; :mod:`calibration.search`, :mod:`calibration.search_rnn`; the SNN's
trials run ``min(steps, 300)`` BPTT steps as in ``bci calibrate``), on the first seed; the
best configuration of each is then trained once per seed. ``budget`` in the table is the
number of search trials each decoder got (0: the defaults, no search). With
``--snn-members K`` each seed's SNN is K SNNs (seeds ``seed * K + i``) merged into one
decoder of their mean (:mod:`bci.ensemble`).

Usage::

    python benchmarks/accuracy.py --session PATH.npz [--seeds N] [--trials N]
        [--search snn,gru,lstm] [--snn-members K] [--json OUT]
    python benchmarks/accuracy.py --combine RUN.json [RUN.json ...] [--json OUT]

Efficiency (NeuroBench names, :mod:`bci.efficiency`; per bin): ActivationSparsity,
SynapticOperations (Effective_MACs, Effective_ACs, Dense), Footprint (bytes),
ConnectionSparsity. Targets (issue 14, mean over 3 seeds): SNN R² >= GRU R² under the same
search budget, with activation sparsity >= 0.9.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from bci.training import TrainConfig
from calibration.evaluate import DECODERS, EvaluationConfig, evaluate_decoders
from calibration.search import TrialData, default_trial_steps, local_search, split_params
from calibration.search_rnn import rnn_search
from streams.session import Session, chronological_split, load_session

from _common import print_table, write_json

SNN_BASE_HIDDEN = 256  # bci calibrate --hidden default
SEARCHABLE = ("snn", "gru", "lstm")


def search(
    session: Session,
    config: EvaluationConfig,
    trials: int,
    trial_steps: int,
    searched: tuple[str, ...] = SEARCHABLE,
) -> dict[str, Any]:
    """Search each of ``searched`` in ``config.decoders`` with ``trials`` trials (SNN
    trials: up to ``trial_steps`` BPTT steps); returns
    ``{name: {"trials", "seconds", "best_params", "best_val_r2"}}`` and the config to use."""
    train, val, _ = chronological_split(session, config.fractions)
    budget = replace(config.train, max_steps=trial_steps)
    data = TrialData.from_split(train, val, budget, seed=config.seed)
    found: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as folder:
        for name in SEARCHABLE:
            if name not in config.decoders or name not in searched:
                continue
            study = Path(folder) / f"{name}.study.sqlite"
            if name == "snn":
                result = local_search(trials, data, study, SNN_BASE_HIDDEN)
            else:
                base = config.gru_hidden if name == "gru" else config.lstm_hidden
                result = rnn_search(name, trials, data, study, base)
            best = next(t for t in result.trials if t["trial"] == result.best)
            found[name] = {
                "trials": trials,
                "seconds": result.seconds,
                "best_params": result.best_params,
                "best_val_r2": best["val_r2"],
            }
    return found


def searched_config(config: EvaluationConfig, found: dict[str, Any]) -> EvaluationConfig:
    """``config`` with each searched decoder's best parameters."""
    snn, train = dict(config.snn), config.train
    if "snn" in found:
        model_params, train_params = split_params(found["snn"]["best_params"])
        snn, train = {**snn, **model_params}, replace(train, **train_params)
    rnn = {name: found[name]["best_params"] for name in ("gru", "lstm") if name in found}
    return replace(config, snn=snn, train=train, rnn_params=rnn)


def aggregate(entries: list[Any]) -> Any:
    """Mean over seeds of numbers, lists and dicts of them; other values from the first."""
    first = entries[0]
    if isinstance(first, bool) or not isinstance(first, (int, float, list, dict)):
        return first
    if isinstance(first, dict):
        return {k: aggregate([e[k] for e in entries]) for k in first}
    if isinstance(first, list):
        return [aggregate([e[i] for e in entries]) for i in range(len(first))]
    return float(np.mean(entries))


def run(
    session: Session,
    config: EvaluationConfig,
    seeds: int,
    trials: int,
    trial_steps: int,
    searched: tuple[str, ...] = SEARCHABLE,
) -> dict[str, Any]:
    """Every decoder's mean entry over ``seeds`` seeds (``r2_sd``, ``r2_seeds`` and the
    ``budget`` added), the search record and ``n_test_bins``."""
    found = search(session, config, trials, trial_steps, searched) if trials else {}
    config = searched_config(config, found)
    per_seed = [
        evaluate_decoders(session, replace(config, seed=config.seed + i)).results
        for i in range(seeds)
    ]
    results: dict[str, Any] = {"n_test_bins": per_seed[0]["n_test_bins"], "seeds": seeds}
    for name in config.decoders:
        entries = [r[name] for r in per_seed]
        r2s = [e["r2"] for e in entries]
        results[name] = {
            **aggregate(entries),
            "r2_sd": float(np.std(r2s, ddof=1)) if seeds > 1 else 0.0,
            "r2_seeds": r2s,
            "budget": found.get(name, {}).get("trials", 0),
        }
    results["search"] = found
    return results


def table_rows(results: dict[str, Any], names: tuple[str, ...]) -> list[list[object]]:
    rows = []
    for name in names:
        r = results[name]
        nb = r.get("neurobench", {})
        ops = nb.get("SynapticOperations", {})
        rows.append(
            [
                name,
                f"{r['r2']:.3f} ± {r['r2_sd']:.3f}",
                " ".join(f"{v:.3f}" for v in r["r2_per_dim"]),
                nb.get("ActivationSparsity", "-"),
                *(
                    f"{ops[k]:.0f}" if k in ops else "-"
                    for k in ("Effective_MACs", "Effective_ACs", "Dense")
                ),
                int(r["footprint_bytes"]),
                nb.get("ConnectionSparsity", "-"),
                r["budget"],
                r["fit_seconds"],
            ]
        )
    return rows


def verdict(results: dict[str, Any]) -> str:
    """The issue-14 target, met or missed by how much."""
    if "snn" not in results or "gru" not in results:
        return "Target needs snn and gru."
    snn, gru = results["snn"], results["gru"]
    gap = snn["r2"] - gru["r2"]
    sparsity = snn["neurobench"]["ActivationSparsity"]
    r2_part = "met" if gap >= 0 else f"missed by {-gap:.3f}"
    sparse_part = "met" if sparsity >= 0.9 else f"missed by {0.9 - sparsity:.3f}"
    return (
        f"Target SNN R² >= GRU R² (budget {snn['budget']} vs {gru['budget']} trials): "
        f"{r2_part} ({snn['r2']:.3f} vs {gru['r2']:.3f}); ActivationSparsity >= 0.9: "
        f"{sparse_part} ({sparsity:.3f})."
    )


def build_parser() -> argparse.ArgumentParser:
    """The benchmark's command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--session", help="session file (.npz)")
    parser.add_argument(
        "--combine",
        nargs="+",
        metavar="RUN_JSON",
        help="instead of training: the table and verdict of earlier runs' --json files on one "
        "session (each decoder from the last file that has it)",
    )
    parser.add_argument("--json", help="write results to this JSON file")
    parser.add_argument("--seed", type=int, default=0, help="first seed")
    parser.add_argument("--seeds", type=int, default=1, help="seeds (seed, seed + 1, ...)")
    parser.add_argument(
        "--trials",
        type=int,
        default=0,
        help="search trials for each of snn, gru and lstm (0: no search)",
    )
    parser.add_argument(
        "--steps", type=int, default=TrainConfig().max_steps, help="max SNN training steps"
    )
    parser.add_argument(
        "--trial-steps",
        type=int,
        help="max BPTT steps of an SNN search trial (default: as bci calibrate, min(--steps, 300))",
    )
    parser.add_argument(
        "--search",
        default=",".join(SEARCHABLE),
        help="which of --decoders get the --trials search (default: snn,gru,lstm; the others "
        "train with their defaults, budget 0)",
    )
    parser.add_argument(
        "--snn-members",
        type=int,
        default=1,
        help="SNNs trained per seed and merged into one decoder of their mean (bci.ensemble)",
    )
    parser.add_argument(
        "--decoders",
        default=",".join(DECODERS),
        help="comma-separated subset of " + ",".join(DECODERS),
    )
    return parser


def main() -> None:
    parser = build_parser()
    args = parser.parse_args()
    if (args.session is None) == (args.combine is None):
        parser.error("give --session FILE (train and score) or --combine RUN_JSON ... (report)")
    if args.combine:
        results = combine(args.combine)
        report(results, tuple(n for n in DECODERS if n in results))
        write_json(args.json, {"benchmark": "accuracy", "combined": args.combine, **results})
        return
    if args.seeds < 1 or args.trials < 0:
        parser.error("--seeds must be >= 1 and --trials >= 0")
    searched = tuple(args.search.split(","))
    if not set(searched) <= set(SEARCHABLE):
        parser.error(f"--search takes a subset of {','.join(SEARCHABLE)}; got {args.search}")
    if args.snn_members < 1:
        parser.error(f"--snn-members must be >= 1 (e.g. 3), got {args.snn_members}")
    if args.trial_steps is not None and args.trial_steps < 1:
        parser.error(f"--trial-steps must be >= 1 (e.g. 300), got {args.trial_steps}")

    start = time.perf_counter()
    session = load_session(args.session)
    config = EvaluationConfig(
        decoders=tuple(args.decoders.split(",")),
        train=TrainConfig(max_steps=args.steps),
        snn_members=args.snn_members,
        seed=args.seed,
    )
    trial_steps = args.trial_steps or default_trial_steps(args.steps)
    results = run(session, config, args.seeds, args.trials, trial_steps, searched)
    results["snn_trial_steps"] = trial_steps
    results["snn_members"] = args.snn_members
    print(
        f"{args.session}: {session.n_bins} bins x {session.n_channels} channels, "
        f"test {results['n_test_bins']} bins, {args.seeds} seed(s), "
        f"{args.snn_members} SNN(s) merged per seed, "
        f"{time.perf_counter() - start:.0f} s"
    )
    report(results, config.decoders)
    seconds = time.perf_counter() - start
    write_json(
        args.json, {"benchmark": "accuracy", "session": args.session, "seconds": seconds, **results}
    )


def combine(paths: list[str]) -> dict[str, Any]:
    """The decoders' entries of earlier runs (``--json`` files) on one session, each from the
    last file that has it (``run`` added: its file), with that run's search record."""
    runs = [(path, json.loads(Path(path).read_text())) for path in paths]
    sessions = {(Path(run["session"]).name, run["n_test_bins"]) for _, run in runs}
    if len(sessions) != 1:
        raise SystemExit(f"--combine needs runs on one session; got (file, test bins) {sessions}")
    results: dict[str, Any] = {"n_test_bins": runs[0][1]["n_test_bins"], "search": {}}
    for path, run in runs:
        for name in DECODERS:
            if name in run:
                results[name] = {**run[name], "run": path}
                results["search"].pop(name, None)
                if name in run["search"]:
                    results["search"][name] = run["search"][name]
    return results


def report(results: dict[str, Any], decoders: tuple[str, ...]) -> None:
    """Print the table, the search records and the verdict."""
    headers = [
        "decoder",
        "R² (mean ± sd)",
        "R² per dim",
        "ActivationSparsity",
        "Effective_MACs",
        "Effective_ACs",
        "Dense",
        "Footprint",
        "ConnectionSparsity",
        "budget",
        "fit s",
    ]
    print_table(headers, table_rows(results, decoders))
    for name, record in results["search"].items():
        print(
            f"search {name}: {record['trials']} trials, {record['seconds']:.0f} s, "
            f"best validation R² {record['best_val_r2']:.3f}, {record['best_params']}"
        )
    for name in decoders:
        if "run" in results[name]:
            print(f"{name}: from {results[name]['run']}")
    print(verdict(results))


if __name__ == "__main__":
    main()
