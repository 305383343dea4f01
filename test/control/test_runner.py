"""The loop runner (deploy.control.runner) on real backends without ROS: the sim process over its shared-memory
link, and the UR backend over the in-process RTDE fake of test_loop_on_ur. Observed: ticks reach the outputs at
their rates; a robot that goes away (sim process killed, RTDE connection dropped, RTDE clock frozen) ends the
loop with the cause named, health ERROR, the robot stopped, and no thread left ticking."""
import os
import signal
import sys
import threading
import time

import numpy as np
import pytest

from deploy.control.chunks import ChunkExecutorConfig
from deploy.control.impedance import CartesianImpedanceConfig
from deploy.control.loop import ControlLoop
from deploy.control.runner import ERROR, OK, ControllerConfig, LoopRunner, apply_gain_changes
from deploy.control.safety import SafetyConfig
from deploy.errors import ConfigError, RobotLostError
from deploy.robots.sim import SimRobot
from deploy.robots.ur import URRobot
from deploy.sim.process import SimConfig, SimProcess, connect_when_up
from harness import remove_sim_link, wait_until
from test_loop_on_ur import BOX_MAX_M, BOX_MIN_M, DOWN_XYZW, ServoedArm


class Outputs:
    """Counts the tick records each output received (as the node's publishers would)."""

    def __init__(self):
        self.state, self.reference = [], []

    def streams(self, state_hz=250.0, reference_hz=50.0):
        return ((state_hz, self.state.append), (reference_hz, self.reference.append))


def ur_loop(arm, monkeypatch):
    monkeypatch.setitem(sys.modules, "rtde_control", arm.control)
    monkeypatch.setitem(sys.modules, "rtde_receive", arm.receive)
    robot = URRobot("127.0.0.1")
    robot.connect()
    safety = SafetyConfig(workspace_min_m=BOX_MIN_M, workspace_max_m=BOX_MAX_M, nominal_quat_xyzw=tuple(DOWN_XYZW))
    return ControlLoop(robot, ChunkExecutorConfig(), CartesianImpedanceConfig(), safety)


@pytest.fixture
def sim_loop():
    link_name = f"deploy_runnertest_{os.getpid()}"
    sim = SimProcess(SimConfig(mode="realtime", cameras=""), link_name)
    robot = SimRobot(link_name)
    connect_when_up(robot.connect)
    loop = ControlLoop(robot, ChunkExecutorConfig(), CartesianImpedanceConfig(add_gravity=True), SafetyConfig())
    yield loop, sim
    robot.stop()
    if sim.process.is_alive():
        sim.stop()  # (not after a kill: Event.set() waits for the killed waiter to wake, forever)
    sim.process.join(timeout=10)
    remove_sim_link(link_name)


def test_sim_killed_stops_the_loop_and_names_the_sim(sim_loop):
    loop, sim = sim_loop
    outputs = Outputs()
    runner = LoopRunner(loop, "sim", robot_timeout_s=10.0, outputs=outputs.streams())
    runner.start()
    try:
        assert wait_until(lambda: len(outputs.reference) >= 20, timeout_s=30)
        health = runner.health()
        assert health.level == OK and health.values["robot"] == "ok" and float(health.values["rate_hz"]) > 0
        assert health.values["scheduling"] == "normal scheduling (realtime_priority 0)"
        assert len(outputs.state) >= 4 * len(outputs.reference) - 5  # 250 Hz beside 50 Hz, from the same ticks
        os.kill(sim.process.pid, signal.SIGKILL)
        # The backend names the sim well before the runner's own 10 s watchdog would fire.
        assert wait_until(lambda: runner.lost_cause is not None, timeout_s=8.0)
        assert "sim on link" in runner.lost_cause and "stopped" in runner.lost_cause, runner.lost_cause
        health = runner.health()
        assert health.level == ERROR and health.message == runner.lost_cause and health.values["robot"] == "lost"
        assert wait_until(lambda: not runner._thread.is_alive(), timeout_s=5.0)  # the loop thread ended
        assert loop.robot._link is None  # stopped commanding: the link is closed
        with pytest.raises(RobotLostError) as raised:
            runner.raise_if_lost()
        assert "\n" not in str(raised.value) and "stopped commanding" in str(raised.value)
    finally:
        runner.stop()


def test_ur_connection_drop_stops_the_loop(monkeypatch):
    arm = ServoedArm()
    loop = ur_loop(arm, monkeypatch)
    outputs = Outputs()
    runner = LoopRunner(loop, "ur", robot_timeout_s=10.0, outputs=outputs.streams(state_hz=250.0))
    runner.start()
    try:
        assert wait_until(lambda: len(outputs.state) >= 50, timeout_s=30)
        # 500 Hz RTDE: the 250 Hz output gets every second tick
        assert abs(len(outputs.state) - loop.stats.ticks // 2) <= 1
        sent = len(arm.targets)
        assert sent > 0
        receive = type(loop.robot._receive)
        monkeypatch.setattr(receive, "getTimestamp", lambda self: 0.0)  # the controller clock stops ...
        monkeypatch.setattr(receive, "isConnected", lambda self: False)  # ... and RTDE says the link is down
        assert wait_until(lambda: runner.lost_cause is not None, timeout_s=5.0)
        assert "lost the RTDE connection to UR at 127.0.0.1" in runner.lost_cause
        assert runner.health().level == ERROR
        after = len(arm.targets)
        time.sleep(0.3)
        assert len(arm.targets) == after  # no servoJ after the loss
    finally:
        runner.stop()


def test_a_silent_robot_is_lost_after_the_timeout(monkeypatch):
    """RTDE still says connected but no new sample comes: the runner's own watchdog gives the robot up."""
    arm = ServoedArm()
    loop = ur_loop(arm, monkeypatch)
    runner = LoopRunner(loop, "ur", robot_timeout_s=0.5)
    runner.start()
    try:
        assert wait_until(lambda: loop.stats.ticks >= 50, timeout_s=30)
        monkeypatch.setattr(type(loop.robot._receive), "getTimestamp", lambda self: 0.0)  # the clock stops
        assert wait_until(lambda: runner.lost_cause is not None, timeout_s=10.0)
        assert "no sample from robot 'ur'" in runner.lost_cause and "robot_timeout_s 0.5" in runner.lost_cause
    finally:
        runner.stop()


def test_a_bug_in_the_loop_stops_the_robot_instead_of_killing_a_thread(monkeypatch):
    arm = ServoedArm()
    loop = ur_loop(arm, monkeypatch)
    calls = []

    def broken_output(record):
        calls.append(record)
        if len(calls) == 10:
            raise ZeroDivisionError("division by zero")

    runner = LoopRunner(loop, "ur", outputs=((500.0, broken_output),))
    stopped = threading.Event()
    robot_stop = loop.robot.stop
    monkeypatch.setattr(loop.robot, "stop", lambda: (stopped.set(), robot_stop()))
    runner.start()
    try:
        assert wait_until(lambda: runner.lost_cause is not None, timeout_s=30)
        assert runner.lost_cause == "robot 'ur' lost: control loop failed: ZeroDivisionError: division by zero"
        assert stopped.is_set() and len(calls) == 10
        assert runner.step(0.01) is False  # a lost runner never ticks again
    finally:
        runner.stop()


def test_step_ticks_without_a_thread(monkeypatch):
    arm = ServoedArm()
    loop = ur_loop(arm, monkeypatch)
    outputs = Outputs()
    runner = LoopRunner(loop, "ur", outputs=outputs.streams(state_hz=500.0))
    deadline = time.monotonic() + 30
    while len(outputs.state) < 20 and time.monotonic() < deadline:
        assert runner.step(0.01)
    assert len(outputs.state) >= 20 and runner.health().level == OK
    assert runner.health().values["scheduling"] == "no loop thread"
    runner.stop()


def test_config_bounds_name_the_field():
    with pytest.raises(ConfigError, match="robot_timeout_s 0.0 outside"):
        ControllerConfig(robot_timeout_s=0.0)
    with pytest.raises(ConfigError, match="loop_runner 'fast'"):
        ControllerConfig(loop_runner="fast")


def test_gain_changes_are_all_or_nothing(monkeypatch):
    loop = ur_loop(ServoedArm(), monkeypatch)
    before = loop.impedance.config
    with pytest.raises(ConfigError, match="translational_stiffness_n_per_m"):
        apply_gain_changes(loop, {"impedance.damping_ratio": 0.8,
                                  "impedance.translational_stiffness_n_per_m": [5000.0] * 3})
    assert loop.impedance.config == before
    apply_gain_changes(loop, {"impedance.translational_stiffness_n_per_m": [500.0] * 3, "use_sim_time": True})
    np.testing.assert_allclose(loop.impedance.config.translational_stiffness_n_per_m, [500.0] * 3)
