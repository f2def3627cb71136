"""The live demo (``make demo``): the simulated motor-cortex stream decoded by the daemon.

:func:`demo_model` trains the demo decoder on first use (an 8-minute simulated session,
``bci calibrate``'s pipeline) and caches it; :func:`run_live_demo` starts the simulator in
its own process, then the daemon with adaptation on (learning from the simulator's true
velocity stream) and its HTTP API and dashboard, until Ctrl-C or ``seconds``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from calibration.calibrate import CalibrationOptions, run_calibration
from service.api.server import listen
from service.settings import Settings, resolve_token
from service.supervisor import serve_supervised
from streams.player import simulate_stream
from streams.session import save_session
from streams.synthetic import SyntheticConfig, simulate_session

__all__ = ["DEMO_STREAM", "demo_model", "run_live_demo"]

logger = logging.getLogger(__name__)

DEMO_STREAM = "bci-sim"
DEMO_MODEL = "demo.safetensors"


def demo_model(
    cache_dir: Path,
    minutes: float = 8.0,
    steps: int = 600,
    seed: int = 0,
    progress: Callable[[str], None] = print,
) -> Path:
    """The cached demo checkpoint in ``cache_dir``, trained first if it is not there.

    The model is trained on ``minutes`` of the population :func:`run_live_demo` streams
    (same ``seed``), with the calibration pipeline (``steps`` BPTT steps; test metrics in
    its manifest). Delete the file to retrain.
    """
    cache_dir.mkdir(parents=True, exist_ok=True)
    model = cache_dir / DEMO_MODEL
    if model.is_file():
        return model
    progress(f"training the demo decoder ({minutes:g} simulated minutes, once) ...")
    session = simulate_session(SyntheticConfig(duration_s=minutes * 60.0, seed=seed))
    session_path = save_session(cache_dir / "demo-session.npz", session)
    result = run_calibration(
        session_path, model, options=CalibrationOptions(steps=steps, seed=seed)
    )
    progress(f"demo decoder cached at {model} (test R² {result.metrics['test']['snn']['r2']:.3f})")
    return model


def run_live_demo(
    cache_dir: Path,
    host: str = "127.0.0.1",
    port: int = 8000,
    token: str | None = None,
    seconds: float | None = None,
    seed: int = 0,
) -> None:
    """Stream the simulated population and decode it live, adapting, with the dashboard."""
    model = demo_model(cache_dir, seed=seed)
    settings, generated = resolve_token(
        Settings(
            stream=DEMO_STREAM,
            source_id=f"bci-player-{DEMO_STREAM}",  # the player's: lets liblsl recover it
            target_source_id=f"bci-player-{DEMO_STREAM}-kinematics",
            model=model,
            models_dir=cache_dir,
            adapt=True,
            target_stream=f"{DEMO_STREAM}-kinematics",
            host=host,
            port=port,
            token=token,
        )
    )
    listener = listen(host, port)
    port = listener.getsockname()[1]
    # a long session, looping: the same population (seed) the demo model was trained on
    simulator = simulate_stream(
        SyntheticConfig(duration_s=3600.0, seed=seed), name=DEMO_STREAM, loop=True
    )

    def announce() -> None:
        print(f"dashboard: http://{host}:{port}/  (API under /api/v1; Ctrl-C to stop)", flush=True)
        if generated:  # a token given by flag or environment is never echoed
            print(f"token (generated): {settings.token}", flush=True)

    with simulator:
        print(f"simulator streaming {DEMO_STREAM!r} (96 channels, 50 ms bins)", flush=True)
        try:  # the decoder and the API in processes of their own, as bci serve runs them
            serve_supervised(settings, listener, announce, seconds=seconds)
        finally:
            listener.close()
