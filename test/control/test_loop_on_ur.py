"""The control loop streaming servoJ targets to the UR backend, whose RTDE I/O is an in-process fake here (no
UR, no URSim on this machine): a controller clock ticking every 2 ms in real time, and an arm that is wherever
the last servoJ put it. Chunks come from a second thread, as from the node's subscription. Observed: the
targets' forward kinematics follow the chunk reference, stay in the box, respect the joint-speed limit, hold
when chunks stop and on e-stop."""
import sys
import threading
import time
import types

import numpy as np
import pytest

from deploy.control.chunks import CARTESIAN, JOINT, Chunk, ChunkExecutorConfig
from deploy.control.impedance import CartesianImpedanceConfig
from deploy.control.loop import ControlLoop
from deploy.control.safety import SafetyConfig
from deploy.errors import ConfigError
from deploy.robots.ur import URRobot
from deploy.robots.ur_model import UR5eModel

HOME_Q_RAD = [0.0, -1.57, 1.57, -1.57, -1.57, 0.0]
DOWN_XYZW = np.array([0.7071068, 0.7071068, 0.0, 0.0])  # the UR5e tool pointing down at HOME_Q_RAD
BOX_MIN_M, BOX_MAX_M = (-0.8, -0.5, 0.05), (-0.2, 0.5, 0.7)  # config/controller_ur.yaml
MAX_JOINT_SPEED_RAD_S = 1.0
MODEL = UR5eModel()


class ServoedArm:
    """The UR side of RTDE: 2 ms controller clock in real time; q = the last servoJ target (perfect servo)."""

    def __init__(self):
        self.start_s = time.monotonic()
        self.q_rad = list(HOME_Q_RAD)
        self.targets: list[np.ndarray] = []
        arm = self

        class RTDEReceiveInterface:
            def __init__(self, ip, frequency):
                pass

            def getTimestamp(self):
                return 0.002 * int((time.monotonic() - arm.start_s) / 0.002)

            def getActualQ(self):
                return list(arm.q_rad)

            def getActualQd(self):
                return [0.0] * 6

            def getTargetMoment(self):
                return [0.0] * 6

            def getActualTCPForce(self):
                return [0.0] * 6

            def isConnected(self):
                return True

            def disconnect(self):
                pass

        class RTDEControlInterface:
            def __init__(self, ip, frequency):
                pass

            def servoJ(self, q, speed, acceleration, time_s, lookahead_time, gain):
                arm.targets.append(np.array(q))
                arm.q_rad = list(q)
                return True

            def servoStop(self):
                pass

            def stopScript(self):
                pass

            def disconnect(self):
                pass

        self.control = types.ModuleType("rtde_control")
        self.control.RTDEControlInterface = RTDEControlInterface
        self.receive = types.ModuleType("rtde_receive")
        self.receive.RTDEReceiveInterface = RTDEReceiveInterface

    def tcp_of_targets(self, since: int = 0) -> np.ndarray:
        """(N, 3) TCP positions of the servoJ targets sent since index `since`."""
        return np.array([MODEL.ee_pose(q)[0] for q in self.targets[since:]])


class Policy:
    """Offers a constant-target chunk every 0.1 s from its own thread (stamped with the loop's latest time)."""

    def __init__(self, loop):
        self.loop, self.target_m, self.running = loop, None, True
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while self.running:
            tick = self.loop.last_tick
            if tick is not None and self.target_m is not None:
                actions = np.tile(np.concatenate([self.target_m, DOWN_XYZW, [0.04]]), (16, 1))
                self.loop.offer_chunk(Chunk(tick.state.stamp_s, 0.05 * np.arange(1, 17), actions), CARTESIAN)
            time.sleep(0.1)

    def stop(self):
        self.running = False
        self._thread.join()


@pytest.fixture
def arm(monkeypatch):
    fake = ServoedArm()
    monkeypatch.setitem(sys.modules, "rtde_control", fake.control)
    monkeypatch.setitem(sys.modules, "rtde_receive", fake.receive)
    return fake


@pytest.fixture
def loop(arm):
    robot = URRobot("127.0.0.1", max_joint_speed_rad_s=MAX_JOINT_SPEED_RAD_S)
    robot.connect()
    safety = SafetyConfig(workspace_min_m=BOX_MIN_M, workspace_max_m=BOX_MAX_M, nominal_quat_xyzw=tuple(DOWN_XYZW),
                          max_tcp_speed_m_per_s=0.25, stale_chunk_timeout_s=0.3)
    loop = ControlLoop(robot, ChunkExecutorConfig(), CartesianImpedanceConfig(), safety)
    yield loop
    robot.stop()


def run_until(loop, predicate, timeout_s):
    """Tick until predicate() holds (checked every 50 ticks) or timeout; True if it held."""
    deadline = time.monotonic() + timeout_s
    ticks = 0
    while time.monotonic() < deadline:
        if loop.tick(wait_timeout_s=0.1) is not None:
            ticks += 1
            if ticks % 50 == 0 and predicate():
                return True
    return predicate()


def run_for(loop, seconds):
    run_until(loop, lambda: False, seconds)


def test_cartesian_chunks_become_servoj_targets_that_follow_the_reference_safely(loop, arm):
    assert loop.period_s == 0.002  # paced by the 500 Hz RTDE samples
    home_m, _ = MODEL.ee_pose(np.array(HOME_Q_RAD))
    policy = Policy(loop)
    try:
        goal_m = home_m + np.array([0.05, 0.04, -0.05])
        policy.target_m = goal_m
        assert run_until(loop, lambda: np.linalg.norm(MODEL.ee_pose(arm.targets[-1])[0] - goal_m) < 0.001,
                         timeout_s=30.0), MODEL.ee_pose(arm.targets[-1])[0]
        steps_rad = np.abs(np.diff(arm.targets, axis=0)).max()
        assert steps_rad <= MAX_JOINT_SPEED_RAD_S * 0.002 + 1e-9  # the backend's per-sample speed clip held
        assert loop.last_tick.joint_target_sent_rad is not None and loop.last_tick.tau_sent_nm is None
        assert loop.last_tick.state.q_rad.shape == (6,)

        # A target far outside the box: the targets go as far as the box allows, never past it.
        since = len(arm.targets)
        policy.target_m = home_m + np.array([0.6, 0.0, 0.0])  # x = +0.11 m, the box ends at -0.2
        assert run_until(loop, lambda: MODEL.ee_pose(arm.targets[-1])[0][0] > BOX_MAX_M[0] - 0.002, timeout_s=30.0)
        assert arm.tcp_of_targets(since)[:, 0].max() < BOX_MAX_M[0] + 1e-4
        assert loop.safety.trips.get("workspace", 0) >= 1

        # Chunks stop: after the stale timeout the targets hold still.
        policy.stop()
        run_for(loop, 0.6)
        held = len(arm.targets)
        run_for(loop, 0.5)
        assert len(arm.targets) > held + 20  # servoJ keeps streaming (the UR needs a target every sample)
        np.testing.assert_allclose(arm.targets[-1], arm.targets[held], atol=1e-9)
        assert loop.safety.trips.get("stale_chunk", 0) >= 1
    finally:
        policy.stop()


def test_a_nan_chunk_is_refused_and_estop_holds_the_measured_pose(loop, arm):
    home_m, _ = MODEL.ee_pose(np.array(HOME_Q_RAD))
    policy = Policy(loop)
    try:
        policy.target_m = home_m + np.array([0.0, 0.08, 0.0])
        assert run_until(loop, lambda: MODEL.ee_pose(arm.targets[-1])[0][1] > home_m[1] + 0.02, timeout_s=30.0)
        bad = object.__new__(Chunk)  # what a corrupt message would decode to if validation were skipped
        for name, value in (("stamp_s", loop.last_tick.state.stamp_s), ("times_s", np.array([0.05, 0.1])),
                            ("actions", np.full((2, 8), np.nan)), ("weight_version", "")):
            object.__setattr__(bad, name, value)
        loop.offer_chunk(bad, CARTESIAN)
        assert loop.rejected_chunks == 1
        loop.safety.estop()
        run_for(loop, 0.1)
        stopped = len(arm.targets)
        run_for(loop, 0.5)  # chunks keep coming, towards a target still 4+ cm away
        np.testing.assert_allclose(arm.tcp_of_targets(stopped), arm.tcp_of_targets(stopped)[:1].repeat(
            len(arm.targets) - stopped, axis=0), atol=1e-4)
        loop.safety.reset_estop()
        assert run_until(loop, lambda: np.linalg.norm(MODEL.ee_pose(arm.targets[-1])[0] - policy.target_m) < 0.001,
                         timeout_s=30.0)
    finally:
        policy.stop()


def test_joint_space_chunks_on_a_six_joint_arm_are_refused_at_construction(arm):
    robot = URRobot("127.0.0.1")
    with pytest.raises(ConfigError, match="joint chunks need a 7-joint arm .* this robot has 6 joints"):
        ControlLoop(robot, ChunkExecutorConfig(), CartesianImpedanceConfig(), SafetyConfig(), space=JOINT)
