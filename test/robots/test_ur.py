"""UR backend without hardware: UR5e kinematics (known poses, Jacobian vs finite differences), loopback connect
errors, and the streaming logic against fake rtde_control / rtde_receive modules shaped like ur_rtde 1.6."""
import importlib.util
import sys
import time
import types

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from deploy.errors import ConfigError, DeployError, RobotConnectionError
from deploy.robots.base import Capability
from deploy.robots.registry import make_model, make_robot
from deploy.robots.ur import URRobot
from deploy.robots.ur_model import UR5eModel

# --- kinematics ----------------------------------------------------------------------------------------------


def test_zero_configuration_tcp_matches_the_dh_parameters():
    position_m, quat_xyzw = UR5eModel().ee_pose(np.zeros(6))
    # x = a2 + a3, y = -(d4 + d6), z = d1 - d5: the arm stretched along -x of UR's base frame.
    np.testing.assert_allclose(position_m, [-0.425 - 0.3922, -(0.1333 + 0.0996), 0.1625 - 0.0997], atol=1e-12)
    np.testing.assert_allclose(Rotation.from_quat(quat_xyzw).apply([0, 0, 1]), [0, -1, 0], atol=1e-12)


def test_upright_configuration_and_tcp_offset():
    model = UR5eModel(tcp_offset_m=0.15)
    upright_q_rad = np.array([0.0, -np.pi / 2, 0.0, -np.pi / 2, 0.0, 0.0])
    position_m, _ = model.ee_pose(upright_q_rad)
    # upper arm, forearm and wrist 2 stacked vertically; flange facing -y, the tool 0.15 m further along -y.
    np.testing.assert_allclose(position_m, [0.0, -(0.1333 + 0.0996 + 0.15), 0.1625 + 0.425 + 0.3922 + 0.0997],
                               atol=1e-12)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_jacobian_matches_finite_differences(seed):
    model = UR5eModel(tcp_offset_m=0.1)
    q_rad = np.random.default_rng(seed).uniform(-np.pi, np.pi, 6)
    step_rad = 1e-6
    numeric = np.empty((6, 6))
    T_base_tcp = model.tcp_transform(q_rad)
    for i in range(6):
        dq_rad = np.zeros(6)
        dq_rad[i] = step_rad
        T_plus, T_minus = model.tcp_transform(q_rad + dq_rad), model.tcp_transform(q_rad - dq_rad)
        numeric[:3, i] = (T_plus[:3, 3] - T_minus[:3, 3]) / (2 * step_rad)
        rotation_delta = Rotation.from_matrix(T_plus[:3, :3] @ T_minus[:3, :3].T)  # in the base frame
        numeric[3:, i] = rotation_delta.as_rotvec() / (2 * step_rad)
    assert np.allclose(T_base_tcp[:3, 3], model.ee_pose(q_rad)[0])
    np.testing.assert_allclose(model.jacobian(q_rad), numeric, atol=1e-6)


def test_dynamics_are_refused_clearly():
    model = make_model("ur5e")
    with pytest.raises(DeployError, match="UR backend streams joint targets; dynamics"):
        model.mass_matrix(np.zeros(6))
    with pytest.raises(DeployError, match="dynamics"):
        model.bias_torque(np.zeros(6), np.zeros(6))
    assert model.joint_limits_rad.shape == (6, 2) and model.torque_limits_nm.shape == (6,)


# --- connection ----------------------------------------------------------------------------------------------


def test_connect_to_loopback_without_server_names_the_ip():
    robot = URRobot("127.0.0.1")
    start_s = time.monotonic()
    if importlib.util.find_spec("rtde_control") is None:
        with pytest.raises(ConfigError, match=r"needs the ur-rtde package: pip install 'deploy\[ur\]'"):
            robot.connect()
    else:
        with pytest.raises(RobotConnectionError, match=r"cannot reach UR at 127\.0\.0\.1"):
            robot.connect()
    assert time.monotonic() - start_s < 5.0


def test_missing_package_is_a_config_error_naming_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "rtde_control", None)
    with pytest.raises(ConfigError, match=r"robot 'ur' needs the ur-rtde package"):
        URRobot("127.0.0.1").connect()


def test_parameters_are_validated():
    with pytest.raises(ConfigError, match="lookahead_time_s"):
        URRobot("127.0.0.1", lookahead_time_s=0.5)
    with pytest.raises(ConfigError, match="frequency_hz"):
        URRobot("127.0.0.1", frequency_hz=1000.0)
    with pytest.raises(ConfigError, match="robot 'ur'"):
        make_robot("ur", ip="127.0.0.1", gian=300)
    robot = make_robot("ur", ip="127.0.0.1")
    assert robot.capabilities == Capability.JOINT_TARGET and not robot.gripper_available


# --- streaming against fake ur_rtde modules ------------------------------------------------------------------


class FakeRTDE:
    """The robot side: a controller clock advancing every 2 ms in real time, servoJ calls recorded."""

    def __init__(self):
        self.start_s = time.monotonic()
        self.servo_calls = []
        self.stopped = []
        self.accept_servo = True
        fake = self

        class RTDEReceiveInterface:
            def __init__(self, ip, frequency):
                self.frequency = frequency

            def getTimestamp(self):
                return 100.0 + 0.002 * int((time.monotonic() - fake.start_s) / 0.002)

            def getActualQ(self):
                return [0.0, -1.57, 1.57, -1.57, -1.57, 0.0]

            def getActualQd(self):
                return [0.0] * 6

            def getTargetMoment(self):
                return [1.0] * 6

            def getActualTCPForce(self):
                return [4.0, -5.0, 6.0, 0.4, -0.5, 0.6]  # [Fx, Fy, Fz N, Tx, Ty, Tz Nm], base frame

            def isConnected(self):
                return True

            def disconnect(self):
                fake.stopped.append("receive.disconnect")

        class RTDEControlInterface:
            def __init__(self, ip, frequency):
                pass

            def servoJ(self, q, speed, acceleration, time_s, lookahead_time, gain):
                fake.servo_calls.append((list(q), speed, acceleration, time_s, lookahead_time, gain))
                return fake.accept_servo

            def servoStop(self):
                fake.stopped.append("servoStop")

            def stopScript(self):
                fake.stopped.append("stopScript")

            def disconnect(self):
                fake.stopped.append("control.disconnect")

        self.control = types.ModuleType("rtde_control")
        self.control.RTDEControlInterface = RTDEControlInterface
        self.receive = types.ModuleType("rtde_receive")
        self.receive.RTDEReceiveInterface = RTDEReceiveInterface


@pytest.fixture
def fake(monkeypatch):
    rtde = FakeRTDE()
    monkeypatch.setitem(sys.modules, "rtde_control", rtde.control)
    monkeypatch.setitem(sys.modules, "rtde_receive", rtde.receive)
    return rtde


def test_wait_for_state_is_paced_by_the_controller_timestamp(fake):
    robot = URRobot("127.0.0.1")
    robot.connect()
    seq = robot.read_state().seq
    start_s = time.monotonic()
    states = []
    for _ in range(20):
        states.append(robot.wait_for_state(seq, 0.1))
        seq = states[-1].seq
    elapsed_s = time.monotonic() - start_s
    assert 0.03 < elapsed_s < 0.2  # ~20 samples of 2 ms
    stamp_steps_s = np.diff([state.stamp_s for state in states])
    assert np.all(stamp_steps_s > 0)
    assert np.median(stamp_steps_s) == pytest.approx(0.002, abs=1e-5)  # the controller's clock, not poll jitter
    assert states[0].q_rad.shape == (6,) and np.isnan(states[0].gripper_width_m)
    np.testing.assert_array_equal(states[0].ee_wrench, [4.0, -5.0, 6.0, 0.4, -0.5, 0.6])  # getActualTCPForce
    assert robot.command_gripper(0.04) != robot.command_gripper(0.04)  # NaN: nothing commanded
    robot.stop()


def test_wait_for_state_times_out_without_a_new_sample(fake, monkeypatch):
    robot = URRobot("127.0.0.1")
    robot.connect()
    monkeypatch.setattr(fake.receive.RTDEReceiveInterface, "getTimestamp", lambda self: 100.0)
    robot.wait_for_state(robot.read_state().seq, 0.05)  # the timestamp changes once (to the frozen value)
    assert robot.wait_for_state(robot.read_state().seq, 0.02) is None


def test_joint_targets_are_clipped_and_sent_with_servo_parameters(fake):
    robot = URRobot("127.0.0.1", lookahead_time_s=0.05, gain=500.0, max_joint_speed_rad_s=1.0)
    robot.connect()
    measured_rad = robot.read_state().q_rad
    target_rad = measured_rad + np.array([0.1, -0.1, 0.0005, 0.0, 0.0, 0.0])
    sent_rad = robot.command_joint_target(target_rad)
    np.testing.assert_allclose(sent_rad, measured_rad + [0.002, -0.002, 0.0005, 0, 0, 0])  # 1 rad/s * 2 ms
    q_sent, speed, acceleration, time_s, lookahead_s, gain = fake.servo_calls[-1]
    np.testing.assert_allclose(q_sent, sent_rad)
    assert (time_s, lookahead_s, gain) == (0.002, 0.05, 500.0)
    next_rad = robot.command_joint_target(target_rad)  # the step limit continues from what was sent
    np.testing.assert_allclose(next_rad, measured_rad + [0.004, -0.004, 0.0005, 0, 0, 0])
    fake.accept_servo = False
    with pytest.raises(RobotConnectionError, match="refused servoJ"):
        robot.command_joint_target(next_rad)
    with pytest.raises(DeployError, match="6 finite angles"):
        robot.command_joint_target(np.full(6, np.nan))


def test_joint_targets_respect_the_elbow_limit(fake):
    robot = URRobot("127.0.0.1", max_joint_speed_rad_s=np.pi)
    robot.connect()
    robot.command_joint_target(robot.read_state().q_rad)
    for _ in range(400):
        sent_rad = robot.command_joint_target(np.array([0.0, -1.57, 4.0, -1.57, -1.57, 0.0]))
    assert sent_rad[2] == pytest.approx(np.pi)


def test_stop_ends_servo_and_script_once(fake):
    robot = URRobot("127.0.0.1")
    robot.connect()
    robot.stop()
    robot.stop()
    assert fake.stopped == ["servoStop", "stopScript", "control.disconnect", "receive.disconnect"]
