"""Safety layer with a fake clock: reference filtering, watchdog timeline, e-stop, torques, robustness."""
import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from deploy.control.impedance import PANDA_HOME_Q_RAD
from deploy.control.safety import SafetyConfig, SafetyLayer
from deploy.errors import ConfigError
from deploy.robots.mujoco_model import MujocoRobotModel

HOME_Q_RAD = np.array(PANDA_HOME_Q_RAD)
DT_S = 0.001
START_S = 1.1  # first tick after `_started`


@pytest.fixture(scope="module")
def model():
    return MujocoRobotModel()


@pytest.fixture
def home_pose(model):
    return model.ee_pose(HOME_Q_RAD)


def _started(model, home_pose, **overrides) -> SafetyLayer:
    """A layer past its startup ramp, reference at home."""
    layer = SafetyLayer(SafetyConfig(**overrides), model)
    for tick in range(round(START_S / DT_S)):
        layer.filter_reference(None, tick * DT_S, home_pose)
    return layer


def test_startup_starts_at_measured_pose_and_ramps_stiffness(model, home_pose):
    layer = SafetyLayer(SafetyConfig(startup_ramp_s=1.0), model)
    far_away = (home_pose[0] + [0.1, 0.0, 0.0], home_pose[1])
    first = layer.filter_reference(far_away, 0.0, home_pose)
    np.testing.assert_allclose(first.position_m, home_pose[0])  # no jump: dt = 0 on the first tick
    assert first.stiffness_scale == 0.0
    scales = [layer.filter_reference(None, tick * DT_S, home_pose).stiffness_scale for tick in range(1, 1200)]
    assert np.all(np.diff(scales) >= 0.0) and np.max(np.diff(scales)) <= DT_S + 1e-12
    assert scales[499] == pytest.approx(0.5) and scales[-1] == 1.0


def test_nan_candidate_keeps_previous_reference(model, home_pose):
    layer = _started(model, home_pose)
    now_s = 1.2
    for bad in [(np.array([np.nan, 0.0, 0.3]), home_pose[1]), (home_pose[0], np.array([0.0, np.inf, 0.0, 1.0]))]:
        now_s += DT_S
        safe = layer.filter_reference(bad, now_s, home_pose)
        np.testing.assert_allclose(safe.position_m, home_pose[0])
        layer.filter_reference(None, now_s, home_pose)  # clears the episode
    assert layer.trips["nan_reference"] == 2 and layer.last_trip_reason == "nan_reference"


def test_far_outside_box_is_clamped_onto_the_box(model, home_pose):
    layer = _started(model, home_pose, max_tcp_speed_m_per_s=2.0)
    candidate = (np.array([5.0, -3.0, -1.0]), home_pose[1])
    for tick in range(2000):
        safe = layer.filter_reference(candidate, START_S + tick * DT_S, home_pose)
    np.testing.assert_allclose(safe.position_m, [0.75, -0.4, 0.005])
    assert layer.trips["workspace"] == 1


def test_speed_limit_caps_reference_motion(model, home_pose):
    layer = _started(model, home_pose, max_tcp_speed_m_per_s=0.25, max_angular_speed_rad_per_s=1.0)
    turned = (Rotation.from_euler("z", 0.5) * Rotation.from_quat(home_pose[1])).as_quat()
    candidate = (home_pose[0] + [0.0, 0.2, 0.0], turned)
    positions = [layer.filter_reference(candidate, START_S + tick * DT_S, home_pose).position_m for tick in range(100)]
    steps_m = np.linalg.norm(np.diff(positions, axis=0), axis=1)
    assert np.max(steps_m) <= 0.25 * DT_S + 1e-12
    np.testing.assert_allclose(positions[-1], home_pose[0] + [0.0, 0.025, 0.0], atol=1e-9)
    angle = (Rotation.from_quat(layer.filter_reference(None, 1.3, home_pose).quat_xyzw)
             * Rotation.from_quat(home_pose[1]).inv()).magnitude()
    assert angle == pytest.approx(0.1, abs=1e-6)  # 1 rad/s for 0.1 s
    assert layer.trips["speed"] == 1


def test_orientation_clamped_to_cone_around_nominal(model, home_pose):
    layer = _started(model, home_pose, max_orientation_error_rad=0.5, max_angular_speed_rad_per_s=6.0)
    tilted = (Rotation.from_euler("y", 1.2) * Rotation.from_quat(home_pose[1])).as_quat()
    for tick in range(500):
        safe = layer.filter_reference((home_pose[0], tilted), START_S + tick * DT_S, home_pose)
    nominal = Rotation.from_quat([1.0, 0.0, 0.0, 0.0])
    assert (nominal.inv() * Rotation.from_quat(safe.quat_xyzw)).magnitude() == pytest.approx(0.5, abs=1e-6)
    assert layer.trips["orientation"] == 1


def test_watchdog_holds_then_softens_then_resumes(model, home_pose):
    config = dict(stale_chunk_timeout_s=0.5, soften_ramp_s=2.0, soft_stiffness_scale=0.1, startup_ramp_s=1.0,
                  max_tcp_speed_m_per_s=0.5)
    layer = _started(model, home_pose, **config)
    moving = (home_pose[0] + [0.05, 0.0, 0.0], home_pose[1])
    timeline = {}
    for tick in range(1100, 6000):
        now_s = tick * DT_S
        if tick < 1200 or tick >= 4500:  # chunks flow, stop for 3.3 s, come back
            layer.notify_chunk(now_s)
        timeline[tick] = layer.filter_reference(moving, now_s, home_pose)
    held_m = timeline[1700].position_m
    assert timeline[1650].stiffness_scale == 1.0  # 0.45 s after the last chunk: not yet stale
    np.testing.assert_allclose(timeline[2500].position_m, held_m)  # held, ignores candidates
    assert timeline[2700].stiffness_scale == pytest.approx(1.0 - 0.45 * 1.0, abs=2e-3)  # 1 s into the 2 s ramp
    assert timeline[4400].stiffness_scale == pytest.approx(0.1)  # softened, never zero
    assert layer.trips["stale_chunk"] == 1
    resumed = [timeline[tick] for tick in range(4500, 6000)]
    assert np.max(np.abs(np.diff([r.stiffness_scale for r in resumed]))) <= DT_S + 1e-12
    assert resumed[-1].stiffness_scale == 1.0
    steps_m = np.linalg.norm(np.diff([r.position_m for r in resumed], axis=0), axis=1)
    assert np.max(steps_m) <= 0.5 * DT_S + 1e-12  # slides from the held pose
    np.testing.assert_allclose(resumed[-1].position_m, moving[0])


def test_hold_freezes_until_released(model, home_pose):
    layer = _started(model, home_pose)
    layer.notify_chunk(1.2)
    layer.hold()
    moving = (home_pose[0] + [0.05, 0.0, 0.0], home_pose[1])
    safe = layer.filter_reference(moving, 1.21, home_pose)
    np.testing.assert_allclose(safe.position_m, home_pose[0])
    assert safe.stiffness_scale == 1.0 and layer.trips["hold"] == 1
    layer.release_hold()
    assert layer.filter_reference(moving, 1.22, home_pose).position_m[0] > home_pose[0][0]


def test_estop_snaps_to_measured_pose_softens_and_latches(model, home_pose):
    layer = _started(model, home_pose, estop_ramp_s=0.2, soft_stiffness_scale=0.1)
    pressed_m = home_pose[0] + [0.0, 0.0, -0.02]  # measured pose pushed into contact below the reference
    layer.estop()
    safe = layer.filter_reference((home_pose[0] + [0.1, 0.0, 0.0], home_pose[1]), START_S, (pressed_m, home_pose[1]))
    np.testing.assert_allclose(safe.position_m, pressed_m)
    for tick in range(1, 400):
        layer.notify_chunk(START_S + tick * DT_S)
        safe = layer.filter_reference((home_pose[0], home_pose[1]), START_S + tick * DT_S, home_pose)
    np.testing.assert_allclose(safe.position_m, pressed_m)  # latched
    assert safe.stiffness_scale == pytest.approx(0.1) and layer.trips["estop"] == 1
    layer.reset_estop()
    after = [layer.filter_reference((home_pose[0], home_pose[1]), START_S + 0.4 + tick * DT_S, home_pose) for tick in range(10)]
    assert after[-1].position_m[2] > pressed_m[2] and after[-1].stiffness_scale > 0.1


def test_never_raises_on_garbage(model, home_pose):
    layer = SafetyLayer(SafetyConfig(), model)
    garbage = [None, "pose", 3, object(), (1, 2), ([1, 2], [0, 0, 0, 1]), (np.zeros(3), np.zeros(4)), {"a": 1}]
    assert layer.filter_reference(None, 0.0, "not a pose") is None  # nothing safe ever existed
    assert layer.filter_reference(None, 0.0, home_pose) is not None
    for index, item in enumerate(garbage):
        safe = layer.filter_reference(item, 0.001 * (index + 1), item)
        np.testing.assert_allclose(safe.position_m, home_pose[0])
        assert layer.filter_reference(None, "soon", home_pose) is not None
        assert layer.filter_joint_reference(item, 0.0, item) is None
        np.testing.assert_array_equal(layer.joint_limit_torque(item), np.zeros(7))
        assert layer.limit_torque(item, item, item).shape == (7,)
    assert layer.trips["internal_error"] >= 1 and layer.trips["nan_reference"] >= 1


def test_joint_reference_limits_speed_joints_and_workspace(model):
    layer = SafetyLayer(SafetyConfig(max_joint_speed_rad_per_s=2.5), model)
    layer.filter_joint_reference(None, 0.0, HOME_Q_RAD)
    nan_q = HOME_Q_RAD.copy()
    nan_q[3] = np.nan
    np.testing.assert_allclose(layer.filter_joint_reference(nan_q, DT_S, HOME_Q_RAD).q_rad, HOME_Q_RAD)
    step = layer.filter_joint_reference(HOME_Q_RAD + 0.5, 2 * DT_S, HOME_Q_RAD).q_rad
    np.testing.assert_allclose(np.abs(step - HOME_Q_RAD), 2.5 * DT_S)  # 2.5 rad/s for 1 ms
    beyond = HOME_Q_RAD.copy()
    beyond[3] = 0.5  # above joint 4's upper limit (-0.07)
    for tick in range(3, 1000):
        safe_q = layer.filter_joint_reference(beyond, tick * DT_S, HOME_Q_RAD).q_rad
    assert safe_q[3] <= model.joint_limits_rad[3, 1] - 0.1 + 1e-9
    position_m, _ = model.ee_pose(safe_q)
    config = layer.config
    assert np.all(position_m >= np.array(config.workspace_min_m) - 1e-3)
    assert np.all(position_m <= np.array(config.workspace_max_m) + 1e-3)
    assert layer.trips["joint_limit"] == 1 and layer.trips["workspace"] >= 1 and layer.trips["nan_reference"] == 1


def test_joint_limit_repulsion_and_force_cap(model):
    layer = SafetyLayer(SafetyConfig(joint_limit_margin_rad=0.1, joint_limit_gain_nm_per_rad=50.0,
                                     max_force_n=20.0), model)
    near = HOME_Q_RAD.copy()
    near[3] = model.joint_limits_rad[3, 1] - 0.04  # 0.06 rad inside the margin
    np.testing.assert_allclose(layer.joint_limit_torque(near), [0, 0, 0, -3.0, 0, 0, 0], atol=1e-9)
    np.testing.assert_array_equal(layer.joint_limit_torque(HOME_Q_RAD), np.zeros(7))
    jacobian = model.jacobian(HOME_Q_RAD)
    compensation = np.arange(7.0)
    tau = jacobian[:3].T @ np.array([40.0, 0.0, 0.0]) + compensation
    limited = layer.limit_torque(tau, HOME_Q_RAD, compensation)
    force = np.linalg.pinv(jacobian.T) @ (limited - compensation)
    np.testing.assert_allclose(force, [20.0, 0, 0, 0, 0, 0], atol=1e-6)
    assert layer.trips["force"] == 1


def test_config_validation():
    with pytest.raises(ConfigError, match="workspace_min_m"):
        SafetyConfig(workspace_min_m=(0.8, -0.4, 0.0))
    with pytest.raises(ConfigError, match="soft_stiffness_scale"):
        SafetyConfig().with_updates(soft_stiffness_scale=0.0)
