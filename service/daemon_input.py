"""Whether the live stream can feed the model, and the front-end that bins it.

The live stream is checked against the served model by the one compatibility check
(:func:`bci.compatibility.check_fits`): its bins are the model's (a session player declares
``desc/session_bin_s`` and ``desc/replay_speed``; any other stream is binned at the model's bin
width) and its channel labels match the model's (``--channel-map`` to map them). An events
stream has one channel (the index of the model input each event feeds). A new source_id under
the stream's name is matched again.
"""

from __future__ import annotations

import logging

from bci.compatibility import ChannelMatch, check_fits
from bci.manifest import Manifest
from service.engine import Engine
from service.settings import Settings
from streams.frontend import FrontEnd, input_kind_of
from streams.lsl_inlet import LslInlet, StreamSchema

__all__ = ["InputMatch"]

logger = logging.getLogger(__name__)


class InputMatch:
    """Which channel of ``inlet``'s stream feeds which input of ``engine``'s model.

    ``manifest``: the served model's (the first one: a hot swap keeps its inputs);
    ``channel_map``: the ``--channel-map`` file's model label -> stream label (None: match by
    label or position).
    """

    def __init__(
        self,
        settings: Settings,
        engine: Engine,
        inlet: LslInlet,
        manifest: Manifest,
        channel_map: dict[str, str] | None,
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.inlet = inlet
        self.manifest = manifest
        self.channel_map = channel_map
        self.channels = ChannelMatch(None, "")  # stream channel -> model input
        self._bin_s = engine.bin_s  # the stream's bin width as declared, model time (s)
        self._events = False  # the stream carries spike events (channel indices)
        self._source = ""  # the source_id whose channels self.channels matches
        self._source_refusal = ""  # why that source's channels do not fit the model

    def make_frontend(self, info: StreamSchema, description: dict[str, str]) -> FrontEnd:
        """The front-end for this stream; ``ValueError`` when it cannot feed the model."""
        settings, engine = self.settings, self.engine
        self._bin_s, speed = _declared_bins(info, description, engine)
        bin_s = self._bin_s / speed  # on the stream's clock
        kind = settings.input
        if kind == "auto":
            kind = input_kind_of(
                info.nominal_srate, info.channel_format, info.n_channels, description, bin_s
            )
        if kind == "events" and info.n_channels != 1:
            raise ValueError(
                f"stream {info.name!r} has {info.n_channels} channels but an events stream "
                "has one (the channel index); pass --input for another input kind"
            )
        self._events = kind == "events"
        self.channels = self._match_channels(info)
        self._source = info.source_id
        frontend = FrontEnd(
            kind,
            bin_s,
            engine.n_channels if kind == "events" else info.n_channels,
            sample_rate_hz=info.nominal_srate,
            grace_s=settings.bin_grace_ms * 1e-3,
            threshold_k=settings.threshold_k,
        )
        logger.info(
            "input %s from %s: %g Hz into %g ms bins", kind, info.describe(),
            info.nominal_srate, bin_s * 1e3,
        )  # fmt: skip
        return frontend

    def source_refusal(self, info: StreamSchema) -> str:
        """Why the stream's current source does not fit the model ("" when it does); after
        the source changed (a new source_id under the stream's name) its channel labels are
        matched again."""
        if info.source_id != self._source:
            self._source = info.source_id
            try:
                self.channels = self._match_channels(info)
                self._source_refusal = ""
            except ValueError as error:
                self._source_refusal = str(error)
        return self._source_refusal

    def _match_channels(self, info: StreamSchema) -> ChannelMatch:
        """Which stream channel feeds which model input: the one compatibility check of the
        stream (declared bin width, channels and labels) against the served model. Events
        name the model's inputs themselves."""
        manifest = self.manifest
        match = check_fits(
            manifest, "the model", f"stream {info.name!r}", bin_s=self._bin_s,
            n_channels=manifest.n_channels if self._events else info.n_channels,
            channel_labels=manifest.channel_labels if self._events else self.inlet.channel_labels,
            explicit=None if self._events else self.channel_map,
            bin_fix="serve a model trained at this bin width",
        )  # fmt: skip
        if match.note:
            level = logging.INFO if match.index is not None else logging.WARNING
            logger.log(level, "%s", match.note)
        return match


def _declared_bins(
    info: StreamSchema, description: dict[str, str], engine: Engine
) -> tuple[float, float]:
    """The stream's bin width (s, in session time) and replay speed (x real time).

    A session player declares ``desc/session_bin_s`` (its samples are bins, played at
    ``desc/replay_speed`` x real time: ``session_bin_s / speed`` on its clock). Any other stream
    is binned at the model's bin width, in real time.
    """
    try:
        declared = float(description.get("session_bin_s", engine.bin_s))
        speed = float(description.get("replay_speed", 1.0))
    except ValueError as error:
        raise ValueError(f"stream {info.name!r} has an unreadable desc: {error}") from None
    if not speed > 0:
        raise ValueError(f"stream {info.name!r} declares speed {speed:g}; it must be > 0")
    return declared, speed
