"""``bci calibrate``: train the spiking decoder on a session; write a checkpoint and a report."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from tqdm import tqdm

from service.cli.common import (
    RESET_CHOICES,
    SURROGATE_CHOICES,
    given,
    note_partial,
    print_table,
)
from service.cli_checks import (
    UsageError,
    fraction,
    nonnegative_float,
    nonnegative_int,
    out_path,
    positive_float,
    positive_int,
    runtime_failures,
    session_path,
)

if TYPE_CHECKING:
    from calibration.calibrate import CalibrationOptions, CalibrationResult
    from calibration.search import SearchResult

DESCRIPTION = (
    "Calibrate the spiking decoder on one session (NPZ; XDF with streams chosen by "
    "name or type; or NWB: the Units table's spike times binned at --bin-ms, default "
    "50, and a processing/behavior series as kinematics, --kinematics NAME or by "
    "default hand_vel, cursor_vel, finger_vel, else a position series such as "
    "cursor_pos differentiated to velocity): split it chronologically into train / "
    "validation / test parts "
    "(--split), train the RSNN with BPTT on the training part (early stopping on "
    "validation R2), fit the Wiener and Kalman baselines (and the GRU with --gru) on "
    "the same split, and score all of them on the test part.\n\n"
    "Outputs: the checkpoint --out (safetensors with a JSON manifest: config, "
    "normalisation, labels, test metrics, training history), written atomically once "
    "training is done (Ctrl-C leaves nothing there; exit code 130); with --report DIR: "
    "metrics.json, report.md, decoded.png, training.png, firing_rates.png, raster.png "
    "(and trials.json after a search).\n\n"
    "--init MODEL fine-tunes an existing checkpoint (same channel count and bin width; "
    "its model config is kept, normalisation is refitted to this session).\n"
    "--trials N first runs a hyperparameter search with Optuna (hidden size from "
    "--hidden x 1/2, 1, 2; ALIF fraction; learning rate; rate target; membrane and "
    "readout time constants): TPE sampler (5 random trials, then TPE), each trial "
    "trained for --trial-steps on the training part and scored on the validation "
    "part, trials that fall behind pruned by successive halving on the validation R2 "
    "reported during training; the best completed trial is retrained for --steps. "
    "The study is an SQLite file, --study PATH (default: next to --out, "
    "MODEL.study.sqlite): rerunning with the same study resumes it and runs only the "
    "missing trials (a study made with other settings or data is refused). --ray "
    "runs the same search on Ray Tune (OptunaSearch with the ASHA scheduler), one CPU "
    "per trial: a local Ray instance, or the cluster at ADDRESS (ray.init(address="
    "...), e.g. auto or ray://head:10001; its workers need this package). Ray is "
    "optional: pip install -e .[cluster]\n\n"
    "example: bci calibrate session.npz --out model.safetensors --report report/\n"
    "example: bci calibrate rec.xdf --neural bci-sim --bin-ms 50 --out m.safetensors\n"
    "example: bci calibrate mc_maze.nwb --kinematics hand_vel --bin-ms 20 "
    "--out m.safetensors\n"
    "example: bci calibrate day2.npz --init day1.safetensors --out day2.safetensors\n"
    "example: bci calibrate session.npz --trials 20 --out m.safetensors  (rerun to "
    "resume m.study.sqlite)\n"
    "example: bci calibrate session.npz --trials 8 --ray --out m.safetensors\n"
    "example (exports to NIR as is): bci calibrate session.npz --alif-fraction 0 "
    "--reset zero --out lif.safetensors"
)


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Add ``calibrate`` to ``sub``."""
    calibrate = sub.add_parser(
        "calibrate",
        help="train the spiking decoder on a session; write a checkpoint and a report",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_io_arguments(calibrate)
    _add_model_arguments(calibrate)
    _add_training_arguments(calibrate)
    _add_search_arguments(calibrate)
    calibrate.set_defaults(func=run)


def _add_io_arguments(calibrate: argparse.ArgumentParser) -> None:
    """The session and how it is read and split; the checkpoint and report written."""
    calibrate.add_argument(
        "session", help="session file (.npz), XDF recording (.xdf) or NWB file (.nwb)"
    )
    calibrate.add_argument("--out", required=True, help="checkpoint to write (.safetensors)")
    calibrate.add_argument(
        "--force", action="store_true", help="replace an existing --out (default: refuse)"
    )
    calibrate.add_argument("--report", help="write the report (metrics, figures) to this folder")
    calibrate.add_argument("--neural", help="neural stream name or type (default: type Neural)")
    calibrate.add_argument(
        "--kinematics",
        help="kinematics stream name or type (default: type Kinematics); NWB: behaviour series",
    )
    calibrate.add_argument(
        "--targets",
        help="targets stream name or type (default: type Targets); NWB: behaviour series",
    )
    calibrate.add_argument(
        "--bin-ms",
        type=positive_float,
        help="XDF: sum neural samples into bins this wide (default: none); NWB: bin the "
        "spike times (default 50)",
    )
    calibrate.add_argument(
        "--split",
        default="0.7,0.1,0.2",
        help="train,validation,test fractions in time order (default 0.7,0.1,0.2)",
    )


def _add_model_arguments(calibrate: argparse.ArgumentParser) -> None:
    """The spiking network's shape and neurons."""
    calibrate.add_argument("--hidden", type=positive_int, help="hidden neurons (default 256)")
    calibrate.add_argument(
        "--alif-fraction", type=fraction, help="fraction of adaptive (ALIF) neurons (default 0.5)"
    )
    calibrate.add_argument(
        "--reset",
        choices=RESET_CHOICES,
        help="membrane reset after a spike: by subtraction (default) or to zero (exports to NIR)",
    )
    calibrate.add_argument(
        "--surrogate",
        choices=SURROGATE_CHOICES,
        help="surrogate gradient of the spike (default triangle)",
    )


def _add_training_arguments(calibrate: argparse.ArgumentParser) -> None:
    """BPTT training, the baselines fitted alongside and fine-tuning."""
    calibrate.add_argument(
        "--steps",
        type=positive_int,
        default=1500,
        help="max BPTT steps, early stopping (default 1500)",
    )
    calibrate.add_argument(
        "--lr", type=positive_float, default=3e-3, help="Adam learning rate (3e-3)"
    )
    calibrate.add_argument(
        "--rate-hz",
        type=nonnegative_float,
        default=2.0,
        help="target hidden firing rate, Hz (default 2)",
    )
    calibrate.add_argument(
        "--seed", type=nonnegative_int, default=0, help="random seed (default 0)"
    )
    calibrate.add_argument(
        "--members",
        type=positive_int,
        default=1,
        help="train this many SNNs (seeds SEED x MEMBERS + i) and merge them into one decoder "
        "of their mean, MEMBERS x --hidden neurons (default 1)",
    )
    calibrate.add_argument("--gru", action="store_true", help="also fit the GRU baseline (slow)")
    calibrate.add_argument("--init", help="fine-tune this checkpoint instead of a new model")


def _add_search_arguments(calibrate: argparse.ArgumentParser) -> None:
    """The hyperparameter search (``--trials``), its study file and Ray."""
    calibrate.add_argument(
        "--trials",
        type=nonnegative_int,
        default=0,
        help="hyperparameter search trials (default 0: none)",
    )
    calibrate.add_argument(
        "--trial-steps", type=positive_int, help="BPTT steps per trial (default min(--steps, 300))"
    )
    calibrate.add_argument(
        "--study",
        metavar="PATH",
        help="SQLite file of the --trials search, resumed when it exists (default: next to "
        "--out, MODEL.study.sqlite)",
    )
    calibrate.add_argument(
        "--ray",
        nargs="?",
        const="local",
        metavar="ADDRESS",
        help="run the --trials search on Ray Tune (local, or the cluster at ADDRESS)",
    )


def run(args: argparse.Namespace) -> int:
    """Calibrate on the session, print the test metrics and write the checkpoint."""
    from calibration.calibrate import run_calibration
    from calibration.search import SearchError

    session = session_path(args.session)
    out = out_path(args.out, args.force)
    _check_study_and_init(args)
    options = _calibration_options(args)
    bars: dict[str, tqdm] = {}
    note_partial(session)
    try:
        with runtime_failures():
            result = run_calibration(session, out, args.report, options, _progress(options, bars))
    except KeyboardInterrupt:
        print(f"bci calibrate: interrupted; no checkpoint written to {out}", file=sys.stderr)
        return 130
    except SearchError as error:
        print(f"bci calibrate: error: {error}", file=sys.stderr)
        return 2
    finally:
        for bar in bars.values():
            bar.close()
    _print_result(result)
    return 0


def _check_study_and_init(args: argparse.Namespace) -> None:
    """Refuse a ``--study`` in a missing folder, and ``--init`` that is no file or is reshaped."""
    if args.study is not None and not Path(args.study).parent.is_dir():
        raise UsageError(
            f"--study {args.study}: directory {Path(args.study).parent} does not exist; "
            "create it first"
        )
    if args.init is not None:
        if not Path(args.init).is_file():
            raise UsageError(f"--init {args.init} is not a checkpoint file (.safetensors)")
        from_checkpoint = given(args, "--hidden", "--alif-fraction", "--reset", "--surrogate")
        if from_checkpoint:
            raise UsageError(
                f"{', '.join(from_checkpoint)} cannot change a model fine-tuned with --init "
                "(its config comes from the checkpoint); drop them"
            )


def _split_fractions(text: str) -> tuple[float, float, float]:
    try:
        parts = tuple(float(v) for v in text.split(","))
    except ValueError:
        parts = ()
    if len(parts) != 3:
        raise UsageError(
            f"--split takes three comma-separated fractions train,validation,test (e.g. "
            f"0.7,0.1,0.2); got {text!r}"
        )
    if not all(0 < p < 1 for p in parts) or abs(sum(parts) - 1) > 1e-6:
        raise UsageError(
            f"--split fractions {text} must each lie in (0, 1) and sum to 1 (they sum to "
            f"{sum(parts):g}); e.g. 0.7,0.1,0.2"
        )
    return parts  # type: ignore[return-value]


def _calibration_options(args: argparse.Namespace) -> CalibrationOptions:
    from calibration.calibrate import CalibrationOptions

    defaults = CalibrationOptions()
    try:
        return CalibrationOptions(
            neural=args.neural,
            kinematics=args.kinematics,
            targets=args.targets,
            bin_ms=args.bin_ms,
            split=_split_fractions(args.split),
            hidden=defaults.hidden if args.hidden is None else args.hidden,
            alif_fraction=defaults.alif_fraction
            if args.alif_fraction is None
            else args.alif_fraction,
            reset=defaults.reset if args.reset is None else args.reset,
            surrogate=defaults.surrogate if args.surrogate is None else args.surrogate,
            steps=args.steps,
            lr=args.lr,
            rate_hz=args.rate_hz,
            seed=args.seed,
            members=args.members,
            gru=args.gru,
            init=None if args.init is None else Path(args.init),
            trials=args.trials,
            trial_steps=args.trial_steps,
            study=None if args.study is None else Path(args.study),
            ray=args.ray is not None,
            ray_address=None if args.ray in (None, "local") else args.ray,
        )
    except ValueError as error:  # its messages name the flags
        raise UsageError(str(error)) from None


def _progress(options: CalibrationOptions, bars: dict[str, tqdm]) -> Callable[[str, dict], None]:
    """A progress callback that keeps one bar per stage in ``bars`` (closed by the caller)."""

    def on_progress(kind: str, record: dict) -> None:
        if kind == "stage":
            for bar in bars.values():
                bar.close()
            bars.clear()
            if record["stage"] == "search" and not options.ray:  # Ray reports its own trials
                bars["trial"] = tqdm(total=options.trials, desc="search", unit="trial", leave=False)
            elif record["stage"] == "training":
                bars["snn"] = tqdm(
                    total=options.steps * options.members,
                    desc="training SNN"
                    if options.members == 1
                    else f"training {options.members} SNNs",
                    unit="step",
                    leave=False,
                )
        elif kind == "trial" and "trial" in bars:
            bars["trial"].update(1)
            bars["trial"].write(
                f"trial {record['trial']}: validation R2 {record['val_r2']:.3f} "
                f"({record['seconds']:.1f} s)"
            )
        elif kind == "snn" and "snn" in bars:
            bar = bars["snn"]
            done = int(record.get("member", 0)) * options.steps  # earlier members' budgets
            bar.update(done + int(record["step"]) - bar.n)
            bar.set_postfix(loss=f"{record['loss']:.4f}", val_r2=f"{record['val_r2']:.3f}")

    return on_progress


def _print_result(result: CalibrationResult) -> None:
    """The search's trials (if any), the test metrics, the SNN's efficiency, the files."""
    metrics = result.metrics
    if result.search is not None:
        _print_search(result.search)
    n_bins = metrics["n_bins"]
    print(
        f"test part: {n_bins['test']} bins (train {n_bins['train']}, validation {n_bins['val']}); "
        f"SNN stopped at step {result.training.steps}, kept step {result.training.best_step}"
    )
    print_table(
        ["decoder", "R2", "R2 per dim", "pearson r"],
        [
            [
                name,
                f"{entry['r2']:.3f}",
                " ".join(f"{v:.3f}" for v in entry["r2_per_dim"]),
                " ".join(f"{v:.3f}" for v in entry["pearson_r"]),
            ]
            for name, entry in metrics["test"].items()
        ],
    )
    eff = metrics["snn_efficiency"]
    print(
        f"SNN: sparsity {eff['activation_sparsity']:.3f}, {eff['synops_per_bin']:.0f} synops/bin, "
        f"{eff['footprint_bytes']} bytes; {metrics['seconds']:.1f} s"
    )
    print(f"wrote {result.checkpoint}")
    if result.report_dir is not None:
        print(f"wrote report {result.report_dir / 'report.md'}")


def _print_search(search: SearchResult) -> None:
    trials = search.trials
    keys = list(trials[0]["params"])
    print(
        f"search ({search.backend}): {len(trials)} trials, best {search.best}; study "
        f"{search.study} ({search.resumed} trials from earlier runs)"
    )
    print_table(
        ["trial", *keys, "val R2", "steps", "state"],
        [
            [
                t["trial"],
                *(f"{t['params'][k]:.4g}" for k in keys),
                f"{t['val_r2']:.3f}",
                t["steps"],
                t["state"],
            ]
            for t in trials
        ],
    )
    print()
