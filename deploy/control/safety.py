"""The always-on safety layer between whatever produces references (policy chunks, teleop) and the impedance law.

It never raises out of the control loop: any internal exception is counted as trip "internal_error" and the
last safe reference is returned. Time is passed in. Trips are counted per episode: a reason counts once each
time it becomes active (a reference clamped for 1000 ticks is one "workspace" trip, not 1000).

Stiffness scale: it slews towards 1 (normal) at 1/startup_ramp_s, towards `soft_stiffness_scale` when chunks
are stale (over soften_ramp_s) or after an e-stop (over estop_ramp_s). Never to zero: gravity is compensated,
so a soft arm floats and cannot sag.

E-stop: the reference snaps to the *measured* pose on the next tick (commanded contact forces vanish, no motion
is commanded; the controller's torque-rate limit smooths the drop), then the stiffness softens; it stays until
`reset_estop()`. Operator hold: the reference freezes where it is, stiffness unchanged, until `release_hold()`.
"""
from __future__ import annotations

import dataclasses
from typing import ClassVar

import numpy as np
from scipy.spatial.transform import Rotation

from deploy.control import rotations
from deploy.control.impedance import BoundedConfig
from deploy.errors import ConfigError
from deploy.robots.base import ARM_DOF, RobotModel

_MAX_STEP_S = 0.1  # longest dt the speed limit honours, so a stalled loop cannot release a large jump
_BISECTION_STEPS = 12  # joint references: FK bisection towards the workspace boundary


@dataclasses.dataclass(frozen=True)
class SafetyConfig(BoundedConfig):
    """Limits on references and torques; positions are the TCP in the base frame [m]."""

    workspace_min_m: tuple[float, float, float] = (0.2, -0.4, 0.005)
    workspace_max_m: tuple[float, float, float] = (0.75, 0.4, 0.6)
    nominal_quat_xyzw: tuple[float, float, float, float] = (1.0, 0.0, 0.0, 0.0)  # TCP pointing down
    max_orientation_error_rad: float = np.pi / 2  # total angle from the nominal orientation
    max_tcp_speed_m_per_s: float = 0.5  # of the reference, not of the arm
    max_angular_speed_rad_per_s: float = 2.0
    max_joint_speed_rad_per_s: float = 1.0  # joint-space references
    max_force_n: float = 100.0  # on the commanded Cartesian force of the active torque
    max_moment_nm: float = 20.0
    stale_chunk_timeout_s: float = 0.5
    soften_ramp_s: float = 2.0  # after the timeout: hold the reference, ramp stiffness 1 -> soft over this
    soft_stiffness_scale: float = 0.1
    estop_ramp_s: float = 0.2
    startup_ramp_s: float = 1.0  # stiffness 0 -> 1 from the measured pose; also the resume ramp rate
    joint_limit_margin_rad: float = 0.1
    joint_limit_gain_nm_per_rad: float = 50.0  # repulsion torque per rad inside the margin

    BOUNDS: ClassVar[dict[str, tuple[float, float]]] = {
        "workspace_min_m": (-2.0, 2.0), "workspace_max_m": (-2.0, 2.0), "nominal_quat_xyzw": (-1.0, 1.0),
        "max_orientation_error_rad": (0.01, np.pi), "max_tcp_speed_m_per_s": (0.001, 2.0),
        "max_angular_speed_rad_per_s": (0.01, 6.0), "max_joint_speed_rad_per_s": (0.01, 2.5),
        "max_force_n": (1.0, 300.0), "max_moment_nm": (0.1, 50.0), "stale_chunk_timeout_s": (0.01, 10.0),
        "soften_ramp_s": (0.0, 30.0), "soft_stiffness_scale": (0.01, 1.0), "estop_ramp_s": (0.0, 5.0),
        "startup_ramp_s": (0.0, 30.0), "joint_limit_margin_rad": (0.0, 0.5),
        "joint_limit_gain_nm_per_rad": (0.0, 500.0),
    }
    SHAPES: ClassVar[dict[str, tuple[int, ...]]] = {
        "workspace_min_m": (3,), "workspace_max_m": (3,), "nominal_quat_xyzw": (4,)}

    def __post_init__(self) -> None:
        super().__post_init__()
        if np.any(np.asarray(self.workspace_min_m) >= self.workspace_max_m):
            raise ConfigError(f"SafetyConfig.workspace_min_m={self.workspace_min_m} must be < "
                              f"workspace_max_m={self.workspace_max_m} on every axis")
        if abs(np.linalg.norm(self.nominal_quat_xyzw) - 1.0) > 1e-3:
            raise ConfigError(f"SafetyConfig.nominal_quat_xyzw={self.nominal_quat_xyzw} must be a unit quaternion")


@dataclasses.dataclass
class SafeReference:
    """What the impedance law may track this tick: TCP pose in the base frame + stiffness scale 0..1."""

    position_m: np.ndarray  # (3,)
    quat_xyzw: np.ndarray  # (4,)
    stiffness_scale: float


@dataclasses.dataclass
class SafeJointReference:
    """What the joint impedance law may track this tick."""

    q_rad: np.ndarray  # (7,)
    stiffness_scale: float


def _finite(array, shape: tuple[int, ...]) -> np.ndarray | None:
    """`array` as floats if it has `shape` and is all finite, else None."""
    try:
        array = np.asarray(array, dtype=float)
    except (TypeError, ValueError):
        return None
    return array.copy() if array.shape == shape and np.all(np.isfinite(array)) else None


class SafetyLayer:
    """Filters references (Cartesian or joint), runs the chunk watchdog, shapes torques near limits."""

    def __init__(self, config: SafetyConfig, model: RobotModel):
        self.config = config
        self._model = model
        self.trips: dict[str, int] = {}
        self.last_trip_reason: str | None = None
        self._active: dict[str, bool] = {}
        self._now_s: float | None = None
        self._last_chunk_s: float | None = None  # watchdog armed by the first chunk
        self._stiffness_scale = 0.0
        self._held = False
        self._estopped = False
        self._estop_pending = False  # snap to the measured pose on the next tick
        self._pose: tuple[np.ndarray, np.ndarray] | None = None  # last safe (position, quat)
        self._q_rad: np.ndarray | None = None  # last safe joint reference

    # ----- trips and commands ------------------------------------------------------------------------------
    def _flag(self, reason: str, active: bool) -> None:
        if active and not self._active.get(reason, False):
            self.trips[reason] = self.trips.get(reason, 0) + 1
            self.last_trip_reason = reason
        self._active[reason] = active

    def notify_chunk(self, now_s: float) -> None:
        """A good chunk arrived at `now_s` [s]: feeds the watchdog."""
        self._last_chunk_s = float(now_s)

    def hold(self) -> None:
        """Operator hold: freeze the reference where it is until `release_hold()`."""
        self._held = True
        self._flag("hold", True)

    def release_hold(self) -> None:
        self._held = False
        self._flag("hold", False)

    def estop(self) -> None:
        """Hold at the measured pose, then soften; latched until `reset_estop()`."""
        self._estopped = self._estop_pending = True
        self._flag("estop", True)

    def reset_estop(self) -> None:
        """Leave e-stop: stiffness ramps back up, references slide on from the held pose."""
        self._estopped = self._estop_pending = False
        self._flag("estop", False)

    @property
    def stale(self) -> bool:
        return (self._last_chunk_s is not None and self._now_s is not None
                and self._now_s - self._last_chunk_s > self.config.stale_chunk_timeout_s)

    def _advance(self, now_s: float) -> float:
        """Step the clock and the stiffness slew; returns dt [s] for the speed limit (0 on the first tick)."""
        now_s = float(now_s)
        if not np.isfinite(now_s):
            raise ValueError(f"now_s={now_s} is not finite")
        dt_s = 0.0 if self._now_s is None else float(np.clip(now_s - self._now_s, 0.0, _MAX_STEP_S))
        self._now_s = now_s if self._now_s is None else max(now_s, self._now_s)
        c = self.config
        self._flag("stale_chunk", self.stale)
        if self._estopped or self.stale:
            ramp_s = c.estop_ramp_s if self._estopped else c.soften_ramp_s
            target, rate = c.soft_stiffness_scale, (1.0 - c.soft_stiffness_scale) / max(ramp_s, 1e-9)
        else:
            target, rate = 1.0, 1.0 / max(c.startup_ramp_s, 1e-9)
        step = np.clip(target - self._stiffness_scale, -rate * dt_s, rate * dt_s)
        self._stiffness_scale = float(self._stiffness_scale + step)
        return dt_s

    def _frozen(self) -> bool:
        """References are ignored (held) while e-stopped, held by the operator, or stale."""
        return self._estopped or self._held or self.stale

    # ----- Cartesian references -----------------------------------------------------------------------------
    def filter_reference(self, candidate, now_s: float, measured_pose) -> SafeReference | None:
        """Safe TCP reference for this tick from `candidate` (position (3,), quat_xyzw (4,)) or None (no new one).

        Returns None only if no safe reference has ever existed (the measured pose was never valid).
        """
        try:
            dt_s = self._advance(now_s)
            measured = self._pose_or_none(measured_pose)
            if self._pose is None or (self._estop_pending and measured is not None):
                if measured is None:
                    raise ValueError("measured_pose is not a finite (position (3,), quat (4,)) pair")
                self._pose, self._estop_pending = measured, False
            pose = None if candidate is None else self._pose_or_none(candidate)
            self._flag("nan_reference", candidate is not None and pose is None)
            if pose is not None and not self._frozen():
                self._pose = self._rate_limit_pose(*self._clamp_pose(*pose), dt_s)
            self._flag("internal_error", False)
        except Exception:  # noqa: BLE001 -- the control loop must never see an exception
            self._flag("internal_error", True)
        if self._pose is None:
            return None
        return SafeReference(self._pose[0].copy(), self._pose[1].copy(), self._stiffness_scale)

    @staticmethod
    def _pose_or_none(pose) -> tuple[np.ndarray, np.ndarray] | None:
        try:
            position_m, quat_xyzw = pose
        except (TypeError, ValueError):
            return None
        position_m, quat_xyzw = _finite(position_m, (3,)), _finite(quat_xyzw, (4,))
        if position_m is None or quat_xyzw is None or np.linalg.norm(quat_xyzw) < 1e-6:
            return None
        return position_m, quat_xyzw / np.linalg.norm(quat_xyzw)

    def _clamp_pose(self, position_m: np.ndarray, quat_xyzw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        c = self.config
        clamped_m = np.clip(position_m, c.workspace_min_m, c.workspace_max_m)
        self._flag("workspace", not np.array_equal(clamped_m, position_m))
        offset = rotations.local_rotvec(c.nominal_quat_xyzw, quat_xyzw)  # in the nominal frame
        angle_rad = np.linalg.norm(offset)
        self._flag("orientation", angle_rad > c.max_orientation_error_rad)
        if angle_rad > c.max_orientation_error_rad:
            quat_xyzw = rotations.apply_local_rotvec(c.nominal_quat_xyzw, offset * c.max_orientation_error_rad / angle_rad)
        return clamped_m, quat_xyzw

    def _rate_limit_pose(self, position_m, quat_xyzw, dt_s: float) -> tuple[np.ndarray, np.ndarray]:
        c = self.config
        previous_m, previous_xyzw = self._pose
        step_m = position_m - previous_m
        distance_m, max_distance_m = np.linalg.norm(step_m), c.max_tcp_speed_m_per_s * dt_s
        step_rad = rotations.local_rotvec(previous_xyzw, quat_xyzw)  # in the previous TCP frame
        angle_rad, max_angle_rad = np.linalg.norm(step_rad), c.max_angular_speed_rad_per_s * dt_s
        self._flag("speed", distance_m > max_distance_m + 1e-12 or angle_rad > max_angle_rad + 1e-12)
        if distance_m > max_distance_m:
            step_m = step_m * max_distance_m / distance_m
        if angle_rad > max_angle_rad:
            step_rad = step_rad * max_angle_rad / angle_rad
        return previous_m + step_m, rotations.apply_local_rotvec(previous_xyzw, step_rad)

    # ----- joint references ---------------------------------------------------------------------------------
    def filter_joint_reference(self, candidate_q_rad, now_s: float, measured_q_rad) -> SafeJointReference | None:
        """Safe joint reference (7,) [rad]: finite, inside the joint limits, speed-limited, TCP kept in the box."""
        try:
            dt_s = self._advance(now_s)
            measured = _finite(measured_q_rad, (ARM_DOF,))
            if self._q_rad is None or (self._estop_pending and measured is not None):
                if measured is None:
                    raise ValueError("measured_q_rad is not a finite (7,) vector")
                self._q_rad, self._estop_pending = measured, False
            q_rad = None if candidate_q_rad is None else _finite(candidate_q_rad, (ARM_DOF,))
            self._flag("nan_reference", candidate_q_rad is not None and q_rad is None)
            if q_rad is not None and not self._frozen():
                self._q_rad = self._limit_joint_step(q_rad, dt_s)
            self._flag("internal_error", False)
        except Exception:  # noqa: BLE001
            self._flag("internal_error", True)
        if self._q_rad is None:
            return None
        return SafeJointReference(self._q_rad.copy(), self._stiffness_scale)

    def _limit_joint_step(self, q_rad: np.ndarray, dt_s: float) -> np.ndarray:
        c, limits = self.config, self._model.joint_limits_rad
        margin = np.minimum(c.joint_limit_margin_rad, 0.25 * (limits[:, 1] - limits[:, 0]))
        clamped = np.clip(q_rad, limits[:, 0] + margin, limits[:, 1] - margin)
        self._flag("joint_limit", not np.array_equal(clamped, q_rad))
        max_step = c.max_joint_speed_rad_per_s * dt_s
        step = np.clip(clamped - self._q_rad, -max_step, max_step)
        self._flag("speed", not np.allclose(step, clamped - self._q_rad, rtol=0.0, atol=1e-12))
        allowed = self._q_rad + step
        # Keep the TCP in the box: accept the largest fraction of the step that does not increase the violation.
        baseline = self._violation(self._q_rad)
        outside = self._violation(allowed) > baseline + 1e-9
        self._flag("workspace", outside)
        if not outside:
            return allowed
        low, high = 0.0, 1.0
        for _ in range(_BISECTION_STEPS):
            middle = 0.5 * (low + high)
            low, high = (middle, high) if self._violation(self._q_rad + middle * step) <= baseline + 1e-9 else (low, middle)
        return self._q_rad + low * step

    def _violation(self, q_rad: np.ndarray) -> float:
        """How far the TCP at `q_rad` is outside the box [m] plus outside the orientation cone [rad]."""
        c = self.config
        position_m, quat_xyzw = self._model.ee_pose(q_rad)
        outside_m = np.linalg.norm(np.maximum(c.workspace_min_m - position_m, 0.0)
                                   + np.maximum(position_m - c.workspace_max_m, 0.0))
        angle_rad = (Rotation.from_quat(c.nominal_quat_xyzw).inv() * Rotation.from_quat(quat_xyzw)).magnitude()
        return float(outside_m + max(angle_rad - c.max_orientation_error_rad, 0.0))

    # ----- torques ------------------------------------------------------------------------------------------
    def joint_limit_torque(self, q_rad) -> np.ndarray:
        """(7,) [Nm] spring pushing away from joint limits inside the margin; zero elsewhere."""
        try:
            c, limits = self.config, self._model.joint_limits_rad
            q_rad = _finite(q_rad, (ARM_DOF,))
            if q_rad is None:
                raise ValueError("q_rad is not a finite (7,) vector")
            depth_low = np.maximum(limits[:, 0] + c.joint_limit_margin_rad - q_rad, 0.0)
            depth_high = np.maximum(q_rad - (limits[:, 1] - c.joint_limit_margin_rad), 0.0)
            self._flag("joint_limit_repulsion", bool(np.any(depth_low + depth_high > 0.0)))
            return c.joint_limit_gain_nm_per_rad * (depth_low - depth_high)
        except Exception:  # noqa: BLE001
            self._flag("internal_error", True)
            return np.zeros(ARM_DOF)

    def limit_torque(self, tau_nm, q_rad, tau_compensation_nm=None) -> np.ndarray:
        """Scale the active torque so its Cartesian wrench stays within max_force_n / max_moment_nm.

        The wrench is F = pinv(J^T)(tau - tau_compensation): pass the gravity/coriolis part the controller added
        as `tau_compensation_nm` (7,), it is not a contact force. On bad input returns the compensation alone.
        """
        compensation = np.zeros(ARM_DOF)
        try:
            if tau_compensation_nm is not None:
                compensation = _finite(tau_compensation_nm, (ARM_DOF,))
                if compensation is None:
                    compensation = np.zeros(ARM_DOF)
                    raise ValueError("tau_compensation_nm is not a finite (7,) vector")
            tau_nm, q_rad = _finite(tau_nm, (ARM_DOF,)), _finite(q_rad, (ARM_DOF,))
            if tau_nm is None or q_rad is None:
                raise ValueError("tau_nm / q_rad are not finite (7,) vectors")
            tau_active_nm = tau_nm - compensation
            wrench = np.linalg.pinv(self._model.jacobian(q_rad).T) @ tau_active_nm  # (6,) [N; Nm]
            ratio = max(np.linalg.norm(wrench[:3]) / self.config.max_force_n,
                        np.linalg.norm(wrench[3:]) / self.config.max_moment_nm, 1.0)
            self._flag("force", ratio > 1.0)
            return compensation + tau_active_nm / ratio
        except Exception:  # noqa: BLE001
            self._flag("internal_error", True)
            return compensation
