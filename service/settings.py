"""Settings of the decoding daemon (``bci serve``): each field is a ``BCI_*`` environment
variable, a ``bci serve`` flag and a key of its ``--config`` TOML file
(:mod:`service.serve_settings` generates the flags and reads the file).

Safe defaults: bind 127.0.0.1, Host header allow-list of the loopback names, and a bearer token
for every mutating endpoint (generated at start when none is given).
"""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["Settings", "resolve_token"]


class Settings(BaseSettings):
    """Daemon settings; each field ``x`` is read from ``BCI_X`` (e.g. ``BCI_MODEL``)."""

    model_config = SettingsConfigDict(env_prefix="BCI_", extra="ignore")

    stream: str = Field("bci-sim", description="name of the neural LSL stream to resolve")
    source_id: str | None = Field(
        None,
        description="LSL source_id of the neural stream: only that outlet is decoded "
        "(as 'bci streams' lists it)",
    )
    model: Path | None = Field(None, description="checkpoint (.safetensors) to decode with")
    channel_map: Path | None = Field(
        None,
        description="JSON file mapping each model channel label to a stream channel label, "
        "for a stream whose labels differ from the model's",
    )
    models_dir: Path | None = Field(
        None, description="folder of checkpoints that POST /model/swap finds by name"
    )
    adapt: bool = Field(False, description="adapt the decoder online with e-prop")
    track_inputs: float | None = Field(
        None,
        gt=0,
        allow_inf_nan=False,
        description="seconds: the model's input normalisation follows the stream's running "
        "mean and sd over this time constant (e.g. 60; none: the stored statistics), an "
        "unsupervised adaptation to day-to-day drift, with or without e-prop",
    )
    target_stream: str | None = Field(
        None,
        description=(
            "name of an LSL stream of learning targets (one sample per bin, one channel per "
            "decoded kinematic, timestamped like the neural bins), e.g. the simulator's "
            "'<stream>-kinematics'; without it adaptation has no target and learns nothing"
        ),
    )
    host: str = Field("127.0.0.1", description="address the HTTP server binds")
    port: int = Field(8000, ge=0, le=65535, description="HTTP port (0: any free port)")
    token: str | None = Field(
        None, description="bearer token for POST endpoints (none: generated and printed)"
    )
    allowed_hosts: list[str] = Field(
        default_factory=lambda: ["127.0.0.1", "localhost"],
        description="Host header values the server answers (others get 400)",
    )
    target_kind: Literal["kinematics", "intention"] = Field(
        "kinematics",
        description=(
            "'kinematics': the target stream carries the true velocity; 'intention': it "
            "carries goal positions and cursor_stream the cursor, and each bin learns the "
            "ReFIT rotation of its decoded velocity toward the goal"
        ),
    )
    cursor_stream: str | None = Field(
        None, description="with target_kind 'intention': LSL stream of cursor positions"
    )
    hold_radius: float = Field(
        1.0,
        ge=0,
        description="intention: no movement intended this close to the goal (in the goal "
        "stream's units, e.g. cm)",
    )
    target_source_id: str | None = Field(
        None, description="LSL source_id of the target stream (lets liblsl recover it)"
    )
    record: Path | None = Field(
        None, description="XDF file recording every input bin and its decoded output"
    )
    output_name: str = Field(
        "bci-decoder",
        description=(
            "base name of the decoded output stream '<name>-kinematics'; distinct from the "
            "input stream's name, whose '-kinematics' stream carries the true kinematics"
        ),
    )

    input: Literal["auto", "counts", "events", "broadband"] = Field(
        "auto",
        description=(
            "what the neural stream carries: 'counts' per channel (one sample per bin, or "
            "faster, e.g. 1 kHz, summed into bins), spike 'events' (channel index per "
            "sample, irregular rate), or 'broadband' voltage (threshold crossings); 'auto' "
            "reads it from the stream's metadata"
        ),
    )
    bin_grace_ms: float = Field(
        5.0,
        ge=0,
        allow_inf_nan=False,
        description="a bin closes this long after its end when no later sample has come",
    )
    threshold_k: float = Field(
        4.5, gt=0, allow_inf_nan=False, description="broadband: threshold = -k x RMS"
    )
    realtime: bool = Field(
        False,
        description=(
            "run the decoder process with SCHED_FIFO priority on a pinned core (needs "
            "CAP_SYS_NICE or root); says so when the system does not allow it"
        ),
    )

    @model_validator(mode="after")
    def _intention_needs_streams(self) -> Settings:
        if self.target_kind == "intention" and not (self.target_stream and self.cursor_stream):
            raise ValueError(
                "target_kind 'intention' needs the goal and the cursor position streams: set "
                "target_stream and cursor_stream (--target-stream, --cursor-stream)"
            )
        return self

    @property
    def output_base(self) -> str:
        """Base name of the decoded-kinematics outlet (``<output_base>-kinematics``)."""
        return self.output_name


def resolve_token(settings: Settings) -> tuple[Settings, bool]:
    """``settings`` with a token: the given one, or a fresh ``secrets.token_urlsafe(32)``.

    Returns ``(settings, generated)``; the caller prints a generated token.
    """
    if settings.token:
        return settings, False
    return settings.model_copy(update={"token": secrets.token_urlsafe(32)}), True
