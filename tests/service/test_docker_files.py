"""docker/Dockerfile and docker/compose.yaml, checked without Docker: both parsed, and the
image's HEALTHCHECK command run as a process against a real server."""

from __future__ import annotations

import json
import queue
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from serving import free_port, run_server

from service.api import create_app
from service.api.link import DecoderLink
from service.settings import Settings
from service.shared_state import SharedState

DOCKER = Path(__file__).resolve().parents[2] / "docker"
NUMBA_CACHE = "/var/cache/numba"
KEYWORDS = {"FROM", "ENV", "WORKDIR", "RUN", "COPY", "USER", "EXPOSE", "HEALTHCHECK", "CMD"}

pytestmark = pytest.mark.timeout(60)


def instructions() -> list[tuple[str, str]]:
    """The Dockerfile's instructions as (KEYWORD, arguments), continuation lines joined."""
    text = re.sub(r"\\\n", " ", (DOCKER / "Dockerfile").read_text())
    lines = [line.strip() for line in text.splitlines()]
    return [
        (line.split(None, 1)[0].upper(), line.split(None, 1)[1])
        for line in lines
        if line and not line.startswith("#")
    ]


def healthcheck() -> list[str]:
    (check,) = [args for keyword, args in instructions() if keyword == "HEALTHCHECK"]
    options, _, command = check.partition(" CMD ")
    assert "--interval=" in options and "--start-period=" in options
    return json.loads(command)  # exec form: a JSON array, as Docker requires


def test_dockerfile_keeps_the_numba_cache_on_a_writable_folder() -> None:
    parsed = instructions()
    assert {keyword for keyword, _ in parsed} <= KEYWORDS
    assert ("ENV", f"NUMBA_CACHE_DIR={NUMBA_CACHE}") in parsed
    owned = [a for k, a in parsed if k == "RUN" and "chown" in a]
    assert owned and NUMBA_CACHE in owned[0]
    assert parsed.index(("USER", "bci")) > parsed.index(("RUN", owned[0]))


def test_compose_mounts_the_cache_and_checks_only_the_daemon() -> None:
    compose = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    daemon, simulator = compose["services"]["daemon"], compose["services"]["simulator"]
    assert f"numba-cache:{NUMBA_CACHE}" in daemon["volumes"]
    assert "numba-cache" in compose["volumes"]
    assert "healthcheck" not in daemon  # the image's
    assert simulator["healthcheck"] == {"disable": True}  # it serves no HTTP


def test_healthcheck_command_passes_only_while_the_api_answers() -> None:
    command = healthcheck()
    assert command[0] == "python"
    command[0] = sys.executable
    shared = SharedState.create(2)
    link = DecoderLink(Settings(token="t"), shared, queue.Queue(), queue.Queue())
    try:
        with run_server(create_app(Settings(token="t"), link)) as port:
            up = subprocess.run(command, env={"BCI_PORT": str(port)}, timeout=20, check=False)
    finally:
        link.close()
        shared.close()
    down = subprocess.run(
        command, env={"BCI_PORT": str(free_port())}, capture_output=True, timeout=20, check=False
    )
    assert up.returncode == 0 and down.returncode != 0
