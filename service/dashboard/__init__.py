"""The live dashboard: a static page (``static/``) that reads ``GET /api/v1/feed``."""

from __future__ import annotations

from pathlib import Path

__all__ = ["STATIC_DIR"]

STATIC_DIR = Path(__file__).resolve().parent / "static"
