"""``bci`` as a lab engineer runs it: ``--version``, ``bci streams``, liblsl kept quiet, one exit
status per kind of error for every command, and ``bci serve --config`` (real processes, files,
sockets and LSL outlets)."""

from __future__ import annotations

import functools
import importlib.metadata
import json
import os
import re
import signal
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pylsl
import pytest
from factories import tiny_checkpoint
from serving import wait_for

from service.cli import build_parser, main
from service.serve_settings import read_config, settings_from
from service.settings import Settings

pytestmark = pytest.mark.timeout(120)

BCI = [sys.executable, "-m", "service.cli"]
LIBLSL_LINE = "api_config.cpp"  # liblsl's first log line names its source file


def bci(*argv: str, timeout: float = 60.0, **kwargs) -> subprocess.CompletedProcess[str]:
    """``bci ARGV`` in a process of its own, without any liblsl configuration inherited."""
    env = {k: v for k, v in os.environ.items() if k != "LSLAPICFG"}
    return subprocess.run(
        [*BCI, *argv], capture_output=True, text=True, timeout=timeout, env=env, **kwargs
    )


@pytest.fixture(scope="module")
def outlet() -> Iterator[pylsl.StreamInfo]:
    tag = uuid.uuid4().hex[:12]
    # "0..." sorts before the streams of concurrent tests: a summary line names it first
    info = pylsl.StreamInfo(f"0ops-{tag}", "EEG", 3, 250.0, pylsl.cf_float32, f"ops-src-{tag}")
    stream = pylsl.StreamOutlet(info)
    yield info
    del stream


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small untrained checkpoint: enough to start the daemon."""
    return tiny_checkpoint(tmp_path_factory.mktemp("model") / "demo.safetensors")


@pytest.fixture
def taken_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(1)
        yield sock.getsockname()[1]


def test_version_is_the_installed_packages() -> None:
    done = bci("--version")
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"bci {importlib.metadata.version('bci-decoder')}\n"


def test_streams_lists_an_outlet_and_liblsl_stays_quiet(outlet: pylsl.StreamInfo) -> None:
    done = bci("streams", "--wait", "0.5")
    assert done.returncode == 0 and done.stderr == ""  # no liblsl log line
    header, *rows = done.stdout.splitlines()
    assert header.split() == ["name", "type", "channels", "rate", "Hz", "source_id", "host"]
    row = next(r.split() for r in rows if r.startswith(outlet.name()))
    assert row == [outlet.name(), "EEG", "3", "250", outlet.source_id(), socket.gethostname()]

    listed = json.loads(bci("streams", "--wait", "0.5", "--json").stdout)
    assert {
        "name": outlet.name(),
        "type": "EEG",
        "channels": 3,
        "rate_hz": 250.0,
        "source_id": outlet.source_id(),
        "host": socket.gethostname(),
    } in listed

    verbose = bci("--verbose", "streams", "--wait", "0.2")
    assert verbose.returncode == 0 and LIBLSL_LINE in verbose.stderr  # liblsl does log


def test_stream_not_found_lists_the_visible_streams(
    outlet: pylsl.StreamInfo, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["record", "--out", str(tmp_path / "x.xdf"), "--stream", f"{outlet.name()}-typo"]
    assert main([*argv, "--resolve-timeout", "0.3"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "visible LSL streams: " in err
    assert f"{outlet.name()!r} (EEG, 3 ch, 250 Hz, source_id {outlet.source_id()!r}" in err


def _garbage(path: Path) -> str:
    path.write_bytes(b"not what the name says")
    return str(path)


def _cases(tmp: Path, model: Path, port: int) -> dict[str, tuple[list[str], int, str]]:
    """Per command: argv, its exit status and a part of its one error line."""
    long_name = str(tmp / ("x" * 300 + ".npz"))
    rig = tmp / "rig.toml"
    rig.write_text('stream = "amp"\nsorce_id = "amp-1"\n')
    demo_cache = model.parent
    return {
        "simulate runtime": (["simulate", "--out", long_name, "--minutes", "0.1"], 1, "too long"),
        "convert-limblab runtime": (
            ["convert-limblab", _garbage(tmp / "x.mat"), str(tmp / "x.npz")],
            1,
            "cannot read",
        ),
        "replay runtime": (
            ["replay", _garbage(tmp / "a.npz"), "--play", "--seconds", "1"],
            1,
            "not an NPZ archive",
        ),
        "record usage": (
            ["record", "--out", str(tmp / "r.xdf"), "--stream", "kind=EEG"],
            2,
            "--stream: stream selector 'kind=EEG' is not understood",
        ),
        "export runtime": (
            ["export", "--nir", _garbage(tmp / "m.safetensors"), str(tmp / "m.nir")],
            1,
            "is not a valid safetensors file",
        ),
        "serve usage": (
            ["serve", "--config", str(rig)],
            2,
            f"{rig}: unknown key 'sorce_id' (did you mean 'source_id'?)",
        ),
        "serve runtime": (
            ["serve", "--model", str(model), "--port", str(port)],
            1,
            f"cannot listen on 127.0.0.1:{port}",
        ),
        "demo runtime": (
            ["demo", "--live", "--cache", str(demo_cache), "--port", str(port)],
            1,
            f"cannot listen on 127.0.0.1:{port}",
        ),
    }


CASES = (
    "simulate runtime",
    "convert-limblab runtime",
    "replay runtime",
    "record usage",
    "export runtime",
    "serve usage",
    "serve runtime",
    "demo runtime",
)


@pytest.mark.parametrize("case", CASES)
def test_exit_status_and_one_line(
    case: str,
    tmp_path: Path,
    model: Path,
    taken_port: int,
    capsys: pytest.CaptureFixture[str],
) -> None:
    argv, status, message = _cases(tmp_path, model, taken_port)[case]
    assert main(argv) == status
    err = capsys.readouterr().err
    assert err.startswith(f"bci {argv[0]}: error: ") and err.count("\n") == 1, err
    assert message in err


def test_streams_bad_wait_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stop:
        main(["streams", "--wait", "0"])
    assert stop.value.code == 2 and "--wait: must be a finite number > 0" in capsys.readouterr().err


# --- serve settings: flags generated from Settings, and --config ----------------------------
def test_every_setting_is_a_serve_flag_with_its_variable(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for name in Settings.model_fields:
        assert f"--{name.replace('_', '-')} " in text and f"BCI_{name.upper()}" in text, name
    parse = build_parser().parse_args
    args = parse(["serve", "--adapt", "--realtime", "--source-id", "amp-1", "--port", "0"])
    settings = settings_from(args)
    assert (settings.adapt, settings.realtime, settings.source_id, settings.port) == (
        True,
        True,
        "amp-1",
        0,
    )
    args = parse(["serve", "--allowed-hosts", "rig.lan", "localhost", "--hold-radius", "0.5"])
    assert settings_from(args).allowed_hosts == ["rig.lan", "localhost"]
    with pytest.raises(SystemExit):  # checked by the field's own bounds at parse time
        parse(["serve", "--hold-radius", "-1"])
    assert "--hold-radius: input should be greater than or equal to 0" in capsys.readouterr().err


def test_config_then_environment_then_flags(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rig = tmp_path / "rig"
    rig.mkdir()
    (rig / "rig.toml").write_text(
        'stream = "amp"\nsource_id = "file-src"\nmodel = "models/m.safetensors"\n'
        'port = 9001\nadapt = true\nallowed_hosts = ["rig.lan"]\n'
    )
    monkeypatch.setenv("BCI_SOURCE_ID", "env-src")
    monkeypatch.setenv("BCI_PORT", "9002")
    args = build_parser().parse_args(["serve", "--config", str(rig / "rig.toml"), "--port", "0"])
    settings = settings_from(args)
    assert settings.stream == "amp" and settings.adapt  # the file
    assert settings.allowed_hosts == ["rig.lan"]
    assert settings.model == rig / "models" / "m.safetensors"  # relative to the file
    assert settings.source_id == "env-src"  # the environment over the file
    assert settings.port == 0  # the flag over both
    args = build_parser().parse_args(["serve", "--config", str(rig / "rig.toml"), "--no-adapt"])
    assert not settings_from(args).adapt


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("port = 'eighty'", "key 'port': input should be a valid integer"),
        ("hold_radius = -1.0", "key 'hold_radius': input should be greater than or equal to 0"),
        ("input = 'spikes'", "key 'input': input should be 'auto', 'counts'"),
        ("stream = ", "is not valid TOML"),
    ],
)
def test_config_errors_name_the_key_and_the_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, message: str
) -> None:
    rig = tmp_path / "rig.toml"
    rig.write_text(text + "\n")
    assert main(["serve", "--config", str(rig)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(rig) in err and message in err, err


def test_serve_process_takes_its_settings_from_file_environment_and_flags(
    model: Path, tmp_path: Path, taken_port: int
) -> None:
    name = f"ops-cfg-{uuid.uuid4().hex[:8]}"
    rig = tmp_path / "rig.toml"
    rig.write_text(
        f'stream = "{name}"\nmodel = "{os.path.relpath(model, tmp_path)}"\n'
        f'port = {taken_port}\noutput_name = "{name}-file"\ntoken = "from-the-file"\n'
    )
    env = {k: v for k, v in os.environ.items() if k != "LSLAPICFG"}
    env["BCI_OUTPUT_NAME"] = f"{name}-env"
    argv = [*BCI, "serve", "--config", str(rig), "--port", "0"]
    with subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd="/"
    ) as process:
        try:
            line = process.stdout.readline()
            found = re.search(r"http://127\.0\.0\.1:(\d+)/api/v1", line)
            assert found, line + process.stderr.read()
            assert f"stream {name!r} with {model}" in line  # the file, its path made absolute
            assert f"-> {name}-env-kinematics" in line  # the environment over the file
            port = int(found.group(1))
            assert port != taken_port  # the flag (--port 0) over the file
            auth = {"Authorization": "Bearer from-the-file"}
            url = f"http://127.0.0.1:{port}/api/v1/model/rollback"
            answers = []  # 503 until the decoder process has loaded the model
            post = functools.partial(httpx.post, url, headers=auth, timeout=30.0)
            assert wait_for(lambda: answers.append(post()) or answers[-1].status_code != 503,
                            30.0)  # fmt: skip
            rollback = answers[-1]
            assert rollback.status_code == 409  # authorised by the file's token: nothing to undo
            process.send_signal(signal.SIGTERM)
            out, err = process.communicate(timeout=30)
        finally:
            if process.poll() is None:
                process.kill()
    assert process.returncode == 0, err
    assert LIBLSL_LINE not in err and "token" not in line + out


def test_readme_rig_file_is_read_as_shown(tmp_path: Path) -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme.split("## Rig configuration", 1)[1].split("\n## ", 1)[0]
    example = section.split("```toml\n", 1)[1].split("```", 1)[0]
    rig = tmp_path / "rig.toml"
    rig.write_text(example)
    values = read_config(rig)
    assert values["source_id"] == "brainamp-1234" and values["adapt"] is True
    assert values["model"] == tmp_path / "models" / "day2.safetensors"
    for name in Settings.model_fields:  # the key list names every setting
        assert f"`{name}`" in section, name
