"""The ``bci`` command: one console script, a subcommand per job.

Each subcommand only parses arguments and calls importable code.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from tqdm import tqdm

from service.cli_checks import (
    CommandFailed,
    UsageError,
    damaged_inputs,
    fraction,
    nonnegative_float,
    nonnegative_int,
    out_path,
    positive_float,
    positive_int,
    runtime_failures,
    session_path,
)
from service.serve_settings import add_settings_flags, env_names, settings_from
from streams.lsl_config import quiet_liblsl

if TYPE_CHECKING:
    from calibration.calibrate import CalibrationOptions
    from streams.player import SessionPlayer
    from streams.recorder import Recorder
    from streams.synthetic import SyntheticConfig

logger = logging.getLogger(__name__)

EPILOG = "Run 'bci COMMAND --help' for the inputs, outputs and defaults of each command."
# Choices spelled out so that building the parser imports no torch; a test holds them equal
# to bci.neurons.RESET_MODES, bci.surrogates.SURROGATES and bci.nir_export.DIALECTS.
RESET_CHOICES = ("subtract", "zero")
SURROGATE_CHOICES = ("arctan", "boxcar", "fast_sigmoid", "gaussian", "sigmoid", "triangle")
DIALECT_CHOICES = ("nir", "norse", "snntorch")


def _configure_logging(verbose: bool) -> bool:
    """Log at DEBUG with ``--verbose``, else at ``BCI_LOG_LEVEL`` (WARNING); True at DEBUG."""
    level = ("DEBUG" if verbose else os.environ.get("BCI_LOG_LEVEL", "WARNING")).upper()
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    return level == "DEBUG"


def _version() -> str:
    """This package's installed version (its metadata), for ``bci --version``."""
    try:
        return importlib.metadata.version("bci-decoder")
    except importlib.metadata.PackageNotFoundError:
        return "unknown (not installed: pip install -e .)"


def _given(args: argparse.Namespace, *flags: str) -> list[str]:
    """Those of ``flags`` (e.g. ``"--bin-ms"``) that were given on the command line."""
    given = []
    for flag in flags:
        value = getattr(args, flag.lstrip("-").replace("-", "_"))
        if value is not None and value is not False:  # 0 and "" count as given
            given.append(flag)
    return given


def _print_table(headers: list[str], rows: list[list]) -> None:
    widths = [max(len(str(h)), *(len(str(r[i])) for r in rows)) for i, h in enumerate(headers)]
    print("  ".join(str(h).ljust(w) for h, w in zip(headers, widths, strict=True)))
    print("  ".join("-" * w for w in widths))
    for row in rows:
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)))


def _training_bar(total: int) -> tuple[tqdm, callable]:
    bar = tqdm(total=total, desc="training SNN", unit="step", leave=False)

    def on_progress(_decoder: str, record: dict[str, float]) -> None:
        bar.update(int(record["step"]) - bar.n)
        bar.set_postfix(loss=f"{record['loss']:.4f}", val_r2=f"{record['val_r2']:.3f}")

    return bar, on_progress


def cmd_simulate(args: argparse.Namespace) -> int:
    from streams.session import save_session
    from streams.synthetic import SyntheticConfig, simulate_session

    config = SyntheticConfig(
        n_channels=args.channels,
        bin_s=args.bin_ms / 1000.0,
        duration_s=args.minutes * 60.0,
        seed=args.seed,
        task=args.task,
    )
    if args.out is None:
        if args.force:
            raise UsageError("--force only applies with --out (it replaces an existing file)")
        return _stream_simulation(config, args)
    streaming_only = _given(args, "--seconds", "--name", "--speed", "--input", "--input-rate-hz")
    if streaming_only:
        raise UsageError(
            f"{', '.join(streaming_only)} only apply when streaming over LSL; drop them or "
            "drop --out"
        )
    out = out_path(args.out, args.force)
    with runtime_failures():
        session = simulate_session(config)
        path = save_session(out, session)
    print(
        f"wrote {path}: {session.n_bins} bins x {session.n_channels} channels, "
        f"{session.bin_s * 1e3:g} ms bins, {session.duration_s / 60:.1f} min"
    )
    return 0


def _positive_seconds(value: float | None, flag: str) -> None:
    if value is not None and not value > 0:
        raise UsageError(f"{flag} must be a positive number of seconds, got {value:g}")


def _stream_simulation(config: SyntheticConfig, args: argparse.Namespace) -> int:
    from streams.native_rate import samples_per_bin
    from streams.player import simulate_stream

    kind = args.input or "counts"
    if args.input_rate_hz is not None:
        if kind == "events":
            raise UsageError("--input-rate-hz does not apply to --input events; drop it")
        try:
            samples_per_bin(args.input_rate_hz, config.bin_s)
        except ValueError:
            raise UsageError(
                f"--input-rate-hz {args.input_rate_hz:g} is not a whole multiple of the bin "
                f"rate ({1 / config.bin_s:g} Hz for --bin-ms {args.bin_ms:g}); e.g. 1000 or "
                "30000"
            ) from None
    player = simulate_stream(
        config,
        name=args.name or "bci-sim",
        speed=1.0 if args.speed is None else args.speed,
        loop=True,
        input_kind=kind,
        input_rate_hz=args.input_rate_hz,
    )
    _play_until_done(player, args.seconds, describe=f"synthetic population as {kind} (looping)")
    return 0


def _play_until_done(player: SessionPlayer, seconds: float | None, describe: str) -> None:
    """Start ``player`` and run it until it finishes, ``seconds`` pass, Ctrl-C or SIGTERM."""
    from streams.lifetime import sigterm_as_interrupt

    with sigterm_as_interrupt(), player:
        print(
            f"streaming {describe} over LSL as {', '.join(player.stream_names)} at "
            f"{player.speed:g}x real time"
            + (f" for {seconds:g} s" if seconds is not None else "")
            + "; Ctrl-C to stop",
            flush=True,
        )
        started = time.monotonic()
        total = player.n_bins if not player.loop else None
        bar = tqdm(total=total, desc="bins pushed", unit="bin", leave=False)
        per_bin = player.stream_names[-1]  # kinematics and targets: one sample per bin
        try:
            while True:
                pushed = player.counters()["pushed"][per_bin]
                bar.update(pushed - bar.n)
                if player.finished:
                    time.sleep(1.0)  # let consumers drain before the outlets close
                    break
                if seconds is not None and time.monotonic() - started >= seconds:
                    break
                if not player.running:
                    break  # stop() below reports the failure
                time.sleep(0.1)
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
        finally:
            bar.close()
        counters = player.counters()
    pushed = counters["pushed"]
    print(f"pushed for {time.monotonic() - started:.1f} s, {counters['loops']} loop(s):")
    _print_table(["stream", "samples pushed"], [[name, n] for name, n in pushed.items()])


def cmd_replay(args: argparse.Namespace) -> int:
    if not (args.inspect or args.play or args.model is not None):
        # checked here, not by argparse, to keep its established wording (and its tests)
        args.replay_parser.error(
            "one of the arguments --inspect --play is required, or --model MODEL"
        )
    path = session_path(args.session)
    model_only = _given(args, "--adapt", "--fast", "--out")
    if args.model is None and model_only:
        raise UsageError(f"{', '.join(model_only)} only apply with --model MODEL")
    if args.model is not None:
        return _replay_model(path, args)
    if args.inspect:
        from streams.files import inspect_session_file
        from streams.xdf import format_inspection

        with runtime_failures():
            summaries = inspect_session_file(path)
        _note_partial(path)
        print(f"{path}: {len(summaries)} stream(s)")
        print(format_inspection(summaries))
        return 0
    # --play
    from streams.player import SessionPlayer

    speed = 1.0 if args.speed is None else args.speed
    if not speed > 0:
        raise UsageError(f"--speed must be > 0 (1 = real time), got {speed:g}")
    _positive_seconds(args.seconds, "--seconds")
    from streams.files import load_any_session

    with damaged_inputs():
        session = load_any_session(
            path,
            neural=args.neural,
            kinematics=args.kinematics,
            targets=args.targets,
            bin_s=None if args.bin_ms is None else args.bin_ms / 1000.0,
        )
    player = SessionPlayer(session, name=args.name, speed=speed, loop=args.loop)
    _play_until_done(player, args.seconds, describe=f"{path.name} ({session!r})")
    return 0


def _replay_model(path: Path, args: argparse.Namespace) -> int:
    if args.fast and _given(args, "--speed"):
        raise UsageError(
            "--fast and --speed exclude each other: --fast decodes as fast as possible, "
            "--speed X plays the session over LSL at X times real time"
        )
    speed = 1.0 if args.speed is None else args.speed
    if not speed > 0:
        raise UsageError(f"--speed must be > 0 (1 = real time), got {speed:g}")
    stream_flags = _given(args, "--neural", "--kinematics", "--targets", "--bin-ms")
    if stream_flags:
        raise UsageError(
            f"{', '.join(stream_flags)} are not supported with --model in this version: an XDF "
            "file is read from its streams typed Neural and Kinematics"
        )
    out = None if args.out is None else Path(args.out)
    if out is not None and not out.parent.is_dir():
        raise UsageError(
            f"cannot write {out}: directory {out.parent} does not exist; create it first"
        )
    if not Path(args.model).is_file():
        raise UsageError(f"--model {args.model} is not a checkpoint file (.safetensors)")
    from service.replay import replay_live, replay_session

    with damaged_inputs():  # a model that does not fit the session stays a usage error
        if args.fast:
            result = replay_session(path, args.model, adapt=args.adapt)
        else:
            print(f"playing {path.name} over LSL at {speed:g}x real time ...", flush=True)
            result = replay_live(path, args.model, speed, adapt=args.adapt)
    adaptation = result["adaptation"]
    rows = [
        ["R2", f"{result['r2']:.3f}"],
        ["R2 per dim", ", ".join(f"{v:.3f}" for v in result["r2_per_dim"])],
        ["bins", result["bins"]],
        ["bins/s", f"{result['bins_per_second']:,.0f}"],
    ]
    if not args.fast:
        latency = result["latency"]
        rows += [
            ["bins lost", result["bins_lost"]],
            ["latency p50 / p99 ms", f"{latency['p50_ms']:.2f} / {latency['p99_ms']:.2f}"],
        ]
    if adaptation["enabled"]:
        rows += [
            ["bins with target", adaptation["bins_with_target"]],
            ["updates applied", adaptation["updates_applied"]],
            ["updates rejected", adaptation["updates_rejected"]],
            ["updates clipped", adaptation["updates_clipped"]],
            ["rollbacks", adaptation["rollbacks"]],
            ["paused", adaptation["paused"]],
        ]
    else:
        rows.append(["adaptation", "off"])
    print(f"replayed {path.name} with {Path(args.model).name}")
    _print_table(["metric", "value"], rows)
    if out is not None:
        out.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {out}")
    return 0


def cmd_record(args: argparse.Namespace) -> int:
    from streams.lifetime import sigterm_as_interrupt
    from streams.recorder import Recorder, StreamSelector

    try:
        selectors = [StreamSelector.parse(text) for text in args.stream]
    except ValueError as error:
        raise UsageError(f"--stream: {error}") from None
    out = out_path(args.out, args.force)
    with sigterm_as_interrupt(), runtime_failures():  # kill PID finishes the file as Ctrl-C
        recorder = Recorder(
            out, selectors, resolve_timeout=args.resolve_timeout, overwrite=args.force
        )
        recorder.start()
        return _record_until_done(recorder, args)


def _record_until_done(recorder: Recorder, args: argparse.Namespace) -> int:
    print(
        f"recording {', '.join(recorder.stream_names)} to {args.out}"
        + (f" for {args.seconds:g} s" if args.seconds is not None else "")
        + "; Ctrl-C to stop",
        flush=True,
    )
    started = time.monotonic()
    bar = tqdm(total=args.seconds, desc="recording", unit="s", leave=False)
    try:
        while args.seconds is None or time.monotonic() - started < args.seconds:
            time.sleep(0.1)
            bar.update(min(time.monotonic() - started, args.seconds or float("inf")) - bar.n)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
    finally:
        bar.close()
        path = recorder.stop()
    counters = recorder.counters()
    print(f"wrote {path}: {time.monotonic() - started:.1f} s")
    _print_table(
        ["stream", "type", "samples", "clock offsets", "state"],
        [
            [name, c["type"], c["samples"], c["clock_offsets"], c["state"]]
            for name, c in counters.items()
        ],
    )
    return 0


def cmd_streams(args: argparse.Namespace) -> int:
    from streams.discovery import visible_streams

    with runtime_failures():
        listings = visible_streams(args.wait)
    if args.json:
        print(json.dumps([s.as_dict() for s in listings], indent=2))
    elif not listings:
        print(f"no LSL stream answered within {args.wait:g} s")
    else:
        _print_table(
            ["name", "type", "channels", "rate Hz", "source_id", "host"],
            [[s.name, s.type, s.channels, f"{s.rate_hz:g}", s.source_id, s.host] for s in listings],
        )
    return 0


def cmd_convert_limblab(args: argparse.Namespace) -> int:
    from streams.limblab import load_limblab_session
    from streams.session import save_session

    mat = Path(args.mat)
    if not mat.is_file():
        what = "is a directory" if mat.is_dir() else "does not exist"
        raise UsageError(f"MAT {mat} {what}; give a limblab binned-data .mat file")
    out = out_path(args.out, args.force, flag="OUT")
    with runtime_failures():
        session = load_limblab_session(mat)
        path = save_session(out, session)
    print(
        f"wrote {path}: {session.n_bins} bins x {session.n_channels} channels, "
        f"kinematics {session.kinematics_labels}"
    )
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    if args.live:
        from service.demo import run_live_demo

        offline_only = _given(args, "--minutes", "--steps", "--json")
        if offline_only:
            raise UsageError(f"{', '.join(offline_only)} only apply without --live")
        _positive_seconds(args.seconds, "--seconds")
        with runtime_failures():  # e.g. the port is taken
            run_live_demo(
                Path(args.cache),
                host=args.host,
                port=args.port,
                seconds=args.seconds,
                seed=args.seed,
            )
        return 0
    live_only = _given(args, "--seconds")
    if live_only:
        raise UsageError(f"{', '.join(live_only)} only applies with --live")
    args.minutes = 8.0 if args.minutes is None else args.minutes
    args.steps = 600 if args.steps is None else args.steps
    from bci.training import TrainConfig
    from calibration.evaluate import EvaluationConfig, evaluate_decoders, results_table
    from streams.synthetic import SyntheticConfig, simulate_session

    print(f"simulating {args.minutes:g} min of a 96-channel motor-cortex population ...")
    session = simulate_session(SyntheticConfig(duration_s=args.minutes * 60.0, seed=args.seed))
    train = TrainConfig(max_steps=args.steps)
    bar, on_progress = _training_bar(train.max_steps)
    with bar:
        evaluation = evaluate_decoders(
            session, EvaluationConfig(train=train, seed=args.seed), on_progress
        )
    results = evaluation.results
    print(f"\ntest part: {results['n_test_bins']} bins (last 20% of the session)")
    _print_table(["decoder", "R2", "R2 (vx vy)", "sparsity", "fit s"], results_table(results))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


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


def _note_partial(path: Path) -> None:
    """Say that an unfinished recording (``.xdf.part``) is read as far as it goes."""
    from streams.files import is_partial

    if is_partial(path):
        print(
            f"note: {path} is an unfinished recording (.part, no footers): truncated, read "
            "as far as it goes",
            file=sys.stderr,
        )


def cmd_calibrate(args: argparse.Namespace) -> int:
    from calibration.calibrate import run_calibration
    from calibration.search import SearchError

    session = session_path(args.session)
    out = out_path(args.out, args.force)
    if args.study is not None and not Path(args.study).parent.is_dir():
        raise UsageError(
            f"--study {args.study}: directory {Path(args.study).parent} does not exist; "
            "create it first"
        )
    if args.init is not None:
        if not Path(args.init).is_file():
            raise UsageError(f"--init {args.init} is not a checkpoint file (.safetensors)")
        from_checkpoint = _given(args, "--hidden", "--alif-fraction", "--reset", "--surrogate")
        if from_checkpoint:
            raise UsageError(
                f"{', '.join(from_checkpoint)} cannot change a model fine-tuned with --init "
                "(its config comes from the checkpoint); drop them"
            )
    options = _calibration_options(args)
    bars: dict[str, tqdm] = {}

    def on_progress(kind: str, record: dict) -> None:
        if kind == "stage":
            for bar in bars.values():
                bar.close()
            bars.clear()
            if record["stage"] == "search" and not options.ray:  # Ray reports its own trials
                bars["trial"] = tqdm(total=options.trials, desc="search", unit="trial", leave=False)
            elif record["stage"] == "training":
                bars["snn"] = tqdm(
                    total=options.steps, desc="training SNN", unit="step", leave=False
                )
        elif kind == "trial" and "trial" in bars:
            bars["trial"].update(1)
            bars["trial"].write(
                f"trial {record['trial']}: validation R2 {record['val_r2']:.3f} "
                f"({record['seconds']:.1f} s)"
            )
        elif kind == "snn" and "snn" in bars:
            bar = bars["snn"]
            bar.update(int(record["step"]) - bar.n)
            bar.set_postfix(loss=f"{record['loss']:.4f}", val_r2=f"{record['val_r2']:.3f}")

    _note_partial(session)
    try:
        with runtime_failures():
            result = run_calibration(session, out, args.report, options, on_progress)
    except KeyboardInterrupt:
        print(f"bci calibrate: interrupted; no checkpoint written to {out}", file=sys.stderr)
        return 130
    except SearchError as error:
        print(f"bci calibrate: error: {error}", file=sys.stderr)
        return 2
    finally:
        for bar in bars.values():
            bar.close()
    metrics = result.metrics
    if result.search is not None:
        trials = result.search.trials
        keys = list(trials[0]["params"])
        search = result.search
        print(
            f"search ({search.backend}): {len(trials)} trials, best {search.best}; study "
            f"{search.study} ({search.resumed} trials from earlier runs)"
        )
        _print_table(
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
    n_bins = metrics["n_bins"]
    print(
        f"test part: {n_bins['test']} bins (train {n_bins['train']}, validation {n_bins['val']}); "
        f"SNN stopped at step {result.training.steps}, kept step {result.training.best_step}"
    )
    _print_table(
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
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from bci.nir_export import write_nir

    if args.session is not None and not args.report:
        raise UsageError("--session picks the session --report scores on: add --report")
    if not Path(args.model).is_file():
        raise UsageError(f"MODEL {args.model} is not a checkpoint file (.safetensors)")
    with damaged_inputs():  # a model NIR cannot express stays a usage error (names the flags)
        path = write_nir(
            args.model,
            args.out,
            subtract_reset=args.subtract_reset,
            dialect=args.dialect,
            overwrite=args.overwrite,
        )
    print(f"wrote {path}: NIR graph ({args.dialect} dialect) of {args.model}")
    if args.report:
        with damaged_inputs():
            _print_deployment_report(args.model, args.session)
    return 0


def _print_deployment_report(checkpoint: str, session: str | None) -> None:
    from calibration.deploy import deployment_report

    report = deployment_report(checkpoint, session)
    budget = report.budget
    synapses = budget.synapses
    print(
        f"neurons: {budget.hidden_neurons} LIF hidden + {budget.readout_neurons} LI readout\n"
        f"synapses: {budget.total_synapses} (w_in {synapses['w_in']}, w_rec "
        f"{synapses['w_rec']}, w_out {synapses['w_out']})\n"
        f"fan-in per hidden neuron: max {budget.fan_in_max}, mean {budget.fan_in_mean:.1f}\n"
        "weight range: "
        + ", ".join(f"{k} [{lo:.4g}, {hi:.4g}]" for k, (lo, hi) in budget.weight_range.items())
    )
    print(f"test part of {report.session}: {report.test_bins} bins")
    _print_table(["weights", "test R2"], [[k, f"{v:.4f}"] for k, v in report.r2.items()])


def _read_token(path: str) -> str:
    """The bearer token in the first line of ``path`` (``--token-file``: kept out of ``ps``)."""
    try:
        token = Path(path).read_text().strip().splitlines()
    except OSError as error:
        raise UsageError(f"--token-file {path}: {error.strerror}") from None
    if not token or not token[0].strip():
        raise UsageError(f"--token-file {path} is empty; write the token on its first line")
    return token[0].strip()


def cmd_serve(args: argparse.Namespace) -> int:
    from service.api.server import listen
    from service.settings import resolve_token
    from service.supervisor import serve_supervised

    token = None if args.token_file is None else _read_token(args.token_file)
    settings, generated = resolve_token(settings_from(args, token))
    if settings.model is None:
        raise UsageError(
            "no model to decode with: pass --model PATH, set BCI_MODEL or the key model in --config"
        )
    if not Path(settings.model).is_file():
        raise UsageError(f"model {settings.model} does not exist")
    with runtime_failures():  # e.g. the port is taken: exit 1
        listener = listen(settings.host, settings.port)  # bound here: --port 0 prints its port

    def announce() -> None:
        port = listener.getsockname()[1]
        print(
            f"serving http://{settings.host}:{port}/api/v1 (docs at /docs): decoding "
            f"stream {settings.stream!r} with {settings.model} -> "
            f"{settings.output_base}-kinematics; Ctrl-C to stop",
            flush=True,
        )
        if generated:  # a token given by flag, file or environment is never echoed
            print(f"token (generated): {settings.token}", flush=True)

    try:
        with runtime_failures():  # a model, recording or stream that fails: exit 1
            serve_supervised(settings, listener, announce)
    finally:
        listener.close()
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bci",
        description="Real-time BCI decoding with recurrent spiking neural networks.",
        epilog=EPILOG,
    )
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="debug logging, liblsl's own log lines too"
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = sub.add_parser(
        "demo",
        help="live decoding of a simulated population, or an offline decoder comparison",
        description=(
            "--live (what 'make demo' runs): stream a simulated 96-channel motor-cortex "
            "population over LSL (bci-sim, bci-sim-kinematics, bci-sim-targets) and decode "
            "it with the daemon of 'bci serve', adapting by e-prop from bci-sim-kinematics; "
            "dashboard on http://127.0.0.1:8000/. The demo model is trained on first use "
            "(about a minute) and cached in --cache.\n"
            "Without --live: simulate a session, train the spiking decoder (BPTT) and the "
            "Wiener, Kalman and GRU baselines on the first 70%, and print the test R2 of each "
            "on the last 20%.\n\n"
            "example: bci demo --live --port 8000\nexample: bci demo --minutes 6"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    demo.add_argument("--minutes", type=float, help="session length (default 8)")
    demo.add_argument("--steps", type=int, help="max SNN training steps (600)")
    demo.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    demo.add_argument("--json", help="also write the results to this JSON file")
    demo.add_argument(
        "--live",
        action="store_true",
        help="stream the simulated population and decode it live with the dashboard",
    )
    demo.add_argument(
        "--cache",
        default=str(Path.home() / ".cache" / "bci-decoder"),
        help="live: folder of the cached demo model (default ~/.cache/bci-decoder)",
    )
    demo.add_argument("--host", default="127.0.0.1", help="live: address (127.0.0.1)")
    demo.add_argument("--port", type=int, default=8000, help="live: HTTP port (default 8000)")
    demo.add_argument("--seconds", type=float, help="live: stop after this many seconds")
    demo.set_defaults(func=cmd_demo)

    simulate = sub.add_parser(
        "simulate",
        help="write a synthetic motor-cortex session file (NPZ), or stream it over LSL",
        description=(
            "Simulate cosine-tuned Poisson channels driven by 2-D reaches.\n\n"
            "With --out: write a session file (NPZ: neural, timestamps, bin_s, kinematics "
            "vx/vy, targets).\n"
            "Without --out: stream the population live over LSL until Ctrl-C (or --seconds): "
            "outlet NAME (type Neural, spike counts per bin), NAME-kinematics (vx, vy in "
            "cm/s) and NAME-targets (x, y in cm), one sample per bin at 1000 / bin-ms Hz; "
            "the simulated --minutes loop.\n"
            "--input sets how NAME carries the population: counts (default: one sample per "
            "bin, or per-channel counts at --input-rate-hz, e.g. 1000), events (an irregular "
            "int32 stream, one channel index per spike) or broadband (voltage in µV at "
            "--input-rate-hz, default 30000: spike waveforms on noise). Each bin's samples or "
            "events sum to the simulated counts; the stream's desc names the input kind "
            "(input_kind) and the bin width (session_bin_s).\n\n"
            "example: bci simulate --out session.npz --minutes 12\n"
            "example: bci simulate --name bci-sim --seconds 60\n"
            "example: bci simulate --input counts --input-rate-hz 1000 --bin-ms 20"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    simulate.add_argument(
        "--out", help="output session file (.npz); without it the session is streamed"
    )
    simulate.add_argument(
        "--force", action="store_true", help="replace an existing --out (default: refuse)"
    )
    simulate.add_argument(
        "--minutes",
        type=positive_float,
        default=12.0,
        help="duration (default 12; looped when streaming)",
    )
    simulate.add_argument("--channels", type=positive_int, default=96, help="channels (default 96)")
    simulate.add_argument(
        "--bin-ms", type=positive_float, default=50.0, help="bin width (default 50)"
    )
    simulate.add_argument(
        "--task",
        default="mixed",
        choices=("center_out", "random_target", "mixed"),
        help="reach task (default mixed)",
    )
    simulate.add_argument("--seed", type=nonnegative_int, default=0, help="random seed (default 0)")
    simulate.add_argument(
        "--name", help="streaming: LSL stream name (default bci-sim; also NAME-kinematics ...)"
    )
    simulate.add_argument(
        "--seconds",
        type=positive_float,
        help="streaming: stop after this many seconds (default: Ctrl-C)",
    )
    simulate.add_argument(
        "--speed", type=positive_float, help="streaming: speed factor over real time (default 1)"
    )
    simulate.add_argument(
        "--input",
        choices=("counts", "events", "broadband"),
        help="streaming: what NAME carries (default counts, one sample per bin)",
    )
    simulate.add_argument(
        "--input-rate-hz",
        type=positive_float,
        help="streaming: native rate of counts or broadband, a multiple of the bin rate "
        "(default: the bin rate for counts, 30000 for broadband)",
    )
    simulate.set_defaults(func=cmd_simulate)

    convert = sub.add_parser(
        "convert-limblab",
        help="convert a Miller-lab binned .mat file to a session file (NPZ)",
        description=(
            "Read a limblab 'binnedData' MATLAB file (struct train_data: timeframe, "
            "spikeratedata in Hz, velocbin) and write a session file with counts per bin "
            "(rate x bin width) and velocity x, y as kinematics.\n\nexample: bci "
            "convert-limblab ../shared/data/neural/Jango_20141203_default_offline_data.mat "
            "jango.npz"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    convert.add_argument("mat", help="input .mat file")
    convert.add_argument("out", help="output session file (.npz)")
    convert.add_argument("--force", action="store_true", help="replace an existing OUT")
    convert.set_defaults(func=cmd_convert_limblab)

    replay = sub.add_parser(
        "replay",
        help="inspect a session or XDF file, play it over LSL, or decode it with a model",
        description=(
            "Work with a recorded session: an NPZ session file, an XDF recording or an NWB "
            "file (Units spike times binned at --bin-ms, default 50, or at the model's bin "
            "width with --model; kinematics from a processing/behavior series, --kinematics "
            "NAME or by default hand_vel, cursor_vel, finger_vel, else a position series "
            "differentiated to velocity).\n\n"
            "--inspect: print every stream with its channel count, nominal and effective "
            "rate, sample count, gaps (intervals > 1.5 nominal periods), time range and clock "
            "offsets, then notes on anomalies. An NPZ file shows as streams neural, "
            "kinematics and targets.\n"
            "--play: replay the session over LSL, one sample per bin at --speed x real time "
            "(outlets NAME, NAME-kinematics, NAME-targets as recorded), until it ends, "
            "--seconds pass or Ctrl-C. From XDF the session is built from the streams typed "
            "Neural / Kinematics / Targets unless --neural/--kinematics/--targets name them.\n"
            "--model MODEL --fast: decode the session with a checkpoint (.safetensors) bin by "
            "bin as fast as possible (with --adapt: learning online by e-prop from the "
            "session's kinematics); print R2 against the session's kinematics, bins, bins/s "
            "and the adaptation counters; --out writes them as JSON (keys r2, r2_per_dim, "
            "r2_windows (30 s windows), bins, bins_per_second, adaptation). The session must "
            "have kinematics and the model's channel count and bin width.\n"
            "--model MODEL [--speed X]: the same through the live path instead: a player "
            "process streams the session over LSL at X times real time (default 1) into the "
            "daemon of 'bci serve' (learning, with --adapt, from the played kinematics "
            "stream); the JSON adds mode, speed, bins_lost and latency.\n\n"
            "example: bci replay --inspect ../shared/data/xdf/clock_resets.xdf\n"
            "example: bci replay --inspect mc_maze.nwb\n"
            "example: bci replay session.npz --play --speed 2 --loop --name bci-replay\n"
            "example: bci replay session.npz --model model.safetensors --fast --adapt "
            "--out results.json\n"
            "example: bci replay session.npz --model model.safetensors --speed 10"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    replay.add_argument("session", help="session file (.npz), XDF recording (.xdf) or NWB (.nwb)")
    mode = replay.add_mutually_exclusive_group()  # one is required: checked in cmd_replay
    mode.add_argument("--inspect", action="store_true", help="list the streams and their timing")
    mode.add_argument("--play", action="store_true", help="play the session over LSL")
    mode.add_argument("--model", help="decode the session with this checkpoint (.safetensors)")
    replay.add_argument(
        "--fast", action="store_true", help="model: decode as fast as possible, not over LSL"
    )
    replay.add_argument(
        "--adapt", action="store_true", help="model: adapt online by e-prop (default off)"
    )
    replay.add_argument("--out", help="model: also write the results to this JSON file")
    replay.add_argument("--speed", type=float, help="play, model: x real time (default 1)")
    replay.add_argument("--loop", action="store_true", help="play: start over at the end")
    replay.add_argument(
        "--name", default="bci-replay", help="play: LSL stream name (default bci-replay)"
    )
    replay.add_argument(
        "--seconds", type=float, help="play: stop after this many seconds (default: at the end)"
    )
    replay.add_argument("--neural", help="XDF: neural stream name or type (default: type Neural)")
    replay.add_argument(
        "--kinematics",
        help="XDF: kinematics stream (default: type Kinematics); NWB: behaviour series",
    )
    replay.add_argument(
        "--targets", help="XDF: targets stream (default: type Targets); NWB: behaviour series"
    )
    replay.add_argument(
        "--bin-ms",
        type=float,
        help="XDF: sum neural samples into bins this wide (default: one bin per sample); "
        "NWB: bin the spike times (default 50)",
    )
    replay.set_defaults(func=cmd_replay, replay_parser=replay)

    record = sub.add_parser(
        "record",
        help="record LSL streams to an XDF file",
        description=(
            "Record LSL streams to XDF as LabRecorder does: one inlet per stream, raw "
            "timestamps, a clock offset per stream every 5 s, footers on stop. Runs until "
            "Ctrl-C or --seconds; the file is written as FILE.part and renamed when done.\n"
            "A stream is chosen by NAME or by name=NAME, type=TYPE or source_id=ID.\n\n"
            "example: bci record --out rec.xdf --stream bci-sim --stream bci-sim-kinematics "
            "--seconds 60"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    record.add_argument("--out", required=True, help="output XDF file")
    record.add_argument(
        "--stream",
        action="append",
        required=True,
        help="stream to record (repeat for several)",
    )
    record.add_argument(
        "--seconds", type=positive_float, help="stop after this many seconds (default: Ctrl-C)"
    )
    record.add_argument(
        "--resolve-timeout",
        type=positive_float,
        default=10.0,
        help="seconds to wait for each stream to appear (default 10)",
    )
    record.add_argument(
        "--force", "--overwrite", action="store_true", help="replace an existing --out"
    )
    record.set_defaults(func=cmd_record)

    streams = sub.add_parser(
        "streams",
        help="list the LSL streams visible from here",
        description=(
            "List every LSL outlet that answers within --wait seconds: the streams that 'bci "
            "serve --stream' and 'bci record --stream' can find. One row per outlet: name, "
            "type, channels, nominal rate (0: irregular), source_id and host.\n\n"
            "example: bci streams\nexample: bci streams --wait 3 --json"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    streams.add_argument(
        "--wait",
        type=positive_float,
        default=1.0,
        help="seconds to wait for outlets to answer (default 1)",
    )
    streams.add_argument(
        "--json",
        action="store_true",
        help="print a JSON list instead (keys name, type, channels, rate_hz, source_id, host)",
    )
    streams.set_defaults(func=cmd_streams)

    calibrate = sub.add_parser(
        "calibrate",
        help="train the spiking decoder on a session; write a checkpoint and a report",
        description=(
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
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
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
    calibrate.add_argument("--gru", action="store_true", help="also fit the GRU baseline (slow)")
    calibrate.add_argument("--init", help="fine-tune this checkpoint instead of a new model")
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
    calibrate.set_defaults(func=cmd_calibrate)
    export = sub.add_parser(
        "export",
        help="export a trained decoder checkpoint to NIR",
        description=(
            "Translate a trained LIF decoder checkpoint (.safetensors) into the Neuromorphic "
            "Intermediate Representation (NIR, an HDF5 file read with nir.read): input "
            "normalisation and W_in as an Affine, the hidden layer as LIF with a recurrent "
            "Linear W_rec, the readout as Linear W_out then LI, and the output scaling as an "
            "Affine. Time constants are for forward Euler at the model's bin width, stored as "
            "metadata dt. Models with ALIF neurons are refused; so are models with reset by "
            "subtraction unless --subtract-reset threshold. A model calibrated with "
            "--alif-fraction 0 --reset zero exports as is.\n\n"
            "--dialect writes the shape one importer runs exactly: norse (norse.torch.from_nir "
            "with dt = the graph's metadata dt) or snntorch (snntorch.import_nir); both write "
            "the readout as a discrete recurrence instead of an LI node.\n\n"
            "--report prints what a chip budgets (neurons, synapses, fan-in, weight ranges) "
            "and the test R2 with weights quantized to 8 and 4 bits, on the test part of the "
            "session the checkpoint was calibrated on (or --session).\n\n"
            "example: bci export --nir model.safetensors model.nir --report\n"
            "example: bci export --nir model.safetensors norse.nir --dialect norse"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    export.add_argument("--nir", action="store_true", required=True, help="write NIR")
    export.add_argument("model", help="checkpoint file (.safetensors)")
    export.add_argument("out", help="output NIR file (.nir)")
    export.add_argument(
        "--subtract-reset",
        choices=("error", "threshold"),
        default="error",
        help="a model with reset by subtraction: refuse (default) or write it as LI + Threshold",
    )
    export.add_argument(
        "--dialect",
        choices=DIALECT_CHOICES,
        default="nir",
        help="graph shape: nir (default, exact continuous time), norse or snntorch",
    )
    export.add_argument(
        "--report", action="store_true", help="print hardware budgets and quantized test R2"
    )
    export.add_argument(
        "--session", help="report: score on this session (default: the calibration session)"
    )
    export.add_argument("--overwrite", action="store_true", help="replace an existing OUT")
    export.set_defaults(func=cmd_export)

    serve = sub.add_parser(
        "serve",
        help="decode a live LSL stream and serve the results over HTTP",
        description=(
            "Run the decoding daemon: resolve the neural LSL stream --stream (one sample per "
            "bin, e.g. from 'bci simulate'), decode each bin with the checkpoint --model, push "
            "the decoded kinematics to the LSL outlet bci-decoder-kinematics and serve the HTTP "
            "API under /api/v1 (health, kinematics, model, stream, adaptation; OpenAPI at /docs, "
            "Prometheus at /metrics). Every POST needs 'Authorization: Bearer TOKEN'; without "
            "--token one is generated and printed. Stops cleanly on Ctrl-C or SIGTERM.\n\n"
            "Every setting is a flag, a BCI_* variable and a key of a --config TOML file: "
            "flags override the variables, which override the file. The variables: "
            + ", ".join(env_names())
            + ".\n\n"
            "example: bci serve --stream bci-sim --model model.safetensors --port 8000\n"
            "example: bci serve --config rig.toml --port 8001"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    serve.add_argument(
        "--config",
        metavar="FILE",
        help="TOML rig file with any of the settings below by name (e.g. source_id = "
        '"amp-1"); relative paths are relative to its folder',
    )
    token = serve.add_mutually_exclusive_group()
    token.add_argument(
        "--token-file", help="read the bearer token from this file's first line (not in ps)"
    )
    add_settings_flags(serve, groups={"token": token})
    serve.set_defaults(func=cmd_serve)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    verbose = _configure_logging(args.verbose)
    if not verbose:
        quiet_liblsl()  # before any liblsl call; inherited by the processes we start
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print(f"bci {args.command}: interrupted", file=sys.stderr)
        return 130
    except CommandFailed as error:  # the work failed (see service.cli_checks)
        return _fail(args.command, error, 1)
    except (ValueError, FileNotFoundError, FileExistsError) as error:
        return _fail(args.command, error, 2)  # an input as given cannot be used (UsageError)
    except Exception as error:  # anything else is a runtime failure too: one line
        logger.debug("bci %s failed", args.command, exc_info=True)
        return _fail(args.command, error, 1, named=True)


def _fail(command: str, error: BaseException, status: int, named: bool = False) -> int:
    """Print ``error`` as one line (with its type when ``named``); return ``status``."""
    text = _one_line(error) or type(error).__name__
    if named and not isinstance(error, OSError):
        text = f"{type(error).__name__}: {text} (--verbose shows where)"
    print(f"bci {command}: error: {text}", file=sys.stderr)
    return status


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split("\n"))


if __name__ == "__main__":
    sys.exit(main())
