"""Whether data can feed a decoder: the one compatibility check.

Data (a live stream or a recorded session) fit a checkpoint's decoder (:func:`check_fits`) when

- their bins are the decoder's bin width, within a relative :data:`BIN_WIDTH_RTOL`;
- they carry as many kinematics as the decoder decodes, under its labels in its order (when
  they carry any, or name them);
- their channels feed the decoder's inputs, matched by label (:func:`match_channels`).

The daemon (a stream and each hot-swapped model), ``bci replay`` and ``bci calibrate --init``
all ask it; the checkpoint reader compares its manifest with its config by
:func:`same_bin_width`. Each check raises ``ValueError`` naming the mismatch and the fix.

Channels are matched by one rule:

- an explicit map (``--channel-map FILE``: a JSON object, model label -> stream label, one
  entry per model channel) wins: the stream may then have more channels than the model;
- labels equal, in the same order: channel ``i`` feeds input ``i``;
- the same labels in another order: each input is fed by the channel of its label;
- other labels: refused, naming the first labels that differ, and the fix;
- no labels on one side: channels are taken in order (the note says so), when the counts
  agree.

Labels are compared exactly (strings).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # the manifest module compares bin widths with this one's rule
    from bci.manifest import Manifest

__all__ = [
    "BIN_WIDTH_RTOL",
    "ChannelMatch",
    "check_fits",
    "match_channels",
    "same_bin_width",
]

BIN_WIDTH_RTOL = 1e-6
"""Relative tolerance between two bin widths (50 ns on a 50 ms bin): loose enough for a width
that went through text (a stream's desc, a manifest), far tighter than any two widths a rig
would use."""

_SHOWN = 3  # differing labels named in a refusal
_MAP_FIX = (
    "use a model trained on these channels, or pass --channel-map FILE (JSON: model label -> "
    "stream label) to map them"
)


@dataclass(frozen=True)
class ChannelMatch:
    """``index[i]``: the data column that feeds model input ``i`` (None: column ``i``);
    ``note``: what was decided, in words (empty when the labels simply agree)."""

    index: np.ndarray | None
    note: str

    def select(self, data: np.ndarray) -> np.ndarray:
        """``data`` (n, data channels) as (n, model channels), in the model's order."""
        return data if self.index is None else data[:, self.index]


def same_bin_width(a_s: float, b_s: float) -> bool:
    """Whether two bin widths (s) are the same, within :data:`BIN_WIDTH_RTOL`."""
    return math.isclose(a_s, b_s, rel_tol=BIN_WIDTH_RTOL, abs_tol=0.0)


def check_fits(
    manifest: Manifest,
    model: str,
    where: str,
    *,
    bin_s: float,
    n_channels: int,
    channel_labels: Sequence[str] | None = None,
    n_kinematics: int | None = None,
    kinematics_labels: Sequence[str] | None = None,
    explicit: dict[str, str] | None = None,
    bin_fix: str = "use a model trained at this bin width",
    kinematics_fix: str = "use a model that decodes these kinematics",
    channels_fix: str = _MAP_FIX,
) -> ChannelMatch:
    """How the data ``where`` (e.g. ``"stream 'amp'"``: ``bin_s`` seconds per bin,
    ``n_channels`` channels, ``n_kinematics`` kinematics or None, labelled
    ``kinematics_labels`` or None) feed the decoder of ``manifest`` (named ``model`` in
    messages); ``ValueError`` naming the first mismatch."""
    if not same_bin_width(bin_s, manifest.bin_s):
        raise ValueError(
            f"{where} has {bin_s * 1e3:g} ms bins but {model} decodes "
            f"{manifest.bin_s * 1e3:g} ms bins; {bin_fix}"
        )
    decoded = list(manifest.kinematics_labels)
    if n_kinematics is not None and n_kinematics != len(decoded):
        raise ValueError(
            f"{where} has {n_kinematics} kinematics but {model} decodes {len(decoded)} "
            f"({', '.join(decoded)}); {kinematics_fix}"
        )
    if kinematics_labels is not None and list(kinematics_labels) != decoded:
        raise ValueError(
            f"{where} has kinematics {', '.join(kinematics_labels)} but {model} decodes "
            f"{', '.join(decoded)}; {kinematics_fix}"
        )
    return match_channels(
        manifest.channel_labels, manifest.n_channels, channel_labels, n_channels,
        where=where, explicit=explicit, model=model, fix=channels_fix,
    )  # fmt: skip


def match_channels(
    model_labels: Sequence[str] | None,
    n_model: int,
    data_labels: Sequence[str] | None,
    n_data: int,
    *,
    where: str,
    explicit: dict[str, str] | None = None,
    model: str = "the model",
    fix: str = _MAP_FIX,
) -> ChannelMatch:
    """How ``where`` (``n_data`` channels labelled ``data_labels``) feeds ``model`` (its name in
    messages) of ``n_model`` inputs labelled ``model_labels`` (see the module docstring);
    ``ValueError`` naming the problem and ``fix``."""
    inputs = None if model_labels is None else list(model_labels)
    columns = None if data_labels is None else list(data_labels)
    if explicit is not None:
        return _explicit(inputs, columns, explicit, where)
    if inputs is None or columns is None:
        if n_model != n_data:
            raise ValueError(f"{where} has {n_data} channels but {model} expects {n_model}; {fix}")
        side = f"{model} has" if inputs is None else f"{where} has"
        return ChannelMatch(None, f"{side} no channel labels: channels are taken in order")
    if columns == inputs:
        return ChannelMatch(None, "")
    if sorted(columns) == sorted(inputs) and len(set(inputs)) == len(inputs):
        index = np.array([columns.index(label) for label in inputs], dtype=np.intp)
        return ChannelMatch(index, f"{where} has {model}'s channel labels in another "
                                   "order: channels mapped by label")  # fmt: skip
    missing = [label for label in inputs if label not in columns][:_SHOWN]
    extra = [label for label in columns if label not in inputs][:_SHOWN]
    detail = (
        f"model labels {missing} are not in it, it has {extra} instead"
        if missing or extra
        else f"its {len(columns)} labels repeat some of {model}'s {len(inputs)}"
    )
    raise ValueError(f"{where}'s channel labels differ from {model}'s: {detail}; {fix}")


def _explicit(
    model: list[str] | None, data: list[str] | None, mapping: dict[str, str], where: str
) -> ChannelMatch:
    if model is None:
        raise ValueError(
            "--channel-map needs a model with channel labels; this one has none (calibrate "
            "it from a session with channel labels)"
        )
    if data is None:
        raise ValueError(f"--channel-map needs {where} to label its channels; it has no labels")
    unmapped = [label for label in model if label not in mapping][:_SHOWN]
    if unmapped:
        raise ValueError(f"--channel-map gives no stream channel for model labels {unmapped}")
    unknown = [mapping[label] for label in model if mapping[label] not in data][:_SHOWN]
    if unknown:
        raise ValueError(f"--channel-map names {unknown}, which {where} does not have")
    index = np.array([data.index(mapping[label]) for label in model], dtype=np.intp)
    return ChannelMatch(index, f"{where}: channels mapped by --channel-map")
