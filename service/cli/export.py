"""``bci export``: a trained decoder checkpoint to NIR."""

from __future__ import annotations

import argparse
from pathlib import Path

from service.cli.common import DIALECT_CHOICES, print_table
from service.cli_checks import UsageError, damaged_inputs

DESCRIPTION = (
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
)


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Add ``export`` to ``sub``."""
    export = sub.add_parser(
        "export",
        help="export a trained decoder checkpoint to NIR",
        description=DESCRIPTION,
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
    export.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Write ``MODEL`` as a NIR graph to ``OUT``; with ``--report``, print its budgets."""
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
    print_table(["weights", "test R2"], [[k, f"{v:.4f}"] for k, v in report.r2.items()])
