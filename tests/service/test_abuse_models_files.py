"""Abuse cases for models, files and child processes, reproduced with real servers, files,
processes and signals. Each case asserts the one-line answer and that nothing already
accepted was lost (the decoding model, the models folder, existing files)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pylsl
import pytest
import torch
from factories import tiny_checkpoint
from serving import N_CHANNELS, rewrite, run_server, wait_for

from bci.checkpoint import MAX_MANIFEST_BYTES, load_checkpoint, save_checkpoint
from service.api import create_app
from service.cli import main
from service.daemon import Daemon
from service.settings import Settings
from streams.session import load_session, save_session
from streams.synthetic import SyntheticConfig, simulate_session
from streams.xdf_writer import XdfWriter

TOKEN = "abuse-token-123"
AUTH = {"Authorization": f"Bearer {TOKEN}"}

pytestmark = pytest.mark.timeout(120)


def small_checkpoint(path: Path, seed: int, metrics: dict[str, object] | None = None) -> Path:
    """An untrained 16-unit RSNN for the stream's channels, normalised to 3 counts per bin."""
    return tiny_checkpoint(path, n_in=N_CHANNELS, n_hidden=16, seed=seed, rate=3.0, metrics=metrics)


@dataclass
class Api:
    client: httpx.Client
    daemon: Daemon
    models: Path
    first: Path


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    """A daemon serving the HTTP API (no stream needed: model controls work while waiting)."""
    models = tmp_path_factory.mktemp("models")
    first = small_checkpoint(models / "first.safetensors", 0)
    name = f"bci-test-abuse-{uuid.uuid4().hex[:8]}"
    settings = Settings(
        stream=name, model=first, models_dir=models, token=TOKEN, port=0, adapt=True,
        output_name=f"{name}-decoded",
    )  # fmt: skip
    daemon = Daemon(settings)
    with run_server(create_app(settings, daemon)) as port:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}/api/v1", timeout=30.0) as client:
            yield Api(client, daemon, models, first)


def test_bad_models_are_refused_everywhere_and_never_kept(api: Api, tmp_path: Path) -> None:
    client = api.client
    current = client.get("/model").json()["model_id"]
    huge = load_checkpoint(small_checkpoint(tmp_path / "base.safetensors", 1)).model
    with torch.no_grad():
        huge.b_out.fill_(5000.0)  # finite, within the weight limit, but 5000 output scales off
    beyond = save_checkpoint(tmp_path / "beyond.safetensors", huge, kinematics_labels=("vx", "vy"))
    bad = {
        "deep": (
            rewrite(
                api.first, tmp_path / "deep.safetensors", manifest="[" * 100_000 + "]" * 100_000
            ),
            "the manifest is nested 100,000 levels deep, more than the 32 allowed",
        ),
        "huge-weights": (
            rewrite(api.first, tmp_path / "w.safetensors", w_out=((0, 0), 1e38)),
            "weight w_out[0, 0] is 1e+38, beyond the 10000",
        ),
        "beyond-bound": (
            beyond,
            "warm-up decode of the stored input means gave vx = 4.",
        ),
    }
    for path, _ in bad.values():  # in the models folder too: the listing must survive them
        (api.models / path.name).write_bytes(path.read_bytes())
    folder = sorted(p.name for p in api.models.iterdir())
    for case, (path, reason) in bad.items():
        by_name = client.post("/model/swap", json={"name": path.name}, headers=AUTH)
        files = {"file": (path.name, path.read_bytes())}
        upload = client.post("/model/upload", files=files, headers=AUTH)
        for response in (by_name, upload):
            assert response.status_code == 422, (case, response.text)
            detail = response.json()["detail"]
            assert reason in detail and "\n" not in detail, (case, detail)
            assert f"model {current} keeps decoding" in detail
    assert sorted(p.name for p in api.models.iterdir()) == folder  # no upload left behind
    assert client.get("/model").json()["model_id"] == current
    listing = client.get("/model/available")
    assert listing.status_code == 200
    errors = {m["name"]: m["error"] for m in listing.json()["models"]}
    assert "nested 100,000 levels deep" in errors["deep.safetensors"]
    assert errors["first.safetensors"] is None


def test_refused_upload_never_deletes_an_accepted_file(
    api: Api, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = api.client
    good = small_checkpoint(tmp_path / "good.safetensors", 2)
    files = {"file": ("good.safetensors", good.read_bytes())}
    assert client.post("/model/upload", files=files, headers=AUTH).status_code == 200
    (kept,) = [p for p in api.models.iterdir() if p.name.startswith("upload-")]

    def refuse(path: Path) -> str:
        raise ValueError("refused for this test")

    monkeypatch.setattr(api.daemon, "swap", refuse)  # the same bytes, refused this time
    response = client.post("/model/upload", files=files, headers=AUTH)
    assert response.status_code == 422 and "refused for this test" in response.json()["detail"]
    assert kept.read_bytes() == good.read_bytes()  # the accepted file stays
    kept.unlink()  # leave the folder as the other cases expect


def test_listing_never_returns_a_large_manifest(api: Api, tmp_path: Path) -> None:
    blob = {"blob": "x" * (MAX_MANIFEST_BYTES // 2)}
    small_checkpoint(api.models / "big.safetensors", 3, metrics=blob)
    over = rewrite(
        api.first,
        api.models / "over.safetensors",
        manifest=json.dumps({"x": "y" * MAX_MANIFEST_BYTES}),
    )
    try:
        response = api.client.get("/model/available")
        assert response.status_code == 200 and len(response.content) < 64 * 1024
        by_name = {m["name"]: m for m in response.json()["models"]}
        big = by_name["big.safetensors"]
        assert big["metrics"] is None and big["model_id"] is not None
        assert big["omitted"] == [
            f"metrics: {len(json.dumps(blob)):,} bytes of JSON, more than the 65,536 shown"
        ]
        assert "bytes, more than the 4,194,304 allowed" in by_name["over.safetensors"]["error"]
    finally:
        (api.models / "big.safetensors").unlink()
        over.unlink()


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "1e999"])
def test_non_finite_numbers_are_422_naming_the_field(api: Api, literal: str) -> None:
    headers = {**AUTH, "Content-Type": "application/json"}
    for path, body in (
        ("/adaptation/learning-rate", f'{{"lr": {literal}}}'),
        ("/model/swap", f'{{"name": {literal}}}'),
    ):
        response = api.client.post(path, content=body, headers=headers)
        assert response.status_code == 422, (path, response.text)
        (error,) = response.json()["detail"]
        assert error["loc"][-1] in ("lr", "name") and isinstance(error["input"], str)
    assert api.client.get("/health").status_code == 200


# -- no orphans: real processes, real signals -------------------------------------------------


def children_of(pid: int) -> list[int]:
    """Pids whose parent is ``pid`` (from /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # the process ended meanwhile
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"  # a zombie has ended; only its parent's wait is missing


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_simulate_killed_leaves_no_player_streaming(sig: signal.Signals) -> None:
    name = f"bci-test-orphan-{uuid.uuid4().hex[:8]}"
    command = [sys.executable, "-m", "service.cli", "simulate", "--name", name, "--channels", "4",
               "--minutes", "0.5", "--seconds", "120"]  # fmt: skip
    with subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as parent:
        players: list[int] = []
        try:
            assert "streaming" in parent.stdout.readline()  # printed once the outlets exist
            assert pylsl.resolve_byprop("name", name, 1, 10.0), "the player's stream is not visible"
            players += children_of(parent.pid)
            assert players, "the player process was not found"
            parent.send_signal(sig)
            out, err = parent.communicate(timeout=15.0)
            assert wait_for(lambda: not any(alive(pid) for pid in players), 10.0)
            assert pylsl.resolve_byprop("name", name, 1, 1.0) == []
        finally:
            for pid in filter(alive, players):  # only if the test failed: never leave them
                os.kill(pid, signal.SIGKILL)
            parent.kill()
    if sig == signal.SIGTERM:  # stopped as Ctrl-C stops it: cleanly, with its summary
        assert parent.returncode == 0
        assert "interrupted" in err and "Traceback" not in err and "pushed for" in out
    else:
        assert parent.returncode == -signal.SIGKILL


# -- files: refuse to clobber, read .part, name directories and .mat files, name flags -------

PYTHON_ARGUMENTS = ("=True", "=False", "=None", "allow_truncated", "overwrite=", "struct_name")
SPIKE = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "neural" / "spike_wf"


def fails(argv: list[str], capsys: pytest.CaptureFixture[str], status: int) -> str:
    """``bci ARGV`` exits with ``status`` and one error line naming no Python argument."""
    assert main(argv) == status
    err = capsys.readouterr().err
    assert err.startswith(f"bci {argv[0]}: error: ") and err.count("\n") == 1, err
    assert not any(text in err for text in PYTHON_ARGUMENTS), err
    return err


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A session (NPZ), the same as an unfinished recording (.xdf.part) and a .mat file."""
    root = tmp_path_factory.mktemp("files")
    session = simulate_session(SyntheticConfig(n_channels=8, duration_s=40.0, seed=4))
    npz = save_session(root / "session.npz", session)
    part = root / "rec.xdf.part"
    with pytest.raises(KeyboardInterrupt), XdfWriter(root / "rec.xdf") as writer:
        for stream_id, name, kind, data in (
            (1, "sim", "Neural", session.neural),
            (2, "sim-kinematics", "Kinematics", session.kinematics),
        ):
            writer.add_stream(stream_id, name, kind, data.shape[1], 1 / session.bin_s, "float32")
            writer.write_samples(stream_id, session.timestamps, data)
        raise KeyboardInterrupt  # the recorder was stopped hard: no footers, still .part
    assert part.is_file()
    mat = root / "day1.mat"
    mat.write_bytes(b"MATLAB 5.0 MAT-file")
    return {"npz": npz, "part": part, "mat": mat, "root": root}


def test_outputs_are_never_replaced_without_force(
    files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    kept = tmp_path / "kept"
    kept.write_bytes(b"accepted earlier")
    for argv in (
        ["simulate", "--out", str(kept), "--minutes", "0.1"],
        ["calibrate", str(files["npz"]), "--out", str(kept), "--steps", "1"],
        ["record", "--out", str(kept), "--stream", "never-resolved"],
        ["convert-limblab", str(files["mat"]), str(kept)],
    ):
        err = fails(argv, capsys, 2)
        assert f"{kept} exists; pass --force to replace it" in err
        assert kept.read_bytes() == b"accepted earlier"
    assert main(["simulate", "--out", str(kept), "--minutes", "0.1", "--force"]) == 0
    assert load_session(kept).n_bins == 120


def test_directories_and_mat_files_are_named(
    files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder, mat = str(files["root"]), str(files["mat"])
    out = str(tmp_path / "m.safetensors")
    for argv in (["replay", "--inspect", folder], ["calibrate", folder, "--out", out]):
        assert f"session {folder} is a directory; give a session file" in fails(argv, capsys, 2)
    for argv in (["replay", "--inspect", mat], ["calibrate", mat, "--out", out]):
        err = fails(argv, capsys, 2)
        assert (
            f"is a MATLAB file, not a session: convert it first with 'bci convert-limblab {mat}"
            in err
        )
    err = fails(["simulate", "--out", folder], capsys, 2)
    assert f"--out {folder} is a directory" in err
    assert "is a directory" in fails(["convert-limblab", folder, out], capsys, 2)


def test_unfinished_recordings_are_read_as_truncated(
    files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["replay", "--inspect", str(files["part"])]) == 0
    captured = capsys.readouterr()
    assert "unfinished recording (.part, no footers): truncated" in captured.err
    assert "no StreamFooter" in captured.out and " 800 " in captured.out
    out = tmp_path / "m.safetensors"
    argv = ["calibrate", str(files["part"]), "--out", str(out), "--steps", "2", "--hidden", "8"]
    assert main(argv) == 0
    assert "truncated" in capsys.readouterr().err
    assert load_checkpoint(out).manifest.n_channels == 8


def test_runtime_failures_are_one_line_and_exit_1(
    api: Api, files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    deep = rewrite(api.first, tmp_path / "deep.safetensors", manifest="[" * 100_000 + "]" * 100_000)
    argv = ["calibrate", str(files["npz"]), "--out", str(tmp_path / "m.safetensors")]
    err = fails([*argv, "--init", str(deep)], capsys, 1)
    assert "the manifest is nested 100,000 levels deep" in err
    truncated = tmp_path / "cut.xdf"  # an unfinished recording renamed by hand
    truncated.write_bytes(files["part"].read_bytes())
    err = fails(["calibrate", str(truncated), "--out", str(tmp_path / "m.safetensors")], capsys, 1)
    assert "is truncated or corrupt" in err
    assert not (tmp_path / "m.safetensors").exists()


def test_convert_limblab_reads_a_spike_day(tmp_path: Path) -> None:
    day = SPIKE / "Spike_07-18-12_WF_001.mat"
    if not day.is_file():
        pytest.skip(f"recorded file {day} is absent")
    out = tmp_path / "spike.npz"
    assert main(["convert-limblab", str(day), str(out)]) == 0  # struct binnedData, float32 times
    session = load_session(out)
    assert (session.n_bins, session.n_channels, session.bin_s) == (24000, 96, 0.05)


@pytest.mark.parametrize(
    ("flag", "value", "rule"),
    [
        ("--lr", "nan", "a finite number > 0"),
        ("--lr", "1e999", "a finite number > 0"),
        ("--rate-hz", "-1", "a finite number >= 0"),
        ("--alif-fraction", "2", "a number from 0 to 1"),
        ("--steps", "0", "an integer > 0"),
    ],
)
def test_bad_numbers_are_usage_errors_naming_the_flag(
    files: dict[str, Path], capsys: pytest.CaptureFixture[str], flag: str, value: str, rule: str
) -> None:
    argv = ["calibrate", str(files["npz"]), "--out", "unused.safetensors", flag, value]
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    assert f"argument {flag}: must be {rule}, got '{value}'" in capsys.readouterr().err
