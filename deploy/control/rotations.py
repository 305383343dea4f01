"""Small-rotation maths for the 1 kHz loop, compiled (numba, GIL released).

scipy's Rotation is the reference (and is used everywhere off the hot path), but each Rotation object costs
tens of µs; the impedance law and the safety layer need a few per tick, inside their compiled kernels. The
`*_into` functions are those kernels' building blocks (xyzw quaternions, results written into `out`); the
plain functions are the same maths for Python callers. Checked against scipy in the tests.
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit

_TINY = 1e-15  # below this a rotation axis is undefined (MuJoCo's mjMINVAL)


@njit(nogil=True, cache=True)
def local_rotvec_into(from_xyzw, to_xyzw, out):
    """out (3,) = r in `from`'s frame with from · exp(r) = to, the shortest way [rad]."""
    fx, fy, fz, fw = -from_xyzw[0], -from_xyzw[1], -from_xyzw[2], from_xyzw[3]  # conjugate of `from`
    tx, ty, tz, tw = to_xyzw[0], to_xyzw[1], to_xyzw[2], to_xyzw[3]
    x = fw * tx + fx * tw + fy * tz - fz * ty
    y = fw * ty - fx * tz + fy * tw + fz * tx
    z = fw * tz + fx * ty - fy * tx + fz * tw
    w = fw * tw - fx * tx - fy * ty - fz * tz
    sin_half = math.sqrt(x * x + y * y + z * z)
    if sin_half < _TINY:
        out[0] = out[1] = out[2] = 0.0
        return
    angle = 2.0 * math.atan2(sin_half, w)
    if angle > math.pi:  # the other way round is shorter
        angle -= 2.0 * math.pi
    scale = angle / sin_half
    out[0], out[1], out[2] = x * scale, y * scale, z * scale


@njit(nogil=True, cache=True)
def apply_local_rotvec_into(from_xyzw, rotvec_local, out):
    """out (4,) = normalised(from) · exp(r), r in `from`'s frame; `out` may alias `from_xyzw`."""
    angle = math.sqrt(rotvec_local[0] ** 2 + rotvec_local[1] ** 2 + rotvec_local[2] ** 2)
    norm = math.sqrt(from_xyzw[0] ** 2 + from_xyzw[1] ** 2 + from_xyzw[2] ** 2 + from_xyzw[3] ** 2)
    ax, ay, az, aw = from_xyzw[0] / norm, from_xyzw[1] / norm, from_xyzw[2] / norm, from_xyzw[3] / norm
    if angle < _TINY:
        out[0], out[1], out[2], out[3] = ax, ay, az, aw
        return
    s = math.sin(0.5 * angle) / angle
    bx, by, bz, bw = rotvec_local[0] * s, rotvec_local[1] * s, rotvec_local[2] * s, math.cos(0.5 * angle)
    out[0] = aw * bx + ax * bw + ay * bz - az * by
    out[1] = aw * by - ax * bz + ay * bw + az * bx
    out[2] = aw * bz + ax * by - ay * bx + az * bw
    out[3] = aw * bw - ax * bx - ay * by - az * bz


@njit(nogil=True, cache=True)
def rotate_into(quat_xyzw, vector, out):
    """out (3,) = R(quat) vector; `out` may alias `vector`."""
    x, y, z, w = quat_xyzw[0], quat_xyzw[1], quat_xyzw[2], quat_xyzw[3]
    vx, vy, vz = vector[0], vector[1], vector[2]
    tx, ty, tz = 2.0 * (y * vz - z * vy), 2.0 * (z * vx - x * vz), 2.0 * (x * vy - y * vx)  # t = 2 q_v x v
    out[0] = vx + w * tx + (y * tz - z * ty)
    out[1] = vy + w * ty + (z * tx - x * tz)
    out[2] = vz + w * tz + (x * ty - y * tx)


@njit(nogil=True, cache=True)
def base_frame_error_into(current_xyzw, target_xyzw, out):
    """out (3,) = rotation vector of R_current · R_target⁻¹, expressed in the base frame [rad]."""
    local_rotvec_into(target_xyzw, current_xyzw, out)  # in the target frame
    rotate_into(target_xyzw, out, out)


def _quat(quat_xyzw) -> np.ndarray:
    return np.asarray(quat_xyzw, dtype=float)


def local_rotvec(from_xyzw, to_xyzw) -> np.ndarray:
    """(3,) r in `from`'s frame with from · exp(r) = to (shortest way) [rad]."""
    out = np.empty(3)
    local_rotvec_into(_quat(from_xyzw), _quat(to_xyzw), out)
    return out


def apply_local_rotvec(from_xyzw, rotvec_local) -> np.ndarray:
    """from · exp(r), r in `from`'s frame -> quaternion xyzw."""
    out = np.empty(4)
    apply_local_rotvec_into(_quat(from_xyzw), np.asarray(rotvec_local, dtype=float), out)
    return out


def base_frame_error(current_xyzw, target_xyzw) -> np.ndarray:
    """(3,) rotation vector of R_current · R_target⁻¹, expressed in the base frame [rad]."""
    out = np.empty(3)
    base_frame_error_into(_quat(current_xyzw), _quat(target_xyzw), out)
    return out
