"""Impedance laws on the real MuJoCo Panda model: analytic torques, finite differences, closed loop."""
import mujoco
import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from deploy.control.impedance import (
    PANDA_HOME_Q_RAD, CartesianImpedance, CartesianImpedanceConfig, JointImpedance, JointImpedanceConfig,
    task_space_damping, task_space_inertia)
from deploy.errors import ConfigError
from deploy.robots.mujoco_model import MujocoRobotModel
from deploy.sim.scene import ARM_JOINTS, TCP_SITE, build_robot_model

HOME_Q_RAD = np.array(PANDA_HOME_Q_RAD)
DT_S = 0.001


@pytest.fixture(scope="module")
def model():
    return MujocoRobotModel()


def _controller(**overrides) -> CartesianImpedance:
    """No filters, no rate limit: the bare law, so one call shows the analytic torque."""
    settings = dict(target_filter_per_tick=1.0, gain_filter_per_tick=1.0, max_torque_rate_nm_per_tick=10.0)
    settings.update(overrides)
    return CartesianImpedance(CartesianImpedanceConfig(**settings))


def test_translational_error_gives_jacobian_transpose_force(model):
    stiffness = np.array([800.0, 1000.0, 1200.0])
    controller = _controller(translational_stiffness_n_per_m=tuple(stiffness))
    position_m, quat_xyzw = model.ee_pose(HOME_Q_RAD)
    offset_m = np.array([0.004, -0.003, 0.002])
    tau_nm = controller.compute(HOME_Q_RAD, np.zeros(7), position_m + offset_m, quat_xyzw, model, DT_S)
    force_n = stiffness * offset_m  # error = current - target = -offset
    expected_nm = model.jacobian(HOME_Q_RAD)[:3].T @ force_n
    np.testing.assert_allclose(tau_nm, expected_nm, atol=1e-6)


def test_rotational_error_sign_turns_towards_target(model):
    controller = _controller(rotational_stiffness_nm_per_rad=(100.0, 100.0, 100.0))
    position_m, quat_xyzw = model.ee_pose(HOME_Q_RAD)
    rotvec = np.array([0.0, 0.0, 0.05])
    target = (Rotation.from_rotvec(rotvec) * Rotation.from_quat(quat_xyzw)).as_quat()
    tau_nm = controller.compute(HOME_Q_RAD, np.zeros(7), position_m, target, model, DT_S)
    np.testing.assert_allclose(tau_nm, model.jacobian(HOME_Q_RAD)[3:].T @ (100.0 * rotvec), atol=1e-4)


def test_damping_term_against_finite_difference_velocity(model):
    rng = np.random.default_rng(0)
    controller = _controller(nullspace_stiffness_nm_per_rad=0.0)
    position_m, quat_xyzw = model.ee_pose(HOME_Q_RAD)
    dq_rad_s = 1e-3 * rng.standard_normal(7)
    tau_nm = controller.compute(HOME_Q_RAD, dq_rad_s, position_m, quat_xyzw, model, DT_S)
    step_s = 1e-6
    position_next_m, quat_next = model.ee_pose(HOME_Q_RAD + step_s * dq_rad_s)
    velocity = np.concatenate([(position_next_m - position_m) / step_s,
                               (Rotation.from_quat(quat_next) * Rotation.from_quat(quat_xyzw).inv()).as_rotvec()
                               / step_s])
    inertia = task_space_inertia(model.jacobian(HOME_Q_RAD), model.mass_matrix(HOME_Q_RAD))
    stiffness = np.array([1000.0] * 3 + [50.0] * 3)
    expected_nm = model.jacobian(HOME_Q_RAD).T @ (-task_space_damping(inertia, stiffness, 1.0) @ velocity)
    np.testing.assert_allclose(tau_nm, expected_nm, rtol=1e-3, atol=1e-6)


def test_reference_limiting_bounds_force_at_high_stiffness(model):
    controller = _controller(translational_stiffness_n_per_m=(3000.0,) * 3,
                             max_translational_error_m=(0.01, 0.01, 0.01), max_torque_rate_nm_per_tick=10.0)
    position_m, quat_xyzw = model.ee_pose(HOME_Q_RAD)
    controller.reset(np.zeros(7))
    for _ in range(20):  # let the rate limiter settle
        tau_nm = controller.compute(HOME_Q_RAD, np.zeros(7), position_m + [0.2, 0.0, 0.0], quat_xyzw, model, DT_S)
    force_n = np.linalg.pinv(model.jacobian(HOME_Q_RAD).T) @ tau_nm
    np.testing.assert_allclose(force_n[:3], [30.0, 0.0, 0.0], atol=1e-6)  # K * clip = 3000 * 0.01


def test_torque_rate_limit_caps_change_per_tick(model):
    controller = CartesianImpedance(CartesianImpedanceConfig(max_torque_rate_nm_per_tick=0.5))
    position_m, quat_xyzw = model.ee_pose(HOME_Q_RAD)
    controller.reset(np.zeros(7))
    previous_nm = np.zeros(7)
    for _ in range(10):
        tau_nm = controller.compute(HOME_Q_RAD, np.zeros(7), position_m + [0.05, 0.05, 0.0], quat_xyzw, model, DT_S)
        assert np.max(np.abs(tau_nm - previous_nm)) <= 0.5 + 1e-12
        previous_nm = tau_nm
    assert np.max(np.abs(previous_nm)) == pytest.approx(5.0)  # still limited after 10 ticks


def test_nullspace_torque_produces_no_tcp_acceleration(model):
    rng = np.random.default_rng(1)
    q_rad = HOME_Q_RAD + 0.1 * rng.standard_normal(7)
    posture = tuple(HOME_Q_RAD + 0.3 * rng.standard_normal(7))
    controller = _controller(translational_stiffness_n_per_m=(0.0,) * 3, rotational_stiffness_nm_per_rad=(0.0,) * 3,
                             nullspace_stiffness_nm_per_rad=20.0, posture_q_rad=posture)
    position_m, quat_xyzw = model.ee_pose(q_rad)
    tau_null_nm = controller.compute(q_rad, np.zeros(7), position_m, quat_xyzw, model, DT_S)
    mobility = model.jacobian(q_rad) @ np.linalg.inv(model.mass_matrix(q_rad))  # (6, 7) TCP accel per torque
    unprojected_nm = 20.0 * (np.array(posture) - q_rad)
    assert np.linalg.norm(tau_null_nm) > 0.1
    # Zero up to the task-inertia regularisation (1e-4 relative).
    assert np.linalg.norm(mobility @ tau_null_nm) < 1e-2 * np.linalg.norm(mobility @ unprojected_nm)


def test_stiffness_scale_and_gain_filter(model):
    position_m, quat_xyzw = model.ee_pose(HOME_Q_RAD)
    target_m = position_m + [0.01, 0.0, 0.0]
    full = _controller().compute(HOME_Q_RAD, np.zeros(7), target_m, quat_xyzw, model, DT_S)
    half = _controller().compute(HOME_Q_RAD, np.zeros(7), target_m, quat_xyzw, model, DT_S, stiffness_scale=0.5)
    np.testing.assert_allclose(half, 0.5 * full, atol=1e-9)
    gliding = CartesianImpedance(CartesianImpedanceConfig(max_torque_rate_nm_per_tick=10.0))
    gliding.compute(HOME_Q_RAD, np.zeros(7), target_m, quat_xyzw, model, DT_S)
    gliding.set_config(gliding.config.with_updates(translational_stiffness_n_per_m=(2000.0,) * 3))
    after_one_tick = gliding.compute(HOME_Q_RAD, np.zeros(7), target_m, quat_xyzw, model, DT_S)
    assert np.linalg.norm(after_one_tick) < 1.01 * np.linalg.norm(full)  # 0.5 % of the way per tick


def test_config_bounds_and_with_updates():
    config = CartesianImpedanceConfig()
    assert config.BOUNDS["translational_stiffness_n_per_m"] == (0.0, 3000.0)
    with pytest.raises(ConfigError, match="translational_stiffness_n_per_m.*3000"):
        config.with_updates(translational_stiffness_n_per_m=(3500.0, 0.0, 0.0))
    with pytest.raises(ConfigError, match="shape"):
        config.with_updates(posture_q_rad=(0.0,) * 6)
    with pytest.raises(ConfigError, match="no field"):
        config.with_updates(stiffness=1.0)
    with pytest.raises(ConfigError, match="add_gravity"):
        config.with_updates(add_gravity="yes")
    assert config.with_updates(damping_ratio=0.7).damping_ratio == 0.7
    with pytest.raises(ConfigError, match="max_joint_error_rad"):
        JointImpedanceConfig(max_joint_error_rad=(0.0,) * 7)


def test_joint_impedance_torque_and_limits(model):
    controller = JointImpedance(JointImpedanceConfig(target_filter_per_tick=1.0, max_torque_rate_nm_per_tick=10.0,
                                                     max_joint_error_rad=(0.015,) * 7))
    target = HOME_Q_RAD + np.array([0.01, -0.02, 0.2, 0.0, 0.0, 0.0, -0.01])
    tau_nm = controller.compute(HOME_Q_RAD, np.zeros(7), target, model, DT_S)
    expected_nm = np.array(JointImpedanceConfig().stiffness_nm_per_rad) * np.clip(target - HOME_Q_RAD, -0.015, 0.015)
    np.testing.assert_allclose(tau_nm, expected_nm, atol=1e-9)
    damped = JointImpedance().compute(HOME_Q_RAD, np.full(7, 0.1), HOME_Q_RAD, model, DT_S)
    assert np.all(damped < 0.0)


def _tcp_wrench_on_body(data, model, force_n):
    """xfrc_applied acts at the body's centre of mass: add the moment so the pure force acts at the TCP."""
    site_id = model.site(TCP_SITE).id
    body_id = model.site_bodyid[site_id]
    data.xfrc_applied[body_id, :3] = force_n
    data.xfrc_applied[body_id, 3:] = np.cross(data.site_xpos[site_id] - data.xipos[body_id], force_n)


def test_closed_loop_mujoco_reaches_target_and_complies(model):
    sim = build_robot_model()
    data = mujoco.MjData(sim)
    qpos_idx = np.array([sim.jnt_qposadr[sim.joint(name).id] for name in ARM_JOINTS])
    data.qpos[qpos_idx] = HOME_Q_RAD
    mujoco.mj_forward(sim, data)
    stiffness_n_per_m = 1000.0
    controller = CartesianImpedance(CartesianImpedanceConfig(add_gravity=True))
    start_m, start_quat = model.ee_pose(HOME_Q_RAD)
    target_m = start_m + np.array([0.06, 0.05, -0.06])  # ~10 cm away
    target_quat = (Rotation.from_euler("z", 0.3) * Rotation.from_quat(start_quat)).as_quat()

    def run(steps, force_n=np.zeros(3)):
        errors = []
        for _ in range(steps):
            q_rad = data.qpos[qpos_idx].copy()
            data.ctrl[:7] = controller.compute(q_rad, data.qvel[qpos_idx], target_m, target_quat, model, DT_S)
            _tcp_wrench_on_body(data, sim, force_n)
            mujoco.mj_step(sim, data)
            position_m, quat_xyzw = model.ee_pose(data.qpos[qpos_idx])
            angle_rad = (Rotation.from_quat(quat_xyzw) * Rotation.from_quat(target_quat).inv()).magnitude()
            errors.append((position_m - target_m, angle_rad))
        return errors

    errors = run(3000)
    reached = [np.linalg.norm(e) < 0.002 and a < np.radians(1.0) for e, a in errors]
    assert reached[-1] and all(reached[reached.index(True):])  # reached within 3 s and held
    displaced = run(1500, force_n=np.array([10.0, 0.0, 0.0]))
    assert displaced[-1][0][0] == pytest.approx(10.0 / stiffness_n_per_m, rel=0.2)
    released = run(1500)
    assert np.linalg.norm(released[-1][0]) < 0.002 and released[-1][1] < np.radians(1.0)


def _cartesian_law_oracle(q, dq, target_m, target_xyzw, model, config, scale, tau_extra_nm):
    """The law written in plain numpy/scipy from its definition (test oracle only): one unfiltered tick."""
    position_m, quat_xyzw = model.ee_pose(q)
    jacobian, mass = model.jacobian(q), model.mass_matrix(q)
    gravity = model.bias_torque(q, np.zeros(7))
    coriolis = model.bias_torque(q, dq) - gravity
    rotation_error = (Rotation.from_quat(quat_xyzw) * Rotation.from_quat(target_xyzw).inv()).as_rotvec()
    error = np.concatenate([position_m - target_m, rotation_error])
    limit = np.array([*config.max_translational_error_m, *config.max_rotational_error_rad])
    stiffness = np.array([*config.translational_stiffness_n_per_m, *config.rotational_stiffness_nm_per_rad])
    inertia = np.linalg.inv(jacobian @ np.linalg.inv(mass) @ jacobian.T + 1e-4 * np.eye(6))
    w, v = np.linalg.eigh(inertia)
    inertia_sqrt = (v * np.sqrt(w)) @ v.T
    k_sqrt = np.diag(np.sqrt(stiffness))
    damping = config.damping_ratio * (inertia_sqrt @ k_sqrt + k_sqrt @ inertia_sqrt)
    wrench = -scale * stiffness * np.clip(error, -limit, limit) - damping @ jacobian @ dq
    k_null = config.nullspace_stiffness_nm_per_rad
    posture = (scale * k_null * (np.array(config.posture_q_rad) - q)
               - 2 * config.damping_ratio * np.sqrt(k_null * np.diag(mass)) * dq)
    projector = np.eye(7) - jacobian.T @ inertia @ jacobian @ np.linalg.inv(mass)
    tau = jacobian.T @ wrench + projector @ posture + coriolis + tau_extra_nm
    return np.clip(tau + gravity, -model.torque_limits_nm, model.torque_limits_nm)


@pytest.mark.parametrize("seed", range(4))
def test_compiled_cartesian_law_matches_a_numpy_oracle_with_every_term_active(model, seed):
    rng = np.random.default_rng(seed)
    q_rad = HOME_Q_RAD + 0.2 * rng.standard_normal(7)
    dq_rad_s = 0.3 * rng.standard_normal(7)
    position_m, quat_xyzw = model.ee_pose(q_rad)
    target_m = position_m + rng.uniform(-0.08, 0.08, 3)  # beyond the 5 cm clip on some axes
    target_xyzw = (Rotation.from_rotvec(rng.uniform(-0.4, 0.4, 3)) * Rotation.from_quat(quat_xyzw)).as_quat()
    config = CartesianImpedanceConfig(
        translational_stiffness_n_per_m=tuple(rng.uniform(200, 2000, 3)),
        rotational_stiffness_nm_per_rad=tuple(rng.uniform(10, 100, 3)), damping_ratio=rng.uniform(0.5, 1.5),
        nullspace_stiffness_nm_per_rad=rng.uniform(1, 30), posture_q_rad=tuple(HOME_Q_RAD + 0.3 * rng.standard_normal(7)),
        target_filter_per_tick=1.0, gain_filter_per_tick=1.0, max_torque_rate_nm_per_tick=10.0, add_gravity=True)
    scale, tau_extra_nm = rng.uniform(0.2, 1.0), rng.uniform(-1.0, 1.0, 7)
    controller = CartesianImpedance(config)
    controller.reset(_cartesian_law_oracle(q_rad, dq_rad_s, target_m, target_xyzw, model, config, scale, tau_extra_nm)
                     - model.bias_torque(q_rad, np.zeros(7)))  # rate limiter already there: no step to limit
    tau_nm = controller.compute(q_rad, dq_rad_s, target_m, target_xyzw, model, DT_S, stiffness_scale=scale,
                                tau_extra_nm=tau_extra_nm)
    expected_nm = _cartesian_law_oracle(q_rad, dq_rad_s, target_m, target_xyzw, model, config, scale, tau_extra_nm)
    np.testing.assert_allclose(tau_nm, expected_nm, rtol=1e-9, atol=1e-9)


def test_model_jacobian_matches_finite_differences_of_the_pose(model):
    rng = np.random.default_rng(5)
    q_rad = HOME_Q_RAD + 0.2 * rng.standard_normal(7)
    jacobian = model.jacobian(q_rad)
    position_m, quat_xyzw = model.ee_pose(q_rad)
    step = 1e-7
    for j in range(7):
        q_next = q_rad.copy()
        q_next[j] += step
        position_next_m, quat_next = model.ee_pose(q_next)
        np.testing.assert_allclose((position_next_m - position_m) / step, jacobian[:3, j], atol=1e-5)
        angular = (Rotation.from_quat(quat_next) * Rotation.from_quat(quat_xyzw).inv()).as_rotvec() / step
        np.testing.assert_allclose(angular, jacobian[3:, j], atol=1e-5)
