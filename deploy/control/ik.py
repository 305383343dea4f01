"""Damped-least-squares inverse kinematics: joint targets for robots that only take joint positions (UR servoJ).

Each tick the safe Cartesian reference moves at most max_tcp_speed · dt (0.5 mm at 1 kHz), so seeded with
the previous tick's solution one or two Newton steps converge. The damping λ keeps the step bounded near
singularities, where the plain pseudo-inverse would ask for huge joint motions (Nakamura & Hanafusa 1986;
Buss, "Introduction to inverse kinematics with Jacobian transpose, pseudoinverse and damped least squares").
"""
from __future__ import annotations

import dataclasses

import numpy as np

from deploy.control import rotations
from deploy.errors import ConfigError
from deploy.robots.base import RobotModel


@dataclasses.dataclass(frozen=True)
class IKConfig:
    """Solver settings; errors are the TCP's, in the base frame."""

    damping: float = 0.01  # λ in dq = Jᵀ (J Jᵀ + λ² I)⁻¹ e [m, rad]
    max_iterations: int = 10
    position_tolerance_m: float = 1e-5
    rotation_tolerance_rad: float = 1e-4
    max_step_rad: float = 0.2  # largest joint change per iteration (the whole step is scaled down)

    def __post_init__(self):
        if not 0.0 < self.damping <= 1.0:
            raise ConfigError(f"IKConfig.damping={self.damping} must be in (0, 1]")
        if not (isinstance(self.max_iterations, int) and self.max_iterations >= 1):
            raise ConfigError(f"IKConfig.max_iterations={self.max_iterations!r} must be an int >= 1")
        for name in ("position_tolerance_m", "rotation_tolerance_rad", "max_step_rad"):
            if not getattr(self, name) > 0.0:
                raise ConfigError(f"IKConfig.{name}={getattr(self, name)} must be > 0")


@dataclasses.dataclass(frozen=True)
class IKSolution:
    q_rad: np.ndarray  # (n,) inside the model's joint limits
    position_error_m: float  # |p_target - p(q)|
    rotation_error_rad: float  # angle of R_target R(q)⁻¹
    converged: bool  # both errors within the tolerances


def solve_ik(model: RobotModel, position_m: np.ndarray, quat_xyzw: np.ndarray, seed_q_rad: np.ndarray,
             config: IKConfig = IKConfig()) -> IKSolution:
    """Joint positions (n,) near `seed_q_rad` putting the TCP at (position_m (3,), quat_xyzw (4,)).

    An unreachable pose ends at the damped least-squares closest configuration, `converged` False.
    """
    limits_rad = model.joint_limits_rad  # (n, 2)
    q_rad = np.clip(np.asarray(seed_q_rad, dtype=float), limits_rad[:, 0], limits_rad[:, 1])
    damping_sq_eye = config.damping**2 * np.eye(6)

    def gap(q_rad: np.ndarray) -> np.ndarray:
        """(6,) [m; rad] the TCP motion (base frame) that closes the gap to the target."""
        current_m, current_xyzw = model.ee_pose(q_rad)
        return np.concatenate([position_m - current_m, -rotations.base_frame_error(current_xyzw, quat_xyzw)])

    def within_tolerance(error: np.ndarray) -> bool:
        return bool(np.linalg.norm(error[:3]) <= config.position_tolerance_m
                    and np.linalg.norm(error[3:]) <= config.rotation_tolerance_rad)

    error = gap(q_rad)
    for _ in range(config.max_iterations):
        if within_tolerance(error):
            break
        jacobian = model.jacobian(q_rad)  # (6, n)
        step_rad = jacobian.T @ np.linalg.solve(jacobian @ jacobian.T + damping_sq_eye, error)  # (n,)
        largest_rad = np.abs(step_rad).max()
        if largest_rad > config.max_step_rad:
            step_rad *= config.max_step_rad / largest_rad
        q_rad = np.clip(q_rad + step_rad, limits_rad[:, 0], limits_rad[:, 1])
        error = gap(q_rad)
    return IKSolution(q_rad, float(np.linalg.norm(error[:3])), float(np.linalg.norm(error[3:])),
                      within_tolerance(error))
