"""External-controller backend: states fed from another thread pace the loop; targets reach the injected
publishers clipped, normalised and stamped; stop holds at the measured pose; the topic bridge names what the
node must create."""
import threading
import time

import numpy as np
import pytest

from deploy.errors import ConfigError, DeployError, RobotConnectionError
from deploy.robots.base import Capability, RobotState, TopicBridge
from deploy.robots.external import ExternalControllerRobot
from deploy.robots.registry import make_robot
from deploy.robots.ur_model import UR5eModel

Q_RAD = np.array([0.0, -1.57, 1.57, -1.57, -1.57, 0.0])


def _state(stamp_s: float, q_rad=Q_RAD) -> RobotState:
    return RobotState(stamp_s=stamp_s, q_rad=np.array(q_rad), dq_rad_s=np.zeros(6), tau_measured_nm=np.zeros(6),
                      gripper_width_m=0.05, seq=-7)  # the backend assigns its own seq


class Recorder:
    def __init__(self):
        self.poses = []
        self.widths = []

    def pose(self, position_m, quat_xyzw, stamp_s):
        self.poses.append((np.array(position_m), np.array(quat_xyzw), stamp_s))

    def gripper(self, width_m):
        self.widths.append(width_m)


@pytest.fixture
def published():
    return Recorder()


@pytest.fixture
def robot(published):
    robot = ExternalControllerRobot(model=UR5eModel(), connect_timeout_s=0.05, state_topic="/ur/joint_states")
    robot.attach_publishers(published.pose, published.gripper)
    return robot


def test_connect_waits_for_the_first_state_and_names_the_silent_topic(robot):
    with pytest.raises(RobotConnectionError, match=r"no joint state on /ur/joint_states within 0\.05 s"):
        robot.connect()
    robot.feed_state(_state(1.0))
    robot.connect()
    assert robot.read_state().seq == 1 and robot.capabilities == Capability.POSE_TARGET


def test_states_fed_from_another_thread_pace_wait_for_state(robot):
    count, period_s = 30, 0.002

    def feed():
        for i in range(count):
            time.sleep(period_s)
            robot.feed_state(_state(10.0 + i * period_s))

    feeder = threading.Thread(target=feed)
    start_s = time.monotonic()
    feeder.start()
    seen, seq = [], 0
    while len(seen) < count:
        state = robot.wait_for_state(seq, 1.0)
        assert state is not None and state.seq > seq
        seen.extend(range(seq + 1, state.seq + 1))  # a slow consumer skips to the newest sample
        seq = state.seq
    feeder.join()
    assert time.monotonic() - start_s >= count * period_s * 0.9
    assert robot.read_state().stamp_s == pytest.approx(10.0 + (count - 1) * period_s)
    start_s = time.monotonic()
    assert robot.wait_for_state(seq, 0.03) is None
    assert time.monotonic() - start_s >= 0.03


def test_pose_targets_are_clipped_normalised_and_stamped(robot, published):
    robot.feed_state(_state(5.25))
    sent = robot.command_pose_target(np.array([0.3, -2.0, 1.5]), np.array([0.0, 0.0, 0.0, 2.0]))
    position_m, quat_xyzw, stamp_s = published.poses[-1]
    np.testing.assert_allclose(position_m, [0.3, -1.0, 1.2])
    np.testing.assert_allclose(quat_xyzw, [0.0, 0.0, 0.0, 1.0])
    assert stamp_s == 5.25
    np.testing.assert_allclose(sent[0], position_m)
    np.testing.assert_allclose(sent[1], quat_xyzw)
    assert robot.command_pose_target(np.array([np.nan, 0.0, 0.5]), np.array([0, 0, 0, 1.0])) is None
    assert robot.command_pose_target(np.array([0.3, 0.0, 0.5]), np.zeros(4)) is None
    assert len(published.poses) == 1


def test_targets_are_stamped_with_the_state_the_tick_answers(robot, published):
    robot.feed_state(_state(1.0))
    assert robot.wait_for_state(0, 0.1).stamp_s == 1.0
    robot.feed_state(_state(1.004))  # arrives while the tick computes its answer to the first
    robot.command_pose_target(np.array([0.3, 0.0, 0.5]), np.array([0, 0, 0, 1.0]))
    assert published.poses[-1][2] == 1.0


def test_gripper_is_clipped_and_published_only_on_changes(robot, published):
    assert robot.command_gripper(0.2) == pytest.approx(0.08)
    assert robot.command_gripper(0.0795) == pytest.approx(0.0795)  # within the 1 mm deadband
    assert robot.command_gripper(-0.01) == 0.0
    assert np.isnan(robot.command_gripper(np.nan))
    assert published.widths == [0.08, 0.0]


def test_stop_holds_at_the_measured_pose_then_publishes_nothing(robot, published):
    robot.feed_state(_state(2.0))
    robot.stop()
    position_m, quat_xyzw, stamp_s = published.poses[-1]
    expected_m, expected_xyzw = UR5eModel().ee_pose(Q_RAD)
    np.testing.assert_allclose(position_m, expected_m)
    np.testing.assert_allclose(quat_xyzw, expected_xyzw)
    assert stamp_s == 2.0
    assert robot.command_pose_target(np.array([0.3, 0.0, 0.5]), np.array([0, 0, 0, 1.0])) is None
    robot.command_gripper(0.01)
    robot.stop()
    assert len(published.poses) == 1 and published.widths == []


def test_registry_builds_the_external_backend_with_a_named_model():
    robot = make_robot("external", model_name="ur5e", state_rate_hz=125.0)
    assert isinstance(robot, ExternalControllerRobot) and isinstance(robot.model, UR5eModel)
    assert robot.period_s == pytest.approx(0.008)
    with pytest.raises(ConfigError, match="workspace_min_m"):
        ExternalControllerRobot(model_name="ur5e", workspace_min_m=(0, 0, 2.0))
    with pytest.raises(ConfigError, match="no kinematic model for robot 'kuka'"):
        ExternalControllerRobot(model_name="kuka")
    with pytest.raises(ConfigError, match="state_rate_hz=0.0"):
        ExternalControllerRobot(state_rate_hz=0.0)


def test_topic_bridge_names_the_topics_and_joints_in_model_order():
    robot = ExternalControllerRobot(model_name="ur5e", state_topic="/js", target_topic="/ctrl/target",
                                    gripper_topic="", joint_names=[f"ur_{i}" for i in range(6)], gripper_joint="")
    assert robot.topic_bridge == TopicBridge("/ctrl/target", "", "/js", tuple(f"ur_{i}" for i in range(6)), "")
    assert ExternalControllerRobot(model_name="ur5e").topic_bridge.joint_names == tuple(f"joint{i}" for i in range(1, 7))
    with pytest.raises(ConfigError, match=r"must name the 6 joints of the 'ur5e' model"):
        ExternalControllerRobot(model_name="ur5e", joint_names=["a", "b"])
    with pytest.raises(ConfigError, match="once each"):
        ExternalControllerRobot(model_name="ur5e", joint_names=["a"] * 6)


def test_connect_before_attaching_publishers_is_refused():
    robot = ExternalControllerRobot(model_name="ur5e")
    with pytest.raises(DeployError, match=r"attach_publishers\(\) must come before connect\(\)"):
        robot.connect()
    robot.stop()  # never connected: nothing to publish, no error
