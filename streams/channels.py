"""A stream's (or a session's) channels, for matching them to a model's.

:func:`labels_of` reads a live stream's labels from its ``desc/channels/channel/label`` (the LSL
meta-data convention); :func:`read_channel_map` reads a ``--channel-map`` file;
:func:`in_model_order` checks a session against a model (the one compatibility check,
:func:`bci.compatibility.check_fits`) and puts its channels in the model's order.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

import pylsl

from bci.compatibility import check_fits
from bci.manifest import Manifest
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
    session: Session, manifest: Manifest, model: str, where: str, **fixes: str
) -> Session:
    """``session`` (named ``where`` in messages) checked against the model of ``manifest``
    (named ``model``) by :func:`bci.compatibility.check_fits` (``fixes``: its ``bin_fix`` and
    ``kinematics_fix``), with its channels in the model's order: the same session when they
    agree, its columns reordered when the labels come in another order (logged)."""
    match = check_fits(
        manifest, model, where, bin_s=session.bin_s, n_channels=session.n_channels,
        channel_labels=session.channel_labels,
        n_kinematics=None if session.kinematics is None else session.kinematics.shape[1],
        **fixes,
    )  # fmt: skip
    if match.note:
        logger.log(logging.INFO if match.index is not None else logging.WARNING, "%s", match.note)
    if match.index is None:
        return session
    return dataclasses.replace(
        session,
        neural=match.select(session.neural),
        channel_labels=tuple(manifest.channel_labels or ()),
    )
