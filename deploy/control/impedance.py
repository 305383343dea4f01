"""Torque-level impedance laws (Cartesian and joint space), one `compute` per control tick, ROS-free.

Safety ideas from SERL / CRISP: the pose error is clipped per axis *before* the gains (reference limiting),
so the commanded force stays bounded however stiff the gains are; the torque change per tick is capped; the
target and the gains are low-pass filtered, so coarse references and run-time gain changes never step.
Per-tick rates are defined for a 1 ms tick and rescaled by the actual `dt_s`.

Each law is one compiled kernel (numba, GIL released, cached on disk and compiled when a law is built, not in
the first tick): the model's quantities and the law's filter states go in as preallocated arrays, so a tick is
one call instead of some fifty interpreted numpy operations on 3-7 element arrays.
"""
from __future__ import annotations

import dataclasses
from typing import ClassVar

import numpy as np
from numba import njit

from deploy.control.linalg import matmul, matvec, psd_sqrt, spd_inverse
from deploy.control.rotations import apply_local_rotvec_into, base_frame_error_into, local_rotvec_into
from deploy.errors import ConfigError
from deploy.robots.base import ARM_DOF, Dynamics, RobotModel

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


@njit(nogil=True, cache=True)
def _per_tick_rate(coefficient: float, dt_s: float) -> float:
    """First-order filter coefficient defined per 1 ms tick, converted to a step of `dt_s`."""
    return 1.0 - (1.0 - coefficient) ** (max(dt_s, 0.0) / TICK_S)


@njit(nogil=True, cache=True)
def _shape_torque(tau_active_nm, tau_active_previous_nm, tau_gravity_nm, add_gravity, max_rate_nm_per_tick, dt_s,
                  torque_limits_nm):
    """Torque-rate limiting of the active torque (state `tau_active_previous_nm` (n,) updated in place) and
    clipping of the total (+ gravity if `add_gravity`); shared by both laws. Returns a new (n,) array."""
    max_step_nm = max_rate_nm_per_tick * max(dt_s, 0.0) / TICK_S
    out = np.empty_like(tau_active_nm)
    for i in range(tau_active_nm.shape[0]):
        step_nm = min(max(tau_active_nm[i] - tau_active_previous_nm[i], -max_step_nm), max_step_nm)
        tau_active_previous_nm[i] += step_nm
        total_nm = tau_active_previous_nm[i] + (tau_gravity_nm[i] if add_gravity else 0.0)
        out[i] = min(max(total_nm, -torque_limits_nm[i]), torque_limits_nm[i])
    return out


@njit(nogil=True, cache=True)
def _task_space_inertia_from_inverse(jacobian, mass_inverse):
    mobility = matmul(matmul(jacobian, mass_inverse), jacobian.T)  # (6, 6)
    for i in range(6):
        mobility[i, i] += _TASK_INERTIA_REGULARISATION
    return spd_inverse(mobility)


@njit(nogil=True, cache=True)
def task_space_inertia(jacobian, mass_matrix):
    """(6, 6) Lambda = (J M^-1 J^T + eps I)^-1 [kg, kg m^2]."""
    return _task_space_inertia_from_inverse(jacobian, spd_inverse(mass_matrix))


@njit(nogil=True, cache=True)
def task_space_damping(inertia, stiffness, ratio):
    """(6, 6) D = zeta (A K1 + K1 A), A = Lambda^(1/2), K1 = sqrt(diag stiffness)."""
    inertia_sqrt = psd_sqrt(inertia)
    stiffness_sqrt = np.sqrt(stiffness)
    damping = np.empty((6, 6))
    for i in range(6):
        for j in range(6):
            damping[i, j] = ratio * inertia_sqrt[i, j] * (stiffness_sqrt[i] + stiffness_sqrt[j])
    return damping


@njit(nogil=True, cache=True)
def _cartesian_torque(q_rad, dq_rad_s, target_position_m, target_quat_xyzw, position_m, quat_xyzw, jacobian,
                      mass_matrix, tau_gravity_nm, tau_coriolis_nm, tau_extra_nm, torque_limits_nm,
                      config_gains, error_limit, posture_q_rad, damping_ratio, target_filter_per_tick,
                      gain_filter_per_tick, max_rate_nm_per_tick, add_gravity, filtered_position_m,
                      filtered_quat_xyzw, gains, tau_active_previous_nm, dt_s, stiffness_scale):
    """The Cartesian law (see CartesianImpedance); updates the filter states (the last four arrays) in place."""
    n = q_rad.shape[0]
    alpha = _per_tick_rate(target_filter_per_tick, dt_s)
    step = np.empty(3)
    local_rotvec_into(filtered_quat_xyzw, target_quat_xyzw, step)
    for i in range(3):
        filtered_position_m[i] += alpha * (target_position_m[i] - filtered_position_m[i])
        step[i] *= alpha
    apply_local_rotvec_into(filtered_quat_xyzw, step, filtered_quat_xyzw)
    gains += _per_tick_rate(gain_filter_per_tick, dt_s) * (config_gains - gains)
    scale = min(max(stiffness_scale, 0.0), 1.0)

    error = np.empty(6)  # current - target in the base frame: [position; rotation vector of R R_target^-1]
    base_frame_error_into(quat_xyzw, filtered_quat_xyzw, error[3:])
    for i in range(3):
        error[i] = position_m[i] - filtered_position_m[i]
    mass_inverse = spd_inverse(mass_matrix)  # (n, n)
    inertia = _task_space_inertia_from_inverse(jacobian, mass_inverse)  # (6, 6)
    damping = task_space_damping(inertia, gains[:6], damping_ratio)  # (6, 6)
    wrench = -matvec(damping, matvec(jacobian, dq_rad_s))  # (6,) [N; Nm]
    for i in range(6):
        wrench[i] -= scale * gains[i] * min(max(error[i], -error_limit[i]), error_limit[i])  # reference limiting
    posture_pd = np.empty(n)
    for i in range(n):
        joint_damping = 2.0 * damping_ratio * np.sqrt(gains[6] * mass_matrix[i, i])
        posture_pd[i] = scale * gains[6] * (posture_q_rad[i] - q_rad[i]) - joint_damping * dq_rad_s[i]
    # N = I - J^T Lambda J M^-1: the dynamically consistent nullspace projector, applied to the posture PD.
    tau_null_nm = posture_pd - matvec(jacobian.T, matvec(inertia, matvec(jacobian, matvec(mass_inverse, posture_pd))))
    tau_active_nm = matvec(jacobian.T, wrench) + tau_null_nm + tau_coriolis_nm + tau_extra_nm
    return _shape_torque(tau_active_nm, tau_active_previous_nm, tau_gravity_nm, add_gravity, max_rate_nm_per_tick,
                         dt_s, torque_limits_nm)


@njit(nogil=True, cache=True)
def _joint_torque(q_rad, dq_rad_s, target_q_rad, mass_matrix, tau_gravity_nm, tau_coriolis_nm, tau_extra_nm,
                  torque_limits_nm, config_stiffness, error_limit, damping_ratio, target_filter_per_tick,
                  gain_filter_per_tick, max_rate_nm_per_tick, add_gravity, filtered_q_rad, stiffness,
                  tau_active_previous_nm, dt_s, stiffness_scale):
    """The joint law (see JointImpedance); updates the filter states (the last three arrays) in place."""
    alpha_target = _per_tick_rate(target_filter_per_tick, dt_s)
    alpha_gain = _per_tick_rate(gain_filter_per_tick, dt_s)
    scale = min(max(stiffness_scale, 0.0), 1.0)
    tau_active_nm = np.empty(q_rad.shape[0])
    for i in range(q_rad.shape[0]):
        filtered_q_rad[i] += alpha_target * (target_q_rad[i] - filtered_q_rad[i])
        stiffness[i] += alpha_gain * (config_stiffness[i] - stiffness[i])
        error_rad = min(max(filtered_q_rad[i] - q_rad[i], -error_limit[i]), error_limit[i])
        joint_damping = 2.0 * damping_ratio * np.sqrt(stiffness[i] * mass_matrix[i, i])  # vs. its own inertia
        tau_active_nm[i] = (scale * stiffness[i] * error_rad - joint_damping * dq_rad_s[i] + tau_coriolis_nm[i]
                            + tau_extra_nm[i])
    return _shape_torque(tau_active_nm, tau_active_previous_nm, tau_gravity_nm, add_gravity, max_rate_nm_per_tick,
                         dt_s, torque_limits_nm)


# CartesianImpedance.params: config gains (7), error limit (6), posture (7), then damping ratio, target filter,
# gain filter, max torque rate, add gravity (1.0 / 0.0). CartesianImpedance.state: the filtered target position
# (3) and quaternion (4), the filtered gains (7), the last active torque (7).
_GAINS, _ERROR_LIMIT, _POSTURE, _SCALARS = slice(0, 7), slice(7, 13), slice(13, 20), slice(20, 25)
PARAMS_SIZE = 25
_FILTERED_POSITION, _FILTERED_QUAT, _FILTERED_GAINS, _TAU_PREVIOUS = slice(0, 3), slice(3, 7), slice(7, 14), slice(14, 21)
STATE_SIZE = 21


@njit(nogil=True, cache=True)
def cartesian_law(q_rad, dq_rad_s, target_position_m, target_quat_xyzw, position_m, quat_xyzw, jacobian,
                  mass_matrix, tau_gravity_nm, tau_coriolis_nm, tau_extra_nm, torque_limits_nm, params, state, dt_s,
                  stiffness_scale):
    """The Cartesian law on CartesianImpedance's packed `params` and `state` (updated in place)."""
    return _cartesian_torque(q_rad, dq_rad_s, target_position_m, target_quat_xyzw, position_m, quat_xyzw, jacobian,
                             mass_matrix, tau_gravity_nm, tau_coriolis_nm, tau_extra_nm, torque_limits_nm,
                             params[0:7], params[7:13], params[13:20], params[20], params[21], params[22],
                             params[23], params[24] != 0.0, state[0:3], state[3:7], state[7:14], state[14:21], dt_s,
                             stiffness_scale)


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


class CartesianImpedance:
    """tau = J^T(-K e_clipped - D J dq) + N (posture PD) + coriolis [+ gravity], rate-limited and clipped.

    N = I - J^T Lambda J M^-1 is the dynamically consistent nullspace projector: the posture torque produces
    no TCP acceleration.
    """

    def __init__(self, config: CartesianImpedanceConfig | None = None):
        # Parameters and filter states live in two flat arrays (named views below), so the fused torque tick
        # (deploy/control/loop.py) hands the law all of them in two arguments.
        self.params = np.zeros(PARAMS_SIZE)
        self._config_gains, self._error_limit = self.params[_GAINS], self.params[_ERROR_LIMIT]
        self._posture_q_rad = self.params[_POSTURE]
        self.state = np.zeros(STATE_SIZE)
        self._target_position_m, self._target_quat_xyzw = self.state[_FILTERED_POSITION], self.state[_FILTERED_QUAT]
        self._gains, self._tau_active_previous_nm = self.state[_FILTERED_GAINS], self.state[_TAU_PREVIOUS]
        self.set_config(config or CartesianImpedanceConfig())
        self._gains[:] = self._config_gains
        self._target_quat_xyzw[3] = 1.0
        self.target_set = False
        self._no_extra_nm = np.zeros(ARM_DOF)
        _warm_up()

    def set_config(self, config: CartesianImpedanceConfig) -> None:
        """Take new gains/limits; stiffnesses glide there through the gain filter."""
        self.config = config
        # (7,) [translational (3), rotational (3), nullspace] stiffness, the quantities the gain filter moves
        self._config_gains[:] = [*config.translational_stiffness_n_per_m, *config.rotational_stiffness_nm_per_rad,
                                 config.nullspace_stiffness_nm_per_rad]
        self._error_limit[:] = [*config.max_translational_error_m, *config.max_rotational_error_rad]
        self._posture_q_rad[:] = config.posture_q_rad
        self.params[_SCALARS] = (config.damping_ratio, config.target_filter_per_tick, config.gain_filter_per_tick,
                                 config.max_torque_rate_nm_per_tick, float(config.add_gravity))

    def reset(self, tau_active_nm: np.ndarray | None = None) -> None:
        """Restart filters; rate limiting starts from `tau_active_nm` (7,) [Nm] (last command minus gravity, or 0)."""
        self._tau_active_previous_nm[:] = 0.0 if tau_active_nm is None else np.asarray(tau_active_nm, dtype=float)
        self._gains[:] = self._config_gains
        self.target_set = False

    def compute(self, q_rad, dq_rad_s, target_position_m, target_quat_xyzw, model: RobotModel, dt_s: float,
                stiffness_scale: float = 1.0, tau_extra_nm: np.ndarray | None = None) -> np.ndarray:
        """Joint torque (7,) [Nm] for a TCP target in the base frame; `stiffness_scale` 0..1 from the safety layer.

        `tau_extra_nm` (7,): further active torque (the safety layer's joint-limit repulsion), rate-limited with
        the rest so nothing added to the command can jump.
        """
        q_rad, dq_rad_s = np.asarray(q_rad, dtype=float), np.asarray(dq_rad_s, dtype=float)
        target_position_m = np.asarray(target_position_m, dtype=float)
        target_quat_xyzw = np.asarray(target_quat_xyzw, dtype=float)
        if not self.target_set:  # the filter starts at the first target
            self._target_position_m[:], self._target_quat_xyzw[:] = target_position_m, target_quat_xyzw
            self.target_set = True
        d: Dynamics = model.dynamics(q_rad, dq_rad_s)
        return cartesian_law(q_rad, dq_rad_s, target_position_m, target_quat_xyzw, d.position_m, d.quat_xyzw,
                             d.jacobian, d.mass_matrix, d.gravity_nm, d.coriolis_nm,
                             self._no_extra_nm if tau_extra_nm is None else tau_extra_nm, model.torque_limits_nm,
                             self.params, self.state, float(dt_s), float(stiffness_scale))


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
        self.set_config(config or JointImpedanceConfig())
        self._tau_active_previous_nm = np.zeros(ARM_DOF)
        self._stiffness = self._config_stiffness.copy()
        self._target_q_rad = np.zeros(ARM_DOF)
        self._target_set = False
        self._no_extra_nm = np.zeros(ARM_DOF)
        _warm_up()

    def set_config(self, config: JointImpedanceConfig) -> None:
        """Take new gains/limits; stiffnesses glide there through the gain filter."""
        self.config = config
        self._config_stiffness = np.array(config.stiffness_nm_per_rad)
        self._error_limit = np.array(config.max_joint_error_rad)

    def reset(self, tau_active_nm: np.ndarray | None = None) -> None:
        """Restart filters; rate limiting starts from `tau_active_nm` (7,) [Nm] (last command minus gravity, or 0)."""
        self._tau_active_previous_nm = (np.zeros(ARM_DOF) if tau_active_nm is None
                                        else np.array(tau_active_nm, dtype=float))
        self._stiffness = self._config_stiffness.copy()
        self._target_set = False

    def compute(self, q_rad, dq_rad_s, target_q_rad, model: RobotModel, dt_s: float,
                stiffness_scale: float = 1.0, tau_extra_nm: np.ndarray | None = None) -> np.ndarray:
        """Joint torque (7,) [Nm] towards `target_q_rad` (7,); `stiffness_scale` 0..1 from the safety layer;
        `tau_extra_nm` as in CartesianImpedance.compute."""
        c = self.config
        q_rad, dq_rad_s = np.asarray(q_rad, dtype=float), np.asarray(dq_rad_s, dtype=float)
        target_q_rad = np.asarray(target_q_rad, dtype=float)
        if not self._target_set:
            self._target_q_rad[:] = target_q_rad
            self._target_set = True
        d: Dynamics = model.dynamics(q_rad, dq_rad_s)
        return _joint_torque(
            q_rad, dq_rad_s, target_q_rad, d.mass_matrix, d.gravity_nm, d.coriolis_nm,
            self._no_extra_nm if tau_extra_nm is None else tau_extra_nm, model.torque_limits_nm,
            self._config_stiffness, self._error_limit, c.damping_ratio, c.target_filter_per_tick,
            c.gain_filter_per_tick, c.max_torque_rate_nm_per_tick, c.add_gravity, self._target_q_rad,
            self._stiffness, self._tau_active_previous_nm, float(dt_s), float(stiffness_scale))


def _warm_up() -> None:
    """Compile (or load from numba's on-disk cache) both laws now, at construction, on arguments of the tick's
    types, so no JIT compilation lands in the first 1 kHz ticks. A no-op once done in this process."""
    if _warm_up.done:
        return
    n, eye = ARM_DOF, np.eye(ARM_DOF)
    jacobian, zeros, quat = np.ones((6, n)), np.zeros(n), np.array([0.0, 0.0, 0.0, 1.0])
    params, state = np.ones(PARAMS_SIZE), np.zeros(STATE_SIZE)
    state[_FILTERED_QUAT] = quat
    cartesian_law(zeros, zeros, np.zeros(3), quat, np.zeros(3), quat, jacobian, eye, zeros, zeros, zeros, np.ones(n),
                  params, state, 0.001, 1.0)
    _joint_torque(zeros, zeros, zeros, eye, zeros, zeros, zeros, np.ones(n), np.ones(n), np.ones(n), 1.0, 0.1,
                  0.005, 1.0, False, np.zeros(n), np.ones(n), np.zeros(n), 0.001, 1.0)
    _warm_up.done = True


_warm_up.done = False
