"""The control loop in its own process (deploy.control.loop_process) driving the real-time sim over its link,
without ROS: robot state and references reach the node's side at their rates, a chunk moves the arm to its
target, an e-stop holds it there, a bad gain is refused on the node's side, and a killed sim ends the loop
process with the cause named, ERROR health and no process left. The wire format round-trips exactly."""
import os
import signal
import threading
import time

import numpy as np
import pytest

from deploy.control.chunks import CARTESIAN, JOINT, Chunk, ChunkExecutorConfig
from deploy.control.impedance import CartesianImpedanceConfig, JointImpedanceConfig
from deploy.control.loop_process import (LoopProcess, decode_chunk, decode_health, decode_reference, decode_state,
                                         encode_chunk, encode_health, encode_reference, encode_state)
from deploy.control.runner import ERROR, OK, ControllerConfig, Health, LoopSpec, ReferenceReport
from deploy.control.safety import SafetyConfig
from deploy.errors import ConfigError, RobotConnectionError, RobotLostError
from deploy.robots.base import RobotState
from deploy.robots.mujoco_model import MujocoRobotModel
from deploy.sim.process import SimConfig, SimProcess
from harness import remove_sim_link, wait_until

DOWN_XYZW = [1.0, 0.0, 0.0, 0.0]


class Received:
    """What the node's side was handed, as the node's publishers would get it."""

    def __init__(self):
        self.states: list[RobotState] = []
        self.references: list[ReferenceReport] = []
        self.lock = threading.Lock()

    def on_state(self, state):
        with self.lock:
            self.states.append(state)

    def on_reference(self, report):
        with self.lock:
            self.references.append(report)


def spec_for(link_name: str, **controller) -> LoopSpec:
    controller = {"robot": "sim", "connect_timeout_s": 30.0, "robot_timeout_s": 10.0, "realtime_priority": 80,
                  **controller}  # as config/realtime.yaml runs it
    return LoopSpec(ControllerConfig(**controller),
                    {"link_name": link_name}, ChunkExecutorConfig(), CartesianImpedanceConfig(add_gravity=True),
                    JointImpedanceConfig(add_gravity=True), SafetyConfig())


@pytest.fixture
def sim():
    link_name = f"deploy_loopprocess_{os.getpid()}"
    process = SimProcess(SimConfig(mode="realtime", cameras=""), link_name)
    yield process
    if process.process.is_alive():
        process.stop()
    process.process.join(timeout=10)
    remove_sim_link(link_name)


@pytest.fixture
def running(sim):
    """A started loop process on the sim, and what it has handed the node's side; stopped afterwards."""
    received = Received()
    control = LoopProcess(spec_for(sim.link_name), received.on_state, received.on_reference)
    control.start()
    yield control, received
    control.stop()


def test_the_loop_process_drives_the_sim_and_holds_on_estop(running):
    control, received = running
    assert wait_until(lambda: len(received.references) >= 10, timeout_s=30)
    assert len(received.states) >= 3 * len(received.references)  # 250 Hz beside 50 Hz
    model = MujocoRobotModel()
    start_m, _ = model.ee_pose(received.states[-1].q_rad)
    target_m = start_m + [0.05, 0.0, 0.0]
    reached = lambda: np.linalg.norm(model.ee_pose(received.states[-1].q_rad)[0] - target_m) < 0.005
    deadline = time.monotonic() + 30
    while not reached() and time.monotonic() < deadline:  # a policy's chunks at 10 Hz, freshly stamped
        stamp_s = received.states[-1].stamp_s
        actions = np.tile(np.concatenate([target_m, DOWN_XYZW, [0.04]]), (10, 1))
        control.offer_chunk(Chunk(stamp_s, 0.1 * np.arange(1, 11), actions), CARTESIAN)
        time.sleep(0.1)
    assert reached(), model.ee_pose(received.states[-1].q_rad)[0] - target_m
    assert np.linalg.norm(received.references[-1].position_m - target_m) < 0.005
    assert wait_until(lambda: control.health().level == OK and control.health().values, timeout_s=5)
    assert int(control.health().values["chunks_received"]) >= 1
    # real-time where the OS allows it (said either way)
    assert control.health().values["scheduling"] in ("SCHED_FIFO priority 80", "normal scheduling: SCHED_FIFO "
                                                     "80 refused (Operation not permitted); expect more jitter")

    control.estop()  # hold the measured pose; a chunk elsewhere does not move it
    time.sleep(0.5)
    held_m = model.ee_pose(received.states[-1].q_rad)[0]
    away = np.tile(np.concatenate([held_m - [0.1, 0.0, 0.0], DOWN_XYZW, [0.04]]), (20, 1))
    control.offer_chunk(Chunk(received.states[-1].stamp_s, 0.1 * np.arange(1, 21), away), CARTESIAN)
    time.sleep(1.5)
    assert np.linalg.norm(model.ee_pose(received.states[-1].q_rad)[0] - held_m) < 0.01
    assert wait_until(lambda: control.health().values.get("trips.estop") == "1", timeout_s=5)

    control.offer_chunk(Chunk(stamp_s, [0.1], np.zeros((1, 8))), JOINT)  # the wrong space: counted
    assert wait_until(lambda: control.health().values.get("chunks_rejected") == "1", timeout_s=5)
    assert "joint chunk" in control.health().values["last_rejection"]

    with pytest.raises(ConfigError, match="translational_stiffness_n_per_m"):
        control.apply_gain_changes({"impedance.translational_stiffness_n_per_m": [1e9] * 3})
    assert control.lost_cause is None
    control.stop()
    assert not control.process.is_alive() and control.process.exitcode == 0


def test_a_killed_sim_ends_the_loop_process_naming_the_sim(sim, running):
    control, received = running
    assert wait_until(lambda: len(received.states) >= 50, timeout_s=30)
    os.kill(sim.process.pid, signal.SIGKILL)
    assert wait_until(lambda: control.lost_cause is not None, timeout_s=15)
    assert "robot 'sim' lost" in control.lost_cause and "sim on link" in control.lost_cause, control.lost_cause
    health = control.health()
    assert health.level == ERROR and health.values["robot"] == "lost"
    with pytest.raises(RobotLostError, match="stopped commanding"):
        control.raise_if_lost()
    assert wait_until(lambda: not control.process.is_alive(), timeout_s=15)
    assert control.process.exitcode == 3
    count = len(received.states)
    time.sleep(0.3)
    assert len(received.states) == count  # nothing after the loss


def test_no_sim_fails_start_with_the_backends_own_words():
    control = LoopProcess(spec_for("deploy_loopprocess_nobody", connect_timeout_s=0.5), lambda s: None,
                          lambda r: None)
    with pytest.raises(RobotConnectionError, match="no sim on link 'deploy_loopprocess_nobody'"):
        control.start()
    assert not control.process.is_alive()


def test_the_wire_format_round_trips():
    chunk = Chunk(12.5, [0.1, 0.2], np.arange(16.0).reshape(2, 8), weight_version="abc123")
    decoded, space = decode_chunk(encode_chunk(chunk, CARTESIAN)[1:])
    assert space is CARTESIAN and decoded.stamp_s == 12.5 and decoded.weight_version == "abc123"
    np.testing.assert_array_equal(decoded.times_s, chunk.times_s)
    np.testing.assert_array_equal(decoded.actions, chunk.actions)
    for wrench in (np.arange(6.0), None):
        state = RobotState(3.25, np.arange(7.0), -np.arange(7.0), np.ones(7), 0.031, seq=17, ee_wrench=wrench)
        back = decode_state(encode_state(state)[1:])
        assert (back.stamp_s, back.gripper_width_m, back.seq) == (3.25, 0.031, 17)
        for name in ("q_rad", "dq_rad_s", "tau_measured_nm"):
            np.testing.assert_array_equal(getattr(back, name), getattr(state, name))
        assert (back.ee_wrench is None) == (wrench is None)
        if wrench is not None:
            np.testing.assert_array_equal(back.ee_wrench, wrench)
    report = ReferenceReport(1.0, np.array([0.3, 0.0, 0.4]), np.array([1.0, 0, 0, 0]), 0.5, 0.02, 3, 12, True)
    back = decode_reference(encode_reference(report)[1:])
    assert (back.stamp_s, back.stiffness_scale, back.lag_s, back.committed_steps, back.steps_remaining,
            back.exhausted) == (1.0, 0.5, 0.02, 3, 12, True)
    np.testing.assert_array_equal(back.position_m, report.position_m)
    health = Health(OK, "ok", {"rate_hz": "999.000", "last_rejection": "x" * 1000}, 4.5)
    back = decode_health(encode_health(health)[1:])
    assert back.values["rate_hz"] == "999.000" and len(back.values["last_rejection"]) < 1000
    assert len(encode_health(health)) < 4096  # one atomic pipe write
