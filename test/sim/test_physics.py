"""Sim physics sanity on the real MuJoCo Panda scene (no ROS)."""
import numpy as np
import pytest

from deploy.robots.mujoco_model import MujocoRobotModel
from deploy.sim import scene
from deploy.sim.physics import PandaSim
from deploy.sim.render import SceneRenderer


@pytest.fixture(scope="module")
def model():
    return MujocoRobotModel()


def test_gravity_compensated_arm_holds_its_pose(model):
    sim = PandaSim()
    q0, _, _ = sim.joint_state()
    tcp0 = sim.tcp_position_m()
    for _ in range(2000):  # 2 s
        q, dq, _ = sim.joint_state()
        sim.step(model.bias_torque(q, dq), gripper_width_m=0.085)
    assert np.linalg.norm(sim.tcp_position_m() - tcp0) < 1e-3
    assert np.abs(sim.joint_state()[0] - q0).max() < 1e-3


def test_torque_on_joint_one_turns_joint_one_positively(model):
    sim = PandaSim()
    q0, _, _ = sim.joint_state()
    push = np.zeros(7)
    push[0] = 5.0
    for _ in range(300):
        q, dq, _ = sim.joint_state()
        sim.step(model.bias_torque(q, dq) + push, gripper_width_m=0.085)
    dq_total = sim.joint_state()[0] - q0
    assert dq_total[0] > 0.05
    assert np.abs(dq_total[1:]).max() < 0.5 * dq_total[0]


def test_brakes_hold_when_commands_stop():
    sim = PandaSim()
    q0, _, _ = sim.joint_state()
    for _ in range(2000):
        sim.step(None, None)
    assert sim.braking
    assert np.abs(sim.joint_state()[0] - q0).max() < 2e-3


def test_success_flips_when_the_cube_is_placed_on_the_goal():
    sim = PandaSim()
    assert not sim.success()
    sim.set_cube_pose(np.array([*scene.GOAL_CENTER_M, scene.CUBE_HALF_SIZE_M]), np.array([0, 0, 0, 1.0]))
    for _ in range(200):
        sim.step(None, None)
    assert sim.success()


def test_cube_start_is_seeded_and_away_from_the_goal():
    starts = []
    for seed in (1, 2, 1):
        sim = PandaSim()
        sim.reset(seed)
        starts.append(sim.cube_pose()[0])
    np.testing.assert_array_equal(starts[0], starts[2])
    assert not np.array_equal(starts[0], starts[1])
    for start in starts:
        assert np.linalg.norm(start[:2] - scene.GOAL_CENTER_M) >= 0.08


def test_frames_change_when_the_arm_moves_and_only_then(model):
    sim = PandaSim()
    renderer = SceneRenderer(sim.model, 96, 96)
    try:
        before = renderer.render(sim.data.qpos.copy())
        again = renderer.render(sim.data.qpos.copy())
        push = np.zeros(7)
        push[0] = 8.0
        for _ in range(400):
            q, dq, _ = sim.joint_state()
            sim.step(model.bias_torque(q, dq) + push, gripper_width_m=0.085)
        after = renderer.render(sim.data.qpos.copy())
    finally:
        renderer.close()
    for camera in scene.CAMERAS:
        assert before[camera].shape == (96, 96, 3) and before[camera].dtype == np.uint8
        np.testing.assert_array_equal(before[camera], again[camera])
        assert np.abs(after[camera].astype(int) - before[camera].astype(int)).mean() > 1.0, camera
