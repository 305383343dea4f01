"""UR5e kinematics from Universal Robots' published standard DH parameters (no MJCF ships in a PyPI wheel here).

Frames: `base` is UR's DH base frame, the one RTDE's `getActualTCPPose` reports in (ROS's `base_link` is
this frame turned 180 deg about z). The TCP is the tool flange (`tool0`) moved `tcp_offset_m` along its z.
The UR backend streams joint targets to the robot's own controller, so it needs no dynamics:
`mass_matrix` / `bias_torque` raise instead of returning guesses.
"""
from __future__ import annotations

import math

import mujoco
import numpy as np

from deploy.errors import DeployError
from deploy.robots.base import RobotModel

UR_DOF = 6
# Standard DH (T_i = Rz(theta_i) Tz(d_i) Tx(a_i) Rx(alpha_i)), UR5e, from Universal Robots' kinematics table.
UR5E_D_M = np.array([0.1625, 0.0, 0.0, 0.1333, 0.0997, 0.0996])
UR5E_A_M = np.array([0.0, -0.425, -0.3922, 0.0, 0.0, 0.0])
UR5E_ALPHA_RAD = np.array([np.pi / 2, 0.0, 0.0, np.pi / 2, -np.pi / 2, 0.0])
# ur_description's ur5e joint_limits.yaml: +-2 pi, the elbow +-pi (self-collision); rated torques per size.
UR5E_JOINT_LIMITS_RAD = np.array([[-2 * np.pi, 2 * np.pi]] * 2 + [[-np.pi, np.pi]] + [[-2 * np.pi, 2 * np.pi]] * 3)
UR5E_TORQUE_LIMITS_NM = np.array([150.0, 150.0, 150.0, 28.0, 28.0, 28.0])
_D_M, _A_M, _ALPHA_RAD = UR5E_D_M.tolist(), UR5E_A_M.tolist(), UR5E_ALPHA_RAD.tolist()


def _dh_transform(theta_rad: float, d_m: float, a_m: float, alpha_rad: float) -> np.ndarray:
    """(4, 4) homogeneous transform of one standard-DH link (Python floats: ~4x faster than numpy scalars)."""
    ct, st, ca, sa = math.cos(theta_rad), math.sin(theta_rad), math.cos(alpha_rad), math.sin(alpha_rad)
    return np.array([[ct, -st * ca, st * sa, a_m * ct],
                     [st, ct * ca, -ct * sa, a_m * st],
                     [0.0, sa, ca, d_m],
                     [0.0, 0.0, 0.0, 1.0]])


class UR5eModel(RobotModel):
    """Forward kinematics and geometric Jacobian of a UR5e (6 joints; arrays are (6,), Jacobian (6, 6))."""

    dof = UR_DOF

    def __init__(self, tcp_offset_m: float = 0.0):
        self._T_flange_tcp = np.eye(4)
        self._T_flange_tcp[2, 3] = tcp_offset_m
        self._cached_q_key: bytes | None = None  # IK asks for pose and Jacobian at the same q: compute once
        self._cached_frames: list[np.ndarray] = []

    def link_frames(self, q_rad: np.ndarray) -> list[np.ndarray]:
        """[T_base_0 (identity), T_base_1, ..., T_base_6 (flange)], each (4, 4)."""
        q_rad = np.asarray(q_rad, dtype=float)
        if q_rad.shape != (UR_DOF,):
            raise DeployError(f"UR5e model takes q of shape ({UR_DOF},), got {q_rad.shape}")
        frames = [np.eye(4)]
        for theta_rad, d_m, a_m, alpha_rad in zip(q_rad.tolist(), _D_M, _A_M, _ALPHA_RAD):
            frames.append(frames[-1] @ _dh_transform(theta_rad, d_m, a_m, alpha_rad))
        return frames

    def _frames_at(self, q_rad) -> list[np.ndarray]:
        """`link_frames(q)` plus T_base_tcp last, kept for the most recent q."""
        key = np.asarray(q_rad, dtype=float).tobytes()
        if key != self._cached_q_key:
            frames = self.link_frames(q_rad)
            self._cached_frames = frames + [frames[-1] @ self._T_flange_tcp]
            self._cached_q_key = key
        return self._cached_frames

    def tcp_transform(self, q_rad: np.ndarray) -> np.ndarray:
        """(4, 4) T_base_tcp."""
        return self._frames_at(q_rad)[-1].copy()

    def ee_pose(self, q_rad):
        T_base_tcp = self._frames_at(q_rad)[-1]
        quat_wxyz = np.empty(4)
        mujoco.mju_mat2Quat(quat_wxyz, T_base_tcp[:3, :3].flatten())
        return T_base_tcp[:3, 3].copy(), np.roll(quat_wxyz, -1)  # xyzw

    def jacobian(self, q_rad):
        """Column i = [z_i x (p_tcp - p_i); z_i] with frame i the one joint i+1 turns about."""
        frames = self._frames_at(q_rad)
        joint_frames = np.array(frames[:UR_DOF])  # (6, 4, 4)
        z_axes, origins_m = joint_frames[:, :3, 2], joint_frames[:, :3, 3]  # (6, 3) each
        lever_m = frames[-1][:3, 3] - origins_m  # (6, 3)
        linear = np.stack([z_axes[:, 1] * lever_m[:, 2] - z_axes[:, 2] * lever_m[:, 1],
                           z_axes[:, 2] * lever_m[:, 0] - z_axes[:, 0] * lever_m[:, 2],
                           z_axes[:, 0] * lever_m[:, 1] - z_axes[:, 1] * lever_m[:, 0]])  # (3, 6) cross products
        return np.vstack([linear, z_axes.T])

    def mass_matrix(self, q_rad):
        raise DeployError("UR backend streams joint targets; dynamics (mass matrix) not available")

    def bias_torque(self, q_rad, dq_rad_s):
        raise DeployError("UR backend streams joint targets; dynamics (bias torque) not available")

    @property
    def joint_limits_rad(self):
        return UR5E_JOINT_LIMITS_RAD

    @property
    def torque_limits_nm(self):
        return UR5E_TORQUE_LIMITS_NM
