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
import math
from typing import ClassVar

import numpy as np
from numba import njit
from scipy.spatial.transform import Rotation

from deploy.control.rotations import apply_local_rotvec_into, local_rotvec_into
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


# Trip bits of the Cartesian kernels: a clamp, the orientation cone, the speed limit; an invalid candidate; the
# clamp ran (else the reference was frozen and those three keep their state); a joint inside its limit margin.
_WORKSPACE, _ORIENTATION, _SPEED, _NAN_REFERENCE, _CLAMP_RAN, _REPULSION = 1, 2, 4, 8, 16, 32
# SafetyLayer.limits: workspace min (3), max (3), nominal quat xyzw (4), max orientation error, max TCP speed,
# max angular speed, joint-limit margin, joint-limit gain.
LIMITS_SIZE = 15


@njit(nogil=True, cache=True)
def _unit_pose(position_m, quat_xyzw, pose):
    """pose (7,) = [position; unit quaternion]; False (pose untouched) if not finite or the quaternion is ~0."""
    norm = math.sqrt(quat_xyzw[0] ** 2 + quat_xyzw[1] ** 2 + quat_xyzw[2] ** 2 + quat_xyzw[3] ** 2)
    if not (np.isfinite(norm) and norm >= 1e-6 and np.isfinite(position_m).all()):
        return False
    pose[:3] = position_m
    pose[3:] = quat_xyzw / norm
    return True


@njit(nogil=True, cache=True)
def _clamp_and_limit_pose(pose, candidate, dt_s, workspace_min_m, workspace_max_m, nominal_quat_xyzw,
                          max_orientation_error_rad, max_tcp_speed_m_per_s, max_angular_speed_rad_per_s):
    """Move the safe pose (7,) in place towards `candidate` (7,): clamped into the box and the orientation cone,
    then speed-limited from where it is. Returns the trip bits (_WORKSPACE | _ORIENTATION | _SPEED)."""
    flags = 0
    target = candidate.copy()
    for i in range(3):
        clamped = min(max(candidate[i], workspace_min_m[i]), workspace_max_m[i])
        if clamped != candidate[i]:
            flags |= _WORKSPACE
        target[i] = clamped
    offset = np.empty(3)
    local_rotvec_into(nominal_quat_xyzw, candidate[3:], offset)  # in the nominal frame
    angle_rad = math.sqrt(offset[0] ** 2 + offset[1] ** 2 + offset[2] ** 2)
    if angle_rad > max_orientation_error_rad:
        flags |= _ORIENTATION
        apply_local_rotvec_into(nominal_quat_xyzw, offset * (max_orientation_error_rad / angle_rad), target[3:])
    step_m = target[:3] - pose[:3]
    distance_m = math.sqrt(step_m[0] ** 2 + step_m[1] ** 2 + step_m[2] ** 2)
    max_distance_m = max_tcp_speed_m_per_s * dt_s
    step_rad = np.empty(3)
    local_rotvec_into(pose[3:], target[3:], step_rad)  # in the previous TCP frame
    angle_rad = math.sqrt(step_rad[0] ** 2 + step_rad[1] ** 2 + step_rad[2] ** 2)
    max_angle_rad = max_angular_speed_rad_per_s * dt_s
    if distance_m > max_distance_m + 1e-12 or angle_rad > max_angle_rad + 1e-12:
        flags |= _SPEED
    if distance_m > max_distance_m:
        step_m *= max_distance_m / distance_m
    if angle_rad > max_angle_rad:
        step_rad *= max_angle_rad / angle_rad
    pose[:3] += step_m
    apply_local_rotvec_into(pose[3:], step_rad, pose[3:])
    return flags


@njit(nogil=True, cache=True)
def _joint_limit_torque(q_rad, limits_rad, margin_rad, gain_nm_per_rad, out):
    """out (n,) [Nm] = spring pushing away from joint limits inside the margin. Returns -1 if q is not finite
    (out undefined), 1 if some joint is inside its margin, else 0."""
    inside = 0
    for i in range(q_rad.shape[0]):
        if not np.isfinite(q_rad[i]):
            return -1
        depth_low = max(limits_rad[i, 0] + margin_rad - q_rad[i], 0.0)
        depth_high = max(q_rad[i] - (limits_rad[i, 1] - margin_rad), 0.0)
        if depth_low + depth_high > 0.0:
            inside = 1
        out[i] = gain_nm_per_rad * (depth_low - depth_high)
    return inside


@njit(nogil=True, cache=True)
def filter_pose(pose, candidate, frozen, dt_s, limits):
    """The Cartesian filter on the packed `limits`: move the safe pose (7,) towards `candidate` (7,) unless
    `frozen`. Returns the trip bits (_NAN_REFERENCE, pose untouched, for a non-finite or zero-quaternion
    candidate)."""
    unit = np.empty(7)
    if not _unit_pose(candidate[0:3], candidate[3:7], unit):
        return _NAN_REFERENCE
    if frozen:
        return 0
    return _CLAMP_RAN | _clamp_and_limit_pose(pose, unit, dt_s, limits[0:3], limits[3:6], limits[6:10], limits[10],
                                              limits[11], limits[12])


@njit(nogil=True, cache=True)
def joint_limit_repulsion(q_rad, joint_limits_rad, limits, out):
    """`_joint_limit_torque` on the packed `limits`: _REPULSION inside a margin, 0 outside, -1 for a bad q."""
    inside = _joint_limit_torque(q_rad, joint_limits_rad, limits[13], limits[14], out)
    return _REPULSION if inside == 1 else inside


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
        self._pose: np.ndarray | None = None  # (7,) last safe [position; quat xyzw]
        self.limits = np.array([*config.workspace_min_m, *config.workspace_max_m, *config.nominal_quat_xyzw,
                                config.max_orientation_error_rad, config.max_tcp_speed_m_per_s,
                                config.max_angular_speed_rad_per_s, config.joint_limit_margin_rad,
                                config.joint_limit_gain_nm_per_rad])
        _warm_up()
        self._q_rad: np.ndarray | None = None  # last safe joint reference

    # ----- trips and commands ------------------------------------------------------------------------------
    def _flag(self, reason: str, active: bool) -> None:
        if active and not self._active.get(reason, False):
            self.trips[reason] = self.trips.get(reason, 0) + 1
            self.last_trip_reason = reason
        self._active[reason] = active

    def note_sample(self, finite: bool) -> None:
        """Trip "bad_sample" while the robot's joint readings are not finite (the loop commands nothing then:
        a NaN once in the law's filters would stay there)."""
        self._flag("bad_sample", not finite)

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

    @property
    def stiffness_scale(self) -> float:
        return self._stiffness_scale

    # ----- the compiled Cartesian tick (deploy/control/loop.py) ---------------------------------------------
    def compiled_tick_state(self, now_s: float) -> tuple[np.ndarray, bool, float] | None:
        """(safe pose (7,) to filter in place, frozen, dt) for a compiled tick that runs `filter_pose` and
        `joint_limit_repulsion` itself, then hands their bits to `compiled_tick_done`; None when this tick
        needs `filter_reference` (no safe pose yet, an e-stop snap pending, a bad clock)."""
        if self._pose is None or self._estop_pending or not math.isfinite(now_s):
            return None
        dt_s = self._advance(now_s)
        return self._pose, self._frozen(), dt_s

    def compiled_tick_done(self, bits: int) -> None:
        self._flag("bad_sample", False)
        self._flag("nan_reference", bool(bits & _NAN_REFERENCE))
        if bits & _CLAMP_RAN:
            self._flag("workspace", bool(bits & _WORKSPACE))
            self._flag("orientation", bool(bits & _ORIENTATION))
            self._flag("speed", bool(bits & _SPEED))
        self._flag("joint_limit_repulsion", bool(bits & _REPULSION))
        self._flag("internal_error", False)

    def _advance(self, now_s: float) -> float:
        """Step the clock and the stiffness slew; returns dt [s] for the speed limit (0 on the first tick)."""
        now_s = float(now_s)
        if not math.isfinite(now_s):
            raise ValueError(f"now_s={now_s} is not finite")
        dt_s = 0.0 if self._now_s is None else min(max(now_s - self._now_s, 0.0), _MAX_STEP_S)
        self._now_s = now_s if self._now_s is None else max(now_s, self._now_s)
        c = self.config
        self._flag("stale_chunk", self.stale)
        if self._estopped or self.stale:
            ramp_s = c.estop_ramp_s if self._estopped else c.soften_ramp_s
            target, rate = c.soft_stiffness_scale, (1.0 - c.soft_stiffness_scale) / max(ramp_s, 1e-9)
        else:
            target, rate = 1.0, 1.0 / max(c.startup_ramp_s, 1e-9)
        self._stiffness_scale += min(max(target - self._stiffness_scale, -rate * dt_s), rate * dt_s)
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
            measured = self._pose_or_none(measured_pose) if self._pose is None or self._estop_pending else None
            if self._pose is None or (self._estop_pending and measured is not None):
                if measured is None:
                    raise ValueError("measured_pose is not a finite (position (3,), quat (4,)) pair")
                self._pose, self._estop_pending = measured, False
            pose = None if candidate is None else self._pose_or_none(candidate)
            self._flag("nan_reference", candidate is not None and pose is None)
            if pose is not None and not self._frozen():
                flags = filter_pose(self._pose, pose, False, dt_s, self.limits)
                self._flag("workspace", bool(flags & _WORKSPACE))
                self._flag("orientation", bool(flags & _ORIENTATION))
                self._flag("speed", bool(flags & _SPEED))
            self._flag("internal_error", False)
        except Exception:  # noqa: BLE001 -- the control loop must never see an exception
            self._flag("internal_error", True)
        if self._pose is None:
            return None
        return SafeReference(self._pose[:3].copy(), self._pose[3:].copy(), self._stiffness_scale)

    @staticmethod
    def _pose_or_none(pose) -> np.ndarray | None:
        """(7,) [position; unit quaternion] from a (position (3,), quat (4,)) pair, None if it is not one."""
        try:
            position_m, quat_xyzw = pose
            position_m, quat_xyzw = np.asarray(position_m, dtype=float), np.asarray(quat_xyzw, dtype=float)
        except (TypeError, ValueError):
            return None
        unit = np.empty(7)
        if position_m.shape != (3,) or quat_xyzw.shape != (4,) or not _unit_pose(position_m, quat_xyzw, unit):
            return None
        return unit

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
            q_rad, tau_nm = np.asarray(q_rad, dtype=float), np.empty(ARM_DOF)
            bits = (joint_limit_repulsion(q_rad, self._model.joint_limits_rad, self.limits, tau_nm)
                    if q_rad.shape == (ARM_DOF,) else -1)
            if bits < 0:
                raise ValueError("q_rad is not a finite (7,) vector")
            self._flag("joint_limit_repulsion", bits == _REPULSION)
            return tau_nm
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


def _warm_up() -> None:
    """Compile (or load from numba's cache) the kernels at construction, never in the first ticks."""
    if _warm_up.done:
        return
    pose, limits = np.array([0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0]), np.ones(LIMITS_SIZE)
    limits[0:3], limits[6:10] = -1.0, [0.0, 0.0, 0.0, 1.0]
    _unit_pose(np.zeros(3), pose[3:], pose.copy())
    filter_pose(pose, pose.copy(), False, 0.001, limits)
    joint_limit_repulsion(np.zeros(ARM_DOF), np.ones((ARM_DOF, 2)), limits, np.empty(ARM_DOF))
    _warm_up.done = True


_warm_up.done = False
