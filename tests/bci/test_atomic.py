"""The one atomic writer: fsync of the file and of its directory, in that order, before and
after the rename; the target never holds a partial file; failures leave no temporary file."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import bci.atomic as atomic
from bci.atomic import atomic_write, write_bytes, write_text


def _fsyncs(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, Path]]:
    """Record every ``os.fsync`` as (event, what the descriptor is) and every rename."""
    events: list[tuple[str, Path]] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        events.append(("fsync", Path(os.readlink(f"/proc/self/fd/{fd}"))))
        real_fsync(fd)

    def replace(src: str, dst: str | os.PathLike[str]) -> None:
        events.append(("replace", Path(dst)))
        real_replace(src, dst)

    monkeypatch.setattr(atomic.os, "fsync", fsync)
    monkeypatch.setattr(atomic.os, "replace", replace)
    return events


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc to name descriptors")
def test_fsyncs_the_file_then_renames_then_fsyncs_the_directory(tmp_path, monkeypatch):
    events = _fsyncs(monkeypatch)
    path = write_bytes(tmp_path / "f.bin", b"x" * 10)
    assert path.read_bytes() == b"x" * 10
    (kind, synced_file), rename, synced_dir = events
    assert kind == "fsync" and synced_file.parent == tmp_path
    assert synced_file.name.startswith(".f.bin.") and synced_file.name.endswith(".tmp")
    assert rename == ("replace", path)
    assert synced_dir == ("fsync", tmp_path)


def test_target_never_holds_a_partial_file(tmp_path):
    """Interrupted mid-write, with pieces already on disk: the target stays the old file."""
    path = write_text(tmp_path / "f.txt", "old contents")
    seen: list[bytes] = []
    with pytest.raises(KeyboardInterrupt), atomic_write(path) as fh:
        for piece in (b"new ", b"contents ", b"in pieces"):
            fh.write(piece)
            fh.flush()
            os.fsync(fh.fileno())
            seen.append(path.read_bytes())
        raise KeyboardInterrupt
    assert seen == [b"old contents"] * 3
    assert path.read_text() == "old contents"
    assert sorted(os.listdir(tmp_path)) == ["f.txt"]


def test_data_larger_than_a_piece_arrives_whole(tmp_path, monkeypatch):
    monkeypatch.setattr(atomic, "_CHUNK_BYTES", 3)
    data = bytes(range(256)) * 3
    assert write_bytes(tmp_path / "f.bin", data).read_bytes() == data


@pytest.mark.parametrize("existing", [True, False])
def test_failure_in_the_block_leaves_no_temporary_file(tmp_path, existing):
    path = tmp_path / "f.bin"
    if existing:
        write_bytes(path, b"old")
    with pytest.raises(KeyboardInterrupt), atomic_write(path) as fh:
        fh.write(b"half")
        fh.flush()
        raise KeyboardInterrupt
    assert sorted(os.listdir(tmp_path)) == (["f.bin"] if existing else [])
    if existing:
        assert path.read_bytes() == b"old"


def test_failed_rename_keeps_the_old_file(tmp_path, monkeypatch):
    path = write_bytes(tmp_path / "f.bin", b"old")

    def fail(*args: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(atomic.os, "replace", fail)
    with pytest.raises(OSError, match="disk full"):
        write_bytes(path, b"new")
    assert path.read_bytes() == b"old"
    assert sorted(os.listdir(tmp_path)) == ["f.bin"]


def test_permissions_follow_the_umask_and_missing_directory_raises(tmp_path):
    path = write_bytes(tmp_path / "f.bin", b"")
    assert path.stat().st_mode & 0o777 == 0o666 & ~atomic.current_umask()
    with pytest.raises(FileNotFoundError):
        write_bytes(tmp_path / "absent" / "f.bin", b"")
