"""A stream's (or a session's) channels, for matching them to a model's.

:func:`labels_of` reads a live stream's labels from its ``desc/channels/channel/label`` (the LSL
meta-data convention); :func:`read_channel_map` reads a ``--channel-map`` file;
:func:`in_model_order` puts a session's channels in a model's order. The matching rule itself
is :func:`bci.compatibility.match_channels`, part of the one compatibility check.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Sequence
from pathlib import Path

import pylsl

from bci.compatibility import ChannelMatch
from streams.session import Session

__all__ = ["in_model_order", "labels_of", "read_channel_map"]

logger = logging.getLogger(__name__)


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


def in_model_order(
    session: Session, match: ChannelMatch, model_labels: Sequence[str] | None
) -> Session:
    """``session`` with its channels put in a model's order by ``match`` (from
    :func:`bci.compatibility.check_fits`): the same session when they agree, its columns
    reordered when the labels come in another order (the match's note is logged)."""
    if match.note:
        logger.log(logging.INFO if match.index is not None else logging.WARNING, "%s", match.note)
    if match.index is None:
        return session
    return dataclasses.replace(
        session, neural=match.select(session.neural), channel_labels=tuple(model_labels or ())
    )
