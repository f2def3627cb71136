"""Intention estimation for closed-loop adaptation without true kinematics.

ReFIT (Gilja et al. 2012, Nature Neuroscience 15:1752): during closed-loop control the user
is assumed to intend moving the cursor straight at the target, at the speed the decoder
produced, and to intend staying still while holding on the target::

    v*[t] = |v[t]| (g[t] - c[t]) / |g[t] - c[t]|     if |g[t] - c[t]| > hold radius
    v*[t] = 0                                        otherwise

with ``v`` the decoded velocity, ``c`` the cursor and ``g`` the target position.
"""

from __future__ import annotations

import numpy as np

from bci.validation import check_finite, check_shape


def intended_velocity(
    decoded: np.ndarray, cursor: np.ndarray, target: np.ndarray, hold_radius: float
) -> np.ndarray:
    """Rotate decoded velocities (..., D) toward the target; zero inside ``hold_radius``.

    ``cursor`` and ``target`` are positions in the units of ``velocity x seconds``;
    ``hold_radius`` in the same units. Works for one bin (D,) or a sequence (T, D).
    """
    decoded = np.asarray(decoded, dtype=np.float64)
    cursor = np.asarray(cursor, dtype=np.float64)
    target = np.asarray(target, dtype=np.float64)
    check_shape("cursor position", cursor, decoded.shape)
    check_shape("target position", target, decoded.shape)
    for name, array in (("decoded velocity", decoded), ("cursor", cursor), ("target", target)):
        check_finite(name, array)
    if not hold_radius >= 0:
        raise ValueError(f"hold_radius must be zero or positive; got {hold_radius}")
    to_target = target - cursor
    distance = np.linalg.norm(to_target, axis=-1, keepdims=True)
    speed = np.linalg.norm(decoded, axis=-1, keepdims=True)
    away = distance > hold_radius
    direction = np.divide(to_target, distance, out=np.zeros_like(to_target), where=away)
    return speed * direction


def integrate_cursor(
    start: np.ndarray, velocity: np.ndarray, dt_s: float, radius: float | None = None
) -> np.ndarray:
    """Cursor positions (T, D) after each bin of ``velocity`` (T, D), from ``start`` (D,).

    ``c[t] = c[t-1] + v[t] dt``; with ``radius`` the cursor stays inside that disc, as a
    bounded workspace does.
    """
    positions = np.empty_like(np.asarray(velocity, dtype=np.float64))
    position = np.asarray(start, dtype=np.float64).copy()
    for t, v in enumerate(velocity):
        position += v * dt_s
        if radius is not None:
            norm = np.linalg.norm(position)
            if norm > radius:
                position *= radius / norm
        positions[t] = position
    return positions


def rotation_target(decoded: np.ndarray, intended: np.ndarray) -> np.ndarray:
    """A learning target that corrects only the direction of ``decoded`` toward ``intended``.

    Learning straight from the intended velocity shrinks the decoder's speed: the error
    ``v - |v| d`` has the component ``|v| (1 - cos)`` along ``v``, and online each update
    rescales what the next intention is measured against, so the speed decays toward zero.
    This target ``|v| (v^ (1 - cos) + d)`` keeps the decoded speed along ``v^`` and asks only
    for the rotation: ``v - target`` is the part of ``v - |v| d`` perpendicular to ``v``.
    Where ``intended`` is zero (holding on target) it returns zero.
    """
    decoded = np.asarray(decoded, dtype=np.float64)
    intended = np.asarray(intended, dtype=np.float64)
    check_shape("intended velocity", intended, decoded.shape)
    speed = np.linalg.norm(decoded, axis=-1, keepdims=True)
    intended_speed = np.linalg.norm(intended, axis=-1, keepdims=True)
    moving = (speed > 0) & (intended_speed > 0)
    unit = np.divide(decoded, speed, out=np.zeros_like(decoded), where=speed > 0)
    direction = np.divide(intended, intended_speed, out=np.zeros_like(intended), where=moving)
    cos = np.sum(unit * direction, axis=-1, keepdims=True)
    return np.where(moving, speed * (unit * (1.0 - cos) + direction), 0.0)
