"""``bci serve``: decode a live LSL stream and serve the results over HTTP."""

from __future__ import annotations

import argparse
from pathlib import Path

from service.cli_checks import UsageError, runtime_failures
from service.serve_settings import add_settings_flags, env_names, settings_from


def _description() -> str:
    return (
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
    )


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Add ``serve`` to ``sub``, a flag per setting (``service.serve_settings``)."""
    serve = sub.add_parser(
        "serve",
        help="decode a live LSL stream and serve the results over HTTP",
        description=_description(),
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
    serve.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Serve until Ctrl-C or SIGTERM: the decoder and API processes, supervised."""
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


def _read_token(path: str) -> str:
    """The bearer token in the first line of ``path`` (``--token-file``: kept out of ``ps``)."""
    try:
        token = Path(path).read_text().strip().splitlines()
    except OSError as error:
        raise UsageError(f"--token-file {path}: {error.strerror}") from None
    if not token or not token[0].strip():
        raise UsageError(f"--token-file {path} is empty; write the token on its first line")
    return token[0].strip()
