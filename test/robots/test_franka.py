"""Franka backend without hardware: loopback connect errors, and the backend logic against a fake pylibfranka
that mirrors the 0.21 API (Robot/ActiveControlBase/Torques/Gripper, exceptions on RuntimeError)."""
import importlib.util
import sys
import threading
import time
import types

import numpy as np
import pytest

from deploy.errors import ConfigError, DeployError, PermanentRobotError, RobotConnectionError
from deploy.robots.base import Capability
from deploy.robots.franka import FrankaRobot, classify_connect_error
from deploy.robots.mujoco_model import MujocoRobotModel
from deploy.robots.registry import make_robot

HOME_Q_RAD = [0.0, -0.785, 0.0, -2.356, 0.0, 1.571, 0.785]


@pytest.fixture(scope="module")
def model():
    return MujocoRobotModel()


def test_connect_to_loopback_without_server_names_the_ip(model):
    robot = FrankaRobot("127.0.0.1", realtime=False, model=model)
    start_s = time.monotonic()
    if importlib.util.find_spec("pylibfranka") is None:
        with pytest.raises(ConfigError, match=r"needs the pylibfranka package: pip install 'deploy\[franka\]'"):
            robot.connect()
    else:
        with pytest.raises(RobotConnectionError, match=r"cannot reach Franka at 127\.0\.0\.1: .*FCI enabled"):
            robot.connect()
    assert time.monotonic() - start_s < 5.0


def test_missing_package_is_a_config_error_naming_the_extra(model, monkeypatch):
    monkeypatch.setitem(sys.modules, "pylibfranka", None)  # makes `import pylibfranka` raise ImportError
    with pytest.raises(ConfigError, match=r"robot 'franka' needs the pylibfranka package"):
        FrankaRobot("127.0.0.1", model=model).connect()


def test_registry_builds_franka_and_rejects_unknown_parameters(model):
    robot = make_robot("franka", ip="127.0.0.1", model=model)
    assert isinstance(robot, FrankaRobot) and robot.capabilities == Capability.TORQUE
    with pytest.raises(ConfigError, match="robot 'franka'"):
        make_robot("franka", ipp="127.0.0.1")


# --- a fake pylibfranka: same names and call shapes as the 0.21.3 wheel ------------------------------------


class FakeFranka(types.ModuleType):
    def __init__(self, gripper_move_s=0.0):
        super().__init__("pylibfranka")
        fake = self
        self.written = []  # Torques objects the robot received
        self.gripper_calls = []

        class FrankaException(Exception):
            pass

        class NetworkException(RuntimeError):
            pass

        class ControlException(RuntimeError):
            pass

        class RealtimeException(RuntimeError):
            pass

        class Duration:
            def __init__(self, ms):
                self.ms = ms

            def to_sec(self):
                return self.ms / 1000.0

        class State:
            def __init__(self, tick):
                self.time = Duration(1000 + tick)
                self.q = [q + 1e-4 * tick for q in HOME_Q_RAD]
                self.dq = [0.01 * tick] * 7
                self.tau_J = [float(tick)] * 7
                self.O_T_EE = [0.0] * 12 + [0.3, 0.0, 0.45, 1.0]
                self.O_F_ext_hat_K = [1.0 * tick, 2.0, -3.0, 0.1, -0.2, 0.3]  # [N, N, N, Nm, Nm, Nm]

        class Torques:
            def __init__(self, tau_J):
                assert len(tau_J) == 7
                self.tau_J = list(tau_J)
                self.motion_finished = False

        class Control:
            def __init__(self):
                self.tick = 0
                self.fail_with = None

            def readOnce(self):
                if self.fail_with is not None:
                    raise self.fail_with
                time.sleep(0.001)  # the real call blocks on the robot's 1 kHz clock
                self.tick += 1
                return State(self.tick), Duration(1)

            def writeOnce(self, command):
                fake.written.append(command)

        class Robot:
            def __init__(self, ip, realtime_config):
                self.ip, self.realtime_config = ip, realtime_config
                fake.robot = self

            def read_once(self):
                return State(0)

            def start_torque_control(self):
                fake.control = Control()
                return fake.control

            def stop(self):
                fake.gripper_calls.append(("robot.stop",))

        class Gripper:
            def __init__(self, ip):
                self.width = 0.08

            def read_once(self):
                return types.SimpleNamespace(width=self.width)

            def move(self, width, speed):
                fake.gripper_calls.append(("move", width, speed))
                time.sleep(gripper_move_s)
                self.width = width
                return True

            def grasp(self, width, speed, force, epsilon_inner, epsilon_outer):
                fake.gripper_calls.append(("grasp", width, speed, force))
                time.sleep(gripper_move_s)
                self.width = width
                return True

        self.RealtimeConfig = types.SimpleNamespace(kEnforce=0, kIgnore=1)
        for cls in (FrankaException, NetworkException, ControlException, RealtimeException, Torques, Robot, Gripper):
            setattr(self, cls.__name__, cls)


@pytest.fixture
def fake(monkeypatch):
    module = FakeFranka()
    monkeypatch.setitem(sys.modules, "pylibfranka", module)
    return module


def _wait_until(predicate, timeout_s=2.0):
    deadline_s = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline_s, "condition not reached in time"
        time.sleep(0.005)


def test_states_are_mapped_and_paced_by_the_robot_clock(fake, model):
    robot = FrankaRobot("127.0.0.1", realtime=False, model=model)
    robot.connect()
    assert fake.robot.realtime_config == fake.RealtimeConfig.kIgnore
    first = robot.read_state()
    states = [robot.wait_for_state(first.seq + i, 0.01) for i in range(5)]
    assert [s.seq for s in states] == list(range(first.seq + 1, first.seq + 6))
    np.testing.assert_allclose(np.diff([s.stamp_s for s in states]), 0.001, atol=1e-6)  # robot clock spacing
    assert abs(states[-1].stamp_s - time.time()) < 1.0  # on the wall clock
    np.testing.assert_allclose(states[0].q_rad, np.array(HOME_Q_RAD) + 1e-4)
    np.testing.assert_allclose(states[0].tau_measured_nm, 1.0)
    np.testing.assert_array_equal(states[0].ee_wrench, [1.0, 2.0, -3.0, 0.1, -0.2, 0.3])  # O_F_ext_hat_K, in order
    assert states[1].ee_wrench[0] == 2.0  # every sample carries its own wrench
    assert states[0].gripper_width_m == pytest.approx(0.08)
    assert robot.wait_for_state(first.seq, 0.01) is states[-1]  # a newer sample exists: no extra readOnce
    assert robot.tcp_model_error_m is not None and robot.tcp_model_error_m < 0.2
    robot.stop()


def test_torques_are_clipped_to_the_model_limits_and_written(fake, model):
    robot = FrankaRobot("127.0.0.1", gripper=False, model=model)
    robot.connect()
    sent = robot.command_torque(np.array([100.0, -100.0, 5.0, np.nan, 20.0, -20.0, 1.0]))
    np.testing.assert_allclose(sent, [87.0, -87.0, 5.0, 0.0, 12.0, -12.0, 1.0])
    assert fake.written[-1].tau_J == sent.tolist() and not fake.written[-1].motion_finished
    robot.stop()
    assert fake.written[-1].motion_finished and fake.written[-1].tau_J == [0.0] * 7
    robot.stop()  # idempotent
    assert sum(command.motion_finished for command in fake.written) == 1


def test_gripper_moves_in_the_background_only_on_changes_beyond_a_millimetre(monkeypatch, model):
    fake = FakeFranka(gripper_move_s=0.2)
    monkeypatch.setitem(sys.modules, "pylibfranka", fake)
    robot = FrankaRobot("127.0.0.1", model=model)
    robot.connect()
    start_s = time.monotonic()
    assert robot.command_gripper(0.5) == pytest.approx(0.08)  # clipped to the hand's stroke
    assert robot.command_gripper(0.0795) == pytest.approx(0.0795)  # within 1 mm of 0.08: no new move
    assert robot.command_gripper(0.02) == pytest.approx(0.02)
    assert time.monotonic() - start_s < 0.05  # never blocks the control loop
    _wait_until(lambda: robot.wait_for_state(robot.read_state().seq, 0.01).gripper_width_m == pytest.approx(0.02))
    moves = [call for call in fake.gripper_calls if call[0] in ("move", "grasp")]
    assert moves[-1][:2] == ("grasp", 0.02)  # closing grasps with force
    assert len(moves) <= 2 and all(call[1] != 0.0795 for call in moves)
    robot.command_gripper(0.06)
    _wait_until(lambda: fake.gripper_calls[-1][:2] == ("move", 0.06))  # opening is a plain move
    robot.stop()


def test_reflex_during_control_is_a_deploy_error(fake, model):
    robot = FrankaRobot("127.0.0.1", gripper=False, model=model)
    robot.connect()
    fake.control.fail_with = fake.ControlException("cartesian_reflex")
    with pytest.raises(DeployError, match=r"Franka at 127\.0\.0\.1 stopped torque control: cartesian_reflex"):
        robot.wait_for_state(robot.read_state().seq, 0.01)
    robot.stop()


def test_realtime_failure_names_the_realtime_fix(fake, model, monkeypatch):
    def refuse(self, ip, realtime_config):
        raise fake.RealtimeException("libfranka: unable to set realtime scheduling")

    monkeypatch.setattr(fake.Robot, "__init__", refuse)
    with pytest.raises(PermanentRobotError, match="realtime:=false"):
        FrankaRobot("127.0.0.1", model=model).connect()


# libfranka 0.21's own texts (network.cpp, robot_impl.cpp, control_loop.cpp); the live ones are raised by the real
# pylibfranka against franky-sim in test_franka_sim.py.
PERMANENT = {
    "libfranka: Running kernel does not have realtime capabilities.": "realtime:=false",
    ("libfranka: Incompatible library version (server version: 9, library version: 10). Please check "
     "https://frankarobotics.github.io for system updates or choose a libfranka version that uses the server "
     "version 9 from the table at https://frankarobotics.github.io/docs/libfranka/docs/"
     "compatibility_with_images.html ."): "pylibfranka release",
}
TRANSIENT = (
    "libfranka: Connection timeout. Please check your network connection or settings.",
    "libfranka: Connection error: Net Exception: No route to host",
    "libfranka: Connection to FCI refused. Please install FCI feature or enable FCI mode in Desk.",
)


@pytest.mark.parametrize("text", sorted(PERMANENT))
def test_permanent_start_up_errors_fail_once_naming_the_fix(text):
    error = classify_connect_error("172.16.0.2", RuntimeError(text), False, desk_up=lambda: False)
    assert isinstance(error, PermanentRobotError) and not isinstance(error, RobotConnectionError)
    assert str(error).startswith("Franka at 172.16.0.2: " + text) and PERMANENT[text] in str(error)


@pytest.mark.parametrize("text", TRANSIENT)
def test_transient_start_up_errors_are_retried(text):
    error = classify_connect_error("172.16.0.2", RuntimeError(text), False, desk_up=lambda: False)
    assert type(error) is RobotConnectionError and text in str(error)


def test_a_refusal_while_desk_answers_means_fci_is_off():
    error = classify_connect_error("172.16.0.2", RuntimeError(TRANSIENT[2]), False, desk_up=lambda: True)
    assert isinstance(error, PermanentRobotError) and "activate FCI in Desk" in str(error)


def test_a_lost_connection_during_control_says_so(fake, model):
    robot = FrankaRobot("127.0.0.1", gripper=False, model=model)
    robot.connect()
    fake.control.fail_with = fake.NetworkException("libfranka: UDP receive: Timeout")
    with pytest.raises(DeployError, match=r"lost the connection to Franka at 127\.0\.0\.1: libfranka: UDP receive"):
        robot.wait_for_state(robot.read_state().seq, 0.01)
    robot.stop()


def _gripper_threads() -> set:
    return {thread for thread in threading.enumerate() if thread.name == "franka-gripper"}


def test_gripper_worker_thread_ends_on_stop(fake, model):
    before = _gripper_threads()
    robot = FrankaRobot("127.0.0.1", model=model)
    robot.connect()
    assert len(_gripper_threads() - before) == 1
    robot.stop()
    assert _gripper_threads() - before == set()
