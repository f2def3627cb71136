"""LSL outlets with self-describing stream info.

Every outlet this project opens carries the meta-data of the XDF/LSL conventions
(https://github.com/sccn/xdf/wiki/Meta-Data) in its ``desc`` element::

    <desc>
      <channels>
        <channel><label>vx</label><unit>cm/s</unit><type>Kinematics</type></channel>
        ...
      </channels>
      <acquisition>
        <manufacturer>bci-decoder</manufacturer>
        <model>session player</model>        <!-- the component that opened the outlet -->
        <software_version>0.1.0</software_version>
      </acquisition>
    </desc>

Stream types used by the project (the ``type`` field; inlets resolve by it):

================= =============== ==============================================
stream name       type            content
================= =============== ==============================================
``<name>``        ``Neural``      spike counts (or features) per bin, one channel per electrode
``<name>-kinematics`` ``Kinematics`` cursor velocity, e.g. vx, vy in cm/s
``<name>-targets`` ``Targets``    target position x, y in cm
================= =============== ==============================================

There is no XDF content type for binned spike counts, so ``Neural`` names it (``EEG`` would
mislead viewers into filtering and re-referencing counts).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterable, Sequence
from importlib import metadata
from typing import Any

import numpy as np
import pylsl

logger = logging.getLogger(__name__)

NEURAL_TYPE = "Neural"
KINEMATICS_TYPE = "Kinematics"
TARGETS_TYPE = "Targets"
KINEMATICS_SUFFIX = "-kinematics"
TARGETS_SUFFIX = "-targets"
SOFTWARE = "bci-decoder"

CHANNEL_FORMATS: tuple[str, ...] = ("float32", "double64", "int8", "int16", "int32", "int64")


def software_version() -> str:
    """Installed version of this package, or ``"unknown"`` when run from a bare checkout."""
    try:
        return metadata.version(SOFTWARE)
    except metadata.PackageNotFoundError:
        return "unknown"


def stream_info(
    name: str,
    type: str,
    channel_labels: Sequence[str],
    units: Sequence[str | None] | str | None,
    nominal_srate: float,
    channel_format: str = "float32",
    source_id: str | None = None,
    *,
    channel_types: Sequence[str] | str | None = None,
    component: str = "outlet",
    extra: dict[str, str] | None = None,
) -> pylsl.StreamInfo:
    """Build a :class:`pylsl.StreamInfo` whose ``desc`` follows the LSL meta-data conventions.

    Args:
        name: stream name (non-empty), e.g. ``"bci-sim"``.
        type: content type, e.g. :data:`NEURAL_TYPE`.
        channel_labels: one label per channel; the channel count is their number.
        units: one unit per channel, or one string for all (e.g. ``"counts"``); a channel
            whose unit is None or ``""`` (or all of them, ``units=None``) gets no ``unit``
            element, so a reader sees "unknown" rather than an invented unit.
        nominal_srate: samples per second, or 0 for an irregular stream.
        channel_format: ``"float32"`` (default), ``"double64"``, or an integer format.
        source_id: unique id of the source so inlets can recover after a restart;
            defaults to ``"<name>@<type>"`` (pylsl would otherwise print a hashed one).
        channel_types: per-channel type (default: the stream type for every channel).
        component: what opens the outlet, e.g. ``"bci serve"`` (written as
            ``desc/acquisition/model``, the LSL meta-data field for it).
        extra: more ``desc/<key>`` text elements, e.g. the replay speed.
    """
    if not name:
        raise ValueError("stream name must not be empty; pass e.g. name='bci-sim'")
    labels = [str(label) for label in channel_labels]
    if not labels:
        raise ValueError(f"stream {name!r} needs at least one channel label")
    n = len(labels)
    types = type if channel_types is None else channel_types
    unit_list, type_list = _channel_units_and_types(name, n, units, types)
    srate = float(nominal_srate)
    if not math.isfinite(srate) or srate < 0:
        raise ValueError(
            f"stream {name!r}: nominal_srate={nominal_srate!r} must be >= 0 (0 = irregular)"
        )
    if channel_format not in CHANNEL_FORMATS:
        raise ValueError(
            f"stream {name!r}: channel_format={channel_format!r} is not one of "
            f"{list(CHANNEL_FORMATS)}"
        )
    info = pylsl.StreamInfo(
        name=name,
        type=type,
        channel_count=n,
        nominal_srate=srate,
        channel_format=channel_format,
        source_id=f"{name}@{type}" if source_id is None else source_id,
    )
    desc = info.desc()
    channels = desc.append_child("channels")
    for label, unit, channel_type in zip(labels, unit_list, type_list, strict=True):
        channel = channels.append_child("channel")
        channel.append_child_value("label", label)
        if unit:
            channel.append_child_value("unit", unit)
        channel.append_child_value("type", channel_type)
    acquisition = desc.append_child("acquisition")
    acquisition.append_child_value("manufacturer", SOFTWARE)
    acquisition.append_child_value("model", component)
    acquisition.append_child_value("software_version", software_version())
    for key, value in (extra or {}).items():
        desc.append_child_value(str(key), str(value))
    return info


def _channel_units_and_types(
    name: str, n: int, units: Sequence[str | None] | str | None, types: Sequence[str] | str
) -> tuple[list[str], list[str]]:
    """One unit ("" for none) and one type per channel, from per-channel lists or one value."""
    if units is None or isinstance(units, str):
        unit_list = [units or ""] * n
    else:
        unit_list = ["" if u is None else str(u) for u in units]
    if len(unit_list) != n:
        raise ValueError(
            f"stream {name!r}: {len(unit_list)} units for {n} channel labels; pass one unit "
            "per channel or a single unit string"
        )
    type_list = [types] * n if isinstance(types, str) else [str(t) for t in types]
    if len(type_list) != n:
        raise ValueError(f"stream {name!r}: {len(type_list)} channel types for {n} channels")
    return unit_list, type_list


def open_outlet(
    name: str,
    type: str,
    channel_labels: Sequence[str],
    units: Sequence[str | None] | str | None,
    nominal_srate: float,
    channel_format: str = "float32",
    source_id: str | None = None,
    *,
    channel_types: Sequence[str] | str | None = None,
    component: str = "outlet",
    extra: dict[str, str] | None = None,
    chunk_size: int = 0,
    max_buffered: int = 360,
) -> pylsl.StreamOutlet:
    """Open a :class:`pylsl.StreamOutlet` described by :func:`stream_info` (same arguments).

    ``chunk_size`` 0 sends each push as it comes (lowest latency); ``max_buffered`` is how
    many seconds (samples x 100 for irregular streams) the outlet keeps for slow consumers.
    The outlet is discoverable as soon as this returns.
    """
    info = stream_info(
        name,
        type,
        channel_labels,
        units,
        nominal_srate,
        channel_format,
        source_id,
        channel_types=channel_types,
        component=component,
        extra=extra,
    )
    outlet = pylsl.StreamOutlet(info, chunk_size=chunk_size, max_buffered=max_buffered)
    logger.debug(
        "opened outlet %r (type %s, %d channels, %g Hz)",
        name,
        type,
        info.channel_count(),
        info.nominal_srate(),
    )
    return outlet


def wait_for_consumers(
    outlets: Iterable[Any], timeout_s: float, stop: Any = None, poll_s: float = 0.005
) -> bool:
    """Wait until every outlet has a consumer: True then; False after ``timeout_s`` seconds
    or as soon as ``stop`` (an Event, or None) is set. Every pusher that must not send into
    the void (player, benchmarks, test outlets) waits here."""
    awaited = list(outlets)
    deadline = time.monotonic() + timeout_s
    while not all(outlet.have_consumers() for outlet in awaited):
        if (stop is not None and stop.is_set()) or time.monotonic() > deadline:
            return False
        time.sleep(poll_s)
    return True


class KinematicsOutlet:
    """Outlet ``"<name>-kinematics"`` for decoded (or recorded) kinematics.

    One sample per decoded bin, e.g. cursor velocity ``(vx, vy)`` in cm/s, stamped with the
    ``local_clock()`` time of the bin it decodes. ``units`` (one per label, e.g. a model's
    ``kinematics_units``) go into ``desc/channels/channel/unit``; None (or ``""`` for one
    channel) writes no unit. The outlet is open from construction until :meth:`close` (or
    the end of a ``with`` block).
    """

    def __init__(
        self,
        name: str,
        labels: Sequence[str] = ("vx", "vy"),
        units: Sequence[str | None] | None = ("cm/s", "cm/s"),
        nominal_srate: float = 0.0,
        *,
        source_id: str | None = None,
        component: str = "decoder",
        extra: dict[str, str] | None = None,
    ) -> None:
        self.name = f"{name}{KINEMATICS_SUFFIX}"
        self.labels = tuple(str(label) for label in labels)
        self.units: tuple[str, ...] | None = (
            None if units is None else tuple("" if u is None else str(u) for u in units)
        )
        self._outlet: pylsl.StreamOutlet | None = open_outlet(
            self.name,
            KINEMATICS_TYPE,
            self.labels,
            self.units,
            nominal_srate,
            "float32",
            source_id,
            component=component,
            extra=extra,
        )
        self.pushed = 0

    @property
    def running(self) -> bool:
        """True until :meth:`close`."""
        return self._outlet is not None

    def header_xml(self) -> str | None:
        """The outlet's full stream header (``info.as_xml()``: desc, created_at, hostname),
        as an inlet or a recorder sees it; None once closed."""
        outlet = self._outlet
        return None if outlet is None else str(outlet.get_info().as_xml())

    @property
    def have_consumers(self) -> bool:
        """True while at least one inlet is connected."""
        return self._outlet is not None and self._outlet.have_consumers()

    def push(self, values: Sequence[float] | np.ndarray, timestamp: float | None = None) -> None:
        """Push one sample (one value per label) stamped ``timestamp`` (``local_clock()``)."""
        if self._outlet is None:
            raise RuntimeError(
                f"outlet {self.name!r} is closed; create a new KinematicsOutlet to push again"
            )
        if isinstance(values, np.ndarray) and values.dtype == np.float32 and values.ndim == 1:
            sample = values.tolist()  # the decoder's case: no conversion but this one
        else:
            sample = np.asarray(values, dtype=np.float32).reshape(-1).tolist()
        if len(sample) != len(self.labels):
            raise ValueError(
                f"outlet {self.name!r} has {len(self.labels)} channels {self.labels}; got "
                f"{len(sample)} values"
            )
        if not all(map(math.isfinite, sample)):
            raise ValueError(f"outlet {self.name!r}: refusing non-finite values {sample}")
        stamp = pylsl.local_clock() if timestamp is None else float(timestamp)
        self._outlet.push_sample(sample, stamp)  # a list: pylsl converts it fastest
        self.pushed += 1

    def close(self) -> None:
        """Close the outlet (consumers see the stream end). Safe to call twice."""
        if self._outlet is not None:
            self._outlet = None  # pylsl destroys the outlet when the object is freed
            logger.debug("closed outlet %r after %d samples", self.name, self.pushed)

    def __enter__(self) -> KinematicsOutlet:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
