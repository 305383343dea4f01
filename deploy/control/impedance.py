"""Torque-level impedance laws (Cartesian and joint space), one `compute` per control tick, ROS-free.

Safety ideas from SERL / CRISP: the pose error is clipped per axis *before* the gains (reference limiting),
so the commanded force stays bounded however stiff the gains are; the torque change per tick is capped; the
target and the gains are low-pass filtered, so coarse references and run-time gain changes never step.
Per-tick rates are defined for a 1 ms tick and rescaled by the actual `dt_s`.
"""
from __future__ import annotations

import dataclasses
from typing import ClassVar

import numpy as np

from deploy.control import rotations
from deploy.errors import ConfigError
from deploy.robots.base import ARM_DOF, RobotModel

TICK_S = 0.001  # the tick the *_per_tick fields are defined for
PANDA_HOME_Q_RAD = (0.0, -0.785, 0.0, -2.356, 0.0, 1.571, 0.785)
_TASK_INERTIA_REGULARISATION = 1e-4  # added to J M^-1 J^T [1/kg] so the task inertia stays finite at singularities


class BoundedConfig:
    """Mixin for frozen config dataclasses: BOUNDS/SHAPES are data the ROS node reuses to validate changes."""

    BOUNDS: ClassVar[dict[str, tuple[float, float]]] = {}  # field -> inclusive (low, high), element-wise
    SHAPES: ClassVar[dict[str, tuple[int, ...]]] = {}  # field -> array shape; absent = scalar

    def __post_init__(self) -> None:
        cls = type(self).__name__
        for name, (low, high) in self.BOUNDS.items():
            value = getattr(self, name)
            try:
                array = np.asarray(value, dtype=float)
            except (TypeError, ValueError):
                raise ConfigError(f"{cls}.{name}={value!r} is not numeric") from None
            shape = self.SHAPES.get(name, ())
            if array.shape != shape:
                raise ConfigError(f"{cls}.{name} must have shape {shape}, got {array.shape}")
            if not np.all(np.isfinite(array)) or np.any(array < low) or np.any(array > high):
                raise ConfigError(f"{cls}.{name}={value!r} outside [{low}, {high}]")
            object.__setattr__(self, name, tuple(array.tolist()) if shape else float(array))
        for field in dataclasses.fields(self):
            if field.type == "bool" and not isinstance(getattr(self, field.name), bool):
                raise ConfigError(f"{cls}.{field.name}={getattr(self, field.name)!r} must be a bool")

    def with_updates(self, **changes):
        """A validated copy with `changes` applied (run-time parameter updates); raises ConfigError."""
        names = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(changes) - names)
        if unknown:
            raise ConfigError(f"{type(self).__name__} has no field(s) {unknown}; known: {sorted(names)}")
        return dataclasses.replace(self, **changes)


def _per_tick_rate(coefficient: float, dt_s: float) -> float:
    """First-order filter coefficient defined per 1 ms tick, converted to a step of `dt_s`."""
    return 1.0 - (1.0 - coefficient) ** (max(dt_s, 0.0) / TICK_S)


def _joint_damping(stiffness: np.ndarray, mass_matrix: np.ndarray, ratio: float) -> np.ndarray:
    """(7,) D_i = 2 zeta sqrt(K_i M_ii): critical damping of each joint against its own diagonal inertia."""
    return 2.0 * ratio * np.sqrt(stiffness * np.diag(mass_matrix))


class _TorqueShaper:
    """Torque-rate limiting of the active torque and clipping of the total; shared by both laws."""

    def __init__(self) -> None:
        self._tau_active_previous_nm = np.zeros(ARM_DOF)

    def reset(self, tau_active_nm: np.ndarray | None) -> None:
        self._tau_active_previous_nm = (np.zeros(ARM_DOF) if tau_active_nm is None
                                        else np.asarray(tau_active_nm, dtype=float).copy())

    def shape(self, tau_active_nm, tau_gravity_nm, max_rate_nm_per_tick, dt_s, torque_limits_nm) -> np.ndarray:
        max_step_nm = max_rate_nm_per_tick * max(dt_s, 0.0) / TICK_S
        step_nm = np.clip(tau_active_nm - self._tau_active_previous_nm, -max_step_nm, max_step_nm)
        self._tau_active_previous_nm = self._tau_active_previous_nm + step_nm
        return np.clip(self._tau_active_previous_nm + tau_gravity_nm, -torque_limits_nm, torque_limits_nm)


@dataclasses.dataclass(frozen=True)
class CartesianImpedanceConfig(BoundedConfig):
    """Gains and limits of the Cartesian impedance law; the pose is the TCP in the base frame.

    Damping: D = zeta (A sqrt(K) + sqrt(K) A) with A = Lambda^(1/2), Lambda = (J M^-1 J^T)^-1 the task-space
    inertia (Albu-Schaeffer's factorisation design): zeta = 1 is critical damping of the real arm, not of a
    unit mass as in franka_example_controllers. It uses the full (unscaled) stiffness, so a safety stiffness
    scale < 1 makes the arm overdamped, never undamped.
    """

    translational_stiffness_n_per_m: tuple[float, float, float] = (1000.0, 1000.0, 1000.0)
    rotational_stiffness_nm_per_rad: tuple[float, float, float] = (50.0, 50.0, 50.0)
    damping_ratio: float = 1.0
    nullspace_stiffness_nm_per_rad: float = 10.0  # posture PD in the dynamically consistent nullspace
    posture_q_rad: tuple[float, ...] = PANDA_HOME_Q_RAD  # (7,)
    max_translational_error_m: tuple[float, float, float] = (0.05, 0.05, 0.05)  # SERL clip, per base axis
    max_rotational_error_rad: tuple[float, float, float] = (0.3, 0.3, 0.3)  # per component of the rotvec
    max_torque_rate_nm_per_tick: float = 1.0  # per joint, per 1 ms tick (as franka_example_controllers)
    target_filter_per_tick: float = 0.1  # 1 = no filter; 0.1 -> time constant ~9.5 ms at 1 kHz
    gain_filter_per_tick: float = 0.005  # gains glide to new values, time constant ~0.2 s
    add_gravity: bool = False  # True where the backend does not compensate gravity itself (MuJoCo sim)

    BOUNDS: ClassVar[dict[str, tuple[float, float]]] = {
        "translational_stiffness_n_per_m": (0.0, 3000.0),
        "rotational_stiffness_nm_per_rad": (0.0, 300.0),
        "damping_ratio": (0.0, 2.0),
        "nullspace_stiffness_nm_per_rad": (0.0, 100.0),
        "posture_q_rad": (-3.8, 3.8),
        "max_translational_error_m": (0.001, 0.5),
        "max_rotational_error_rad": (0.01, np.pi),
        "max_torque_rate_nm_per_tick": (0.01, 10.0),
        "target_filter_per_tick": (0.0001, 1.0),
        "gain_filter_per_tick": (0.0001, 1.0),
    }
    SHAPES: ClassVar[dict[str, tuple[int, ...]]] = {
        "translational_stiffness_n_per_m": (3,), "rotational_stiffness_nm_per_rad": (3,),
        "posture_q_rad": (ARM_DOF,), "max_translational_error_m": (3,), "max_rotational_error_rad": (3,),
    }


def pose_error_in_base(position_m, quat_xyzw, target_position_m, target_quat_xyzw) -> np.ndarray:
    """(6,) [position error; rotation vector of R R_target^-1], both current-minus-target in the base frame."""
    return np.concatenate([np.asarray(position_m) - target_position_m,
                           rotations.base_frame_error(quat_xyzw, target_quat_xyzw)])


def task_space_inertia(jacobian: np.ndarray, mass_matrix: np.ndarray) -> np.ndarray:
    """(6, 6) Lambda = (J M^-1 J^T + eps I)^-1 [kg, kg m^2]."""
    mobility = jacobian @ np.linalg.solve(mass_matrix, jacobian.T)  # (6, 6)
    return np.linalg.inv(mobility + _TASK_INERTIA_REGULARISATION * np.eye(6))


def task_space_damping(inertia: np.ndarray, stiffness: np.ndarray, ratio: float) -> np.ndarray:
    """(6, 6) D = zeta (A K1 + K1 A), A = Lambda^(1/2), K1 = sqrt(diag stiffness)."""
    eigenvalues, eigenvectors = np.linalg.eigh(inertia)
    inertia_sqrt = (eigenvectors * np.sqrt(np.clip(eigenvalues, 0.0, None))) @ eigenvectors.T
    stiffness_sqrt = np.diag(np.sqrt(stiffness))
    return ratio * (inertia_sqrt @ stiffness_sqrt + stiffness_sqrt @ inertia_sqrt)


class CartesianImpedance:
    """tau = J^T(-K e_clipped - D J dq) + N (posture PD) + coriolis [+ gravity], rate-limited and clipped.

    N = I - J^T Lambda J M^-1 is the dynamically consistent nullspace projector: the posture torque produces
    no TCP acceleration.
    """

    def __init__(self, config: CartesianImpedanceConfig | None = None):
        self.config = config or CartesianImpedanceConfig()
        self._shaper = _TorqueShaper()
        self._gains = self._config_gains()
        self._target_position_m: np.ndarray | None = None
        self._target_quat_xyzw: np.ndarray | None = None

    def _config_gains(self) -> np.ndarray:
        """(7,) [translational (3), rotational (3), nullspace] stiffness, the quantities the gain filter moves."""
        c = self.config
        return np.array([*c.translational_stiffness_n_per_m, *c.rotational_stiffness_nm_per_rad,
                         c.nullspace_stiffness_nm_per_rad])

    def set_config(self, config: CartesianImpedanceConfig) -> None:
        """Take new gains/limits; stiffnesses glide there through the gain filter."""
        self.config = config

    def reset(self, tau_active_nm: np.ndarray | None = None) -> None:
        """Restart filters; rate limiting starts from `tau_active_nm` (7,) [Nm] (last command minus gravity, or 0)."""
        self._shaper.reset(tau_active_nm)
        self._gains = self._config_gains()
        self._target_position_m = None
        self._target_quat_xyzw = None

    def _filter_target(self, target_position_m, target_quat_xyzw, dt_s: float) -> None:
        if self._target_position_m is None:
            self._target_position_m = np.asarray(target_position_m, dtype=float).copy()
            self._target_quat_xyzw = np.asarray(target_quat_xyzw, dtype=float).copy()
            return
        alpha = _per_tick_rate(self.config.target_filter_per_tick, dt_s)
        self._target_position_m += alpha * (np.asarray(target_position_m) - self._target_position_m)
        step = rotations.local_rotvec(self._target_quat_xyzw, target_quat_xyzw)
        self._target_quat_xyzw = rotations.apply_local_rotvec(self._target_quat_xyzw, alpha * step)

    def compute(self, q_rad, dq_rad_s, target_position_m, target_quat_xyzw, model: RobotModel, dt_s: float,
                stiffness_scale: float = 1.0, tau_extra_nm: np.ndarray | None = None) -> np.ndarray:
        """Joint torque (7,) [Nm] for a TCP target in the base frame; `stiffness_scale` 0..1 from the safety layer.

        `tau_extra_nm` (7,): further active torque (the safety layer's joint-limit repulsion), rate-limited with
        the rest so nothing added to the command can jump.
        """
        c = self.config
        q_rad, dq_rad_s = np.asarray(q_rad, dtype=float), np.asarray(dq_rad_s, dtype=float)
        self._filter_target(target_position_m, target_quat_xyzw, dt_s)
        self._gains += _per_tick_rate(c.gain_filter_per_tick, dt_s) * (self._config_gains() - self._gains)
        scale = float(np.clip(stiffness_scale, 0.0, 1.0))

        position_m, quat_xyzw = model.ee_pose(q_rad)
        jacobian = model.jacobian(q_rad)  # (6, 7)
        mass_matrix = model.mass_matrix(q_rad)  # (7, 7)
        tau_gravity_nm = model.bias_torque(q_rad, np.zeros(ARM_DOF))
        tau_coriolis_nm = model.bias_torque(q_rad, dq_rad_s) - tau_gravity_nm

        error = pose_error_in_base(position_m, quat_xyzw, self._target_position_m, self._target_quat_xyzw)
        error_limit = np.array([*c.max_translational_error_m, *c.max_rotational_error_rad])
        error_clipped = np.clip(error, -error_limit, error_limit)  # (6,) reference limiting
        inertia = task_space_inertia(jacobian, mass_matrix)  # (6, 6)
        damping = task_space_damping(inertia, self._gains[:6], c.damping_ratio)  # (6, 6)
        wrench = -scale * self._gains[:6] * error_clipped - damping @ (jacobian @ dq_rad_s)  # (6,) [N; Nm]
        tau_task_nm = jacobian.T @ wrench

        stiffness_null = self._gains[6] * np.ones(ARM_DOF)
        posture_pd = (scale * stiffness_null * (np.asarray(c.posture_q_rad) - q_rad)
                      - _joint_damping(stiffness_null, mass_matrix, c.damping_ratio) * dq_rad_s)
        projector = np.eye(ARM_DOF) - jacobian.T @ inertia @ jacobian @ np.linalg.inv(mass_matrix)  # (7, 7)
        tau_active_nm = tau_task_nm + projector @ posture_pd + tau_coriolis_nm
        if tau_extra_nm is not None:
            tau_active_nm = tau_active_nm + tau_extra_nm
        return self._shaper.shape(tau_active_nm, tau_gravity_nm if c.add_gravity else 0.0,
                                  c.max_torque_rate_nm_per_tick, dt_s, model.torque_limits_nm)


@dataclasses.dataclass(frozen=True)
class JointImpedanceConfig(BoundedConfig):
    """Gains and limits of the joint impedance law. D_i = 2 zeta sqrt(K_i M_ii) (diagonal joint inertia)."""

    stiffness_nm_per_rad: tuple[float, ...] = (600.0, 600.0, 600.0, 600.0, 250.0, 150.0, 50.0)  # (7,)
    damping_ratio: float = 1.0
    max_joint_error_rad: tuple[float, ...] = (0.1,) * ARM_DOF  # (7,) reference limiting per joint
    max_torque_rate_nm_per_tick: float = 1.0
    target_filter_per_tick: float = 0.1
    gain_filter_per_tick: float = 0.005
    add_gravity: bool = False

    BOUNDS: ClassVar[dict[str, tuple[float, float]]] = {
        "stiffness_nm_per_rad": (0.0, 1000.0),
        "damping_ratio": (0.0, 2.0),
        "max_joint_error_rad": (0.001, 1.0),
        "max_torque_rate_nm_per_tick": (0.01, 10.0),
        "target_filter_per_tick": (0.0001, 1.0),
        "gain_filter_per_tick": (0.0001, 1.0),
    }
    SHAPES: ClassVar[dict[str, tuple[int, ...]]] = {"stiffness_nm_per_rad": (ARM_DOF,),
                                                    "max_joint_error_rad": (ARM_DOF,)}


class JointImpedance:
    """tau = K clip(q_d - q) - D dq + coriolis [+ gravity], rate-limited and clipped."""

    def __init__(self, config: JointImpedanceConfig | None = None):
        self.config = config or JointImpedanceConfig()
        self._shaper = _TorqueShaper()
        self._stiffness = np.array(self.config.stiffness_nm_per_rad)
        self._target_q_rad: np.ndarray | None = None

    def set_config(self, config: JointImpedanceConfig) -> None:
        """Take new gains/limits; stiffnesses glide there through the gain filter."""
        self.config = config

    def reset(self, tau_active_nm: np.ndarray | None = None) -> None:
        """Restart filters; rate limiting starts from `tau_active_nm` (7,) [Nm] (last command minus gravity, or 0)."""
        self._shaper.reset(tau_active_nm)
        self._stiffness = np.array(self.config.stiffness_nm_per_rad)
        self._target_q_rad = None

    def compute(self, q_rad, dq_rad_s, target_q_rad, model: RobotModel, dt_s: float,
                stiffness_scale: float = 1.0, tau_extra_nm: np.ndarray | None = None) -> np.ndarray:
        """Joint torque (7,) [Nm] towards `target_q_rad` (7,); `stiffness_scale` 0..1 from the safety layer;
        `tau_extra_nm` as in CartesianImpedance.compute."""
        c = self.config
        q_rad, dq_rad_s = np.asarray(q_rad, dtype=float), np.asarray(dq_rad_s, dtype=float)
        if self._target_q_rad is None:
            self._target_q_rad = np.asarray(target_q_rad, dtype=float).copy()
        else:
            self._target_q_rad += _per_tick_rate(c.target_filter_per_tick, dt_s) * (target_q_rad - self._target_q_rad)
        self._stiffness += _per_tick_rate(c.gain_filter_per_tick, dt_s) * (c.stiffness_nm_per_rad - self._stiffness)
        scale = float(np.clip(stiffness_scale, 0.0, 1.0))

        mass_matrix = model.mass_matrix(q_rad)
        tau_gravity_nm = model.bias_torque(q_rad, np.zeros(ARM_DOF))
        tau_coriolis_nm = model.bias_torque(q_rad, dq_rad_s) - tau_gravity_nm
        error_limit = np.asarray(c.max_joint_error_rad)
        error_rad = np.clip(self._target_q_rad - q_rad, -error_limit, error_limit)
        tau_active_nm = (scale * self._stiffness * error_rad
                         - _joint_damping(self._stiffness, mass_matrix, c.damping_ratio) * dq_rad_s + tau_coriolis_nm)
        if tau_extra_nm is not None:
            tau_active_nm = tau_active_nm + tau_extra_nm
        return self._shaper.shape(tau_active_nm, tau_gravity_nm if c.add_gravity else 0.0,
                                  c.max_torque_rate_nm_per_tick, dt_s, model.torque_limits_nm)
