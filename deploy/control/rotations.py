"""Small-rotation maths for the 1 kHz loop, on MuJoCo's C quaternion functions.

scipy's Rotation is the reference (and is used everywhere off the hot path), but each Rotation object costs
tens of µs; the impedance law and the safety layer need a few per tick. Quaternions are xyzw at this
interface, like everywhere in deploy; MuJoCo's are wxyz. Checked against scipy in the tests.
"""
from __future__ import annotations

import mujoco
import numpy as np


def _wxyz(quat_xyzw) -> np.ndarray:
    q = np.asarray(quat_xyzw, dtype=float)
    return np.array([q[3], q[0], q[1], q[2]])


def _xyzw(quat_wxyz: np.ndarray) -> np.ndarray:
    return np.array([quat_wxyz[1], quat_wxyz[2], quat_wxyz[3], quat_wxyz[0]])


def local_rotvec(from_xyzw, to_xyzw) -> np.ndarray:
    """(3,) r in `from`'s frame with from · exp(r) = to (shortest way) [rad]."""
    r = np.zeros(3)
    mujoco.mju_subQuat(r, _wxyz(to_xyzw), _wxyz(from_xyzw))
    return r


def apply_local_rotvec(from_xyzw, rotvec_local) -> np.ndarray:
    """from · exp(r), r in `from`'s frame -> quaternion xyzw."""
    q = _wxyz(from_xyzw)
    mujoco.mju_quatIntegrate(q, np.asarray(rotvec_local, dtype=float), 1.0)
    return _xyzw(q)


def base_frame_error(current_xyzw, target_xyzw) -> np.ndarray:
    """(3,) rotation vector of R_current · R_target⁻¹, expressed in the base frame [rad]."""
    local = local_rotvec(target_xyzw, current_xyzw)  # in the target frame
    base = np.zeros(3)
    mujoco.mju_rotVecQuat(base, local, _wxyz(target_xyzw))
    return base
