"""Which channel of a stream (or a session) feeds which model input: matching by label.

One rule for the daemon, ``bci replay`` and ``bci calibrate --init``
(:func:`match_channels`):

- an explicit map (``--channel-map FILE``: a JSON object, model label -> stream label, one
  entry per model channel) wins: the stream may then have more channels than the model;
- labels equal, in the same order: channel ``i`` feeds input ``i``;
- the same labels in another order: each input is fed by the channel of its label (logged);
- other labels: refused, naming the first labels that differ, and the fix;
- no labels on one side: channels are taken in order (with a warning saying so), when the
  counts agree.

:func:`labels_of` reads a live stream's labels from its ``desc/channels/channel/label``
(the LSL meta-data convention). Labels are compared exactly (strings).
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pylsl

from streams.session import Session

__all__ = ["ChannelMatch", "in_model_order", "labels_of", "match_channels", "read_channel_map"]

logger = logging.getLogger(__name__)

_SHOWN = 3  # differing labels named in a refusal
_FIX = "pass --channel-map FILE (JSON: model label -> stream label) to map them"


@dataclass(frozen=True)
class ChannelMatch:
    """``index[i]``: the stream column that feeds model input ``i`` (None: column ``i``);
    ``note``: what was decided, in words (empty when the labels simply agree)."""

    index: np.ndarray | None
    note: str

    def select(self, data: np.ndarray) -> np.ndarray:
        """``data`` (n, stream channels) as (n, model channels), in the model's order."""
        return data if self.index is None else data[:, self.index]


def labels_of(info: pylsl.StreamInfo) -> tuple[str, ...] | None:
    """The channel labels in ``info``'s desc; None unless every channel has a non-empty one."""
    channel = info.desc().child("channels").child("channel")
    labels = []
    while not channel.empty():
        labels.append(channel.child_value("label"))
        channel = channel.next_sibling("channel")
    if len(labels) != info.channel_count() or not all(labels):
        return None
    return tuple(labels)


def read_channel_map(path: str | Path) -> dict[str, str]:
    """A ``--channel-map`` file: a JSON object of model label -> stream label (strings)."""
    path = Path(path)
    try:
        mapping = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"--channel-map {path}: cannot read a JSON object ({error})") from error
    if not isinstance(mapping, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in mapping.items()
    ):
        raise ValueError(
            f"--channel-map {path}: expected a JSON object of model label -> stream label, "
            'e.g. {"elec1": "A-001", "elec2": "A-002"}'
        )
    return mapping


def match_channels(
    model_labels: Sequence[str] | None,
    n_model: int,
    stream_labels: Sequence[str] | None,
    n_stream: int,
    *,
    where: str,
    explicit: dict[str, str] | None = None,
) -> ChannelMatch:
    """How ``where`` (e.g. ``"stream 'amp'"``; ``n_stream`` channels) feeds a model of
    ``n_model`` inputs labelled ``model_labels`` (see the module docstring); ``ValueError``
    naming the problem and the fix."""
    model = None if model_labels is None else list(model_labels)
    stream = None if stream_labels is None else list(stream_labels)
    if explicit is not None:
        return _explicit(model, stream, explicit, where)
    if model is None or stream is None:
        if n_model != n_stream:
            raise ValueError(
                f"{where} has {n_stream} channels but the model expects {n_model}; use a "
                f"model trained on these channels, or {_FIX}"
            )
        side = "the model has" if model is None else f"{where} has"
        return ChannelMatch(None, f"{side} no channel labels: channels are taken in order")
    if stream == model:
        return ChannelMatch(None, "")
    if sorted(stream) == sorted(model) and len(set(model)) == len(model):
        index = np.array([stream.index(label) for label in model], dtype=np.intp)
        return ChannelMatch(index, f"{where} has the model's channel labels in another "
                                   "order: channels mapped by label")  # fmt: skip
    missing = [label for label in model if label not in stream][:_SHOWN]
    extra = [label for label in stream if label not in model][:_SHOWN]
    detail = (
        f"model labels {missing} are not in it, it has {extra} instead"
        if missing or extra
        else f"its {len(stream)} labels repeat some of the model's {len(model)}"
    )
    raise ValueError(f"{where}'s channel labels differ from the model's: {detail}; {_FIX}")


def in_model_order(
    session: Session, model_labels: Sequence[str] | None, n_model: int, *, where: str
) -> Session:
    """``session`` with its channels matched to a model's (:func:`match_channels`): the same
    session when they agree, its columns reordered when the labels come in another order."""
    match = match_channels(
        model_labels, n_model, session.channel_labels, session.n_channels, where=where
    )
    if match.note:
        logger.log(logging.INFO if match.index is not None else logging.WARNING, "%s", match.note)
    if match.index is None:
        return session
    return dataclasses.replace(
        session, neural=match.select(session.neural), channel_labels=tuple(model_labels or ())
    )


def _explicit(
    model: list[str] | None, stream: list[str] | None, mapping: dict[str, str], where: str
) -> ChannelMatch:
    if model is None:
        raise ValueError(
            "--channel-map needs a model with channel labels; this one has none (calibrate "
            "it from a session with channel labels)"
        )
    if stream is None:
        raise ValueError(f"--channel-map needs {where} to label its channels; it has no labels")
    unmapped = [label for label in model if label not in mapping][:_SHOWN]
    if unmapped:
        raise ValueError(f"--channel-map gives no stream channel for model labels {unmapped}")
    unknown = [mapping[label] for label in model if mapping[label] not in stream][:_SHOWN]
    if unknown:
        raise ValueError(f"--channel-map names {unknown}, which {where} does not have")
    index = np.array([stream.index(mapping[label]) for label in model], dtype=np.intp)
    return ChannelMatch(index, f"{where}: channels mapped by --channel-map")
