"""The Franka backend against franky-sim (the `franka` extra): a MuJoCo FR3 behind the libfranka network protocol,
started by each test on 127.0.0.1:1337/1338 inside the test's own network namespace, reached by the real
pylibfranka 0.21.3 with realtime ignored (this machine has no PREEMPT_RT kernel).

What franky-sim can vouch for: the protocol (connect, version handshake, 1 kHz state/command exchange, torque
control, the errors libfranka raises on a refused, mismatched or vanished server) and that torques move its arm.
What it cannot, so these tests do not trust it:
- timing: its server steps physics in Python in wall time on the same two loaded cores; it answers at a few hundred
  Hz here, so the robot clock skips and the loop reports most 1 ms deadlines missed. A real FCI link at that rate
  would stop the arm with a communication-constraints reflex. Rates are checked as flow, never as 1 kHz.
- gravity: `Model.gravity()` returns zeros, and its arm holds itself up unlike anything measured, so the
  impedance law's gravity handling (`add_gravity: false`, as on the real arm) is not validated here; the arm
  settles about a centimetre short of a Cartesian target, so "reached" means "within what the simulator allows".
- external force: `O_F_ext_hat_K` is not a credible estimate (no contact model behind it): /robot/ee_wrench is
  published but never asserted on.
"""
import dataclasses
import io
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from geometry_msgs.msg import PoseStamped
from sensor_msgs.msg import JointState
from std_srvs.srv import Trigger
from trajectory_msgs.msg import MultiDOFJointTrajectory

from deploy.control.chunks import CARTESIAN, Chunk
from deploy.errors import PermanentRobotError, RobotConnectionError
from deploy.graph.description import resolve
from deploy.graph.runner import GraphRunner, child_environment
from deploy.nodes.common import SENSOR_QOS
from deploy.nodes.conversions import chunk_to_msg, pose_from_msg
from deploy.robots.franka import FrankaRobot
from harness import wait_until


def start_franky_sim() -> subprocess.Popen:
    """franky-sim with MuJoCo on 127.0.0.1; returns once it accepts connections on the FCI port."""
    executable = Path(sys.executable).parent / "franky-sim"
    proc = subprocess.Popen([str(executable), "-s", "mujoco", "--hostname", "127.0.0.1"], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            socket.create_connection(("127.0.0.1", 1337), timeout=1).close()
            return proc
        except OSError:
            time.sleep(0.2)
    kill(proc)
    pytest.fail(f"franky-sim did not come up: {proc.stdout.read()[-2000:]}")


def kill(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=10)


@pytest.fixture
def franky_sim():
    proc = start_franky_sim()
    yield proc
    kill(proc)


# --- start-up errors: permanent ones fail once, transient ones are retried ---------------------------------


def test_no_realtime_kernel_is_a_permanent_error_naming_the_fix(franky_sim):
    with pytest.raises(PermanentRobotError) as raised:
        FrankaRobot("127.0.0.1", realtime=True, gripper=False).connect()
    text = str(raised.value)
    assert "Running kernel does not have realtime capabilities" in text and "realtime:=false" in text
    assert not isinstance(raised.value, RobotConnectionError)  # connect_with_retry does not retry it


def test_a_refusal_is_transient_unless_desk_answers():
    """Nothing on 127.0.0.2: libfranka says "Connection to FCI refused" as it would for a robot still booting,
    so start-up retries; with something answering on the Desk port of that address (the control unit is up),
    the same refusal means FCI is off: permanent."""
    robot = FrankaRobot("127.0.0.2", realtime=False, gripper=False)
    with pytest.raises(RobotConnectionError, match="Connection to FCI refused"):
        robot.connect()
    with socket.create_server(("127.0.0.2", 443)):  # a stand-in for Desk's https port
        with pytest.raises(PermanentRobotError, match="activate FCI in Desk"):
            robot.connect()


OTHER_RELEASE_SERVER = """
import socket, struct, sys
server = socket.create_server(("127.0.0.3", 1337))
print("ready", flush=True)
connection, _ = server.accept()
command, command_id, size = struct.unpack("<III", connection.recv(12))
connection.recv(size - 12)  # Connect: library version, UDP port
connection.sendall(struct.pack("<III", command, command_id, 12 + 8) + struct.pack("<BH5x", 1, 9))  # status (uint8), server version
connection.recv(1)  # until the client hangs up
"""


def test_a_robot_of_another_release_is_a_permanent_error():
    """A server answering libfranka's Connect with kIncompatibleLibraryVersion (what a robot whose system version
    this pylibfranka does not speak answers): the real IncompatibleVersionException text, classified permanent.
    The server is another process: pylibfranka holds the interpreter lock while it connects."""
    server = subprocess.Popen([sys.executable, "-c", OTHER_RELEASE_SERVER], stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout.readline().strip() == "ready"
        with pytest.raises(PermanentRobotError, match=r"Incompatible library version \(server version: 9") as raised:
            FrankaRobot("127.0.0.3", realtime=False, gripper=False).connect()
        assert "install the pylibfranka release that matches" in str(raised.value)
    finally:
        server.kill()
        server.wait(timeout=10)


# --- the controller graph on franky-sim ------------------------------------------------------------------


class Driver:
    """Chunks to a constant target at 10 Hz (like a policy) and what the graph reports back."""

    def __init__(self, probe):
        self.probe = probe
        self.chunks = probe.node.create_publisher(MultiDOFJointTrajectory, "/controller/chunk", 10)
        self.poses = probe.collect(PoseStamped, "/proprio/ee_pose", SENSOR_QOS)
        self.states = probe.collect(JointState, "/robot/joint_states", SENSOR_QOS)
        self.diagnostics = probe.collect(DiagnosticArray, "/diagnostics", 10)

    def pose(self):
        _, position, quat = pose_from_msg(self.poses[-1][1])
        return np.array(position), np.array(quat)

    def send_for(self, position, quat, seconds):
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            actions = np.tile(np.concatenate([position, quat, [0.04]]), (16, 1))
            now_s = self.probe.node.get_clock().now().nanoseconds * 1e-9
            self.chunks.publish(chunk_to_msg(Chunk(now_s, 0.05 * np.arange(1, 17), actions), CARTESIAN))
            time.sleep(0.1)

    def values(self):
        return {kv.key: kv.value for kv in self.diagnostics[-1][1].status[0].values}

    def call(self, service):
        client = self.probe.node.create_client(Trigger, f"/controller/{service}")
        assert client.wait_for_service(timeout_sec=30)
        assert client.call(Trigger.Request(), timeout_sec=30).success


def franka_graph():
    """The robot graph (controller + proprioception, no cameras) pointed at franky-sim on 127.0.0.1."""
    graph = resolve("robot", {"robot": "franka", "cameras": ""})
    extra = (("robot_params.ip", "127.0.0.1"), ("robot_params.realtime", False), ("robot_params.gripper", False))
    return dataclasses.replace(graph, nodes=tuple(
        dataclasses.replace(n, parameters=n.parameters + extra) if n.name == "controller" else n for n in graph.nodes))


def test_controller_drives_franky_sim_and_stops_the_graph_when_it_dies(franky_sim, probe, domain_id):
    output = io.StringIO()
    runner = GraphRunner(franka_graph(), child_environment(os.environ, domain_id), out=output, err=output)
    result = []
    thread = threading.Thread(target=lambda: result.append(runner.run()), daemon=True)
    thread.start()
    driver = Driver(probe)
    try:
        # Connect, and joint states flow (250 Hz configured; franky-sim's pace decides what arrives).
        assert wait_until(lambda: len(driver.poses) > 20 and driver.diagnostics, timeout_s=120), output.getvalue()[-3000:]
        count, since = len(driver.states), time.monotonic()
        time.sleep(2.0)
        assert (len(driver.states) - count) / (time.monotonic() - since) > 20.0
        assert driver.diagnostics[-1][1].status[0].hardware_id == "franka"

        # A 5 cm Cartesian target: the arm gets there within what the simulator allows (~1 cm short, see above).
        start_m, quat = driver.pose()
        target_m = start_m + np.array([0.05, 0.0, 0.0])
        driver.send_for(target_m, quat, 8.0)
        reached_m, _ = driver.pose()
        assert reached_m[0] - start_m[0] > 0.03 and np.linalg.norm(reached_m - target_m) < 0.02, reached_m - target_m

        # Hold: chunks towards a target 5 cm aside keep coming, the arm stays; release: it goes.
        driver.call("hold")
        aside_m = reached_m + np.array([0.0, 0.05, 0.0])
        driver.send_for(aside_m, quat, 2.0)
        held_m, _ = driver.pose()
        assert np.linalg.norm(held_m - reached_m) < 0.01, held_m - reached_m
        driver.call("release")
        driver.send_for(aside_m, quat, 6.0)
        moved_m, _ = driver.pose()
        assert moved_m[1] - held_m[1] > 0.03, moved_m - held_m

        # E-stop: the arm stops where it is while chunks keep coming; release resumes.
        driver.call("estop")
        driver.send_for(reached_m, quat, 2.0)
        stopped_m, _ = driver.pose()
        assert np.linalg.norm(stopped_m - moved_m) < 0.01, stopped_m - moved_m
        assert wait_until(lambda: int(driver.values().get("trips.estop", 0)) >= 1, timeout_s=30)
        driver.call("release")
        driver.send_for(reached_m, quat, 6.0)
        assert driver.pose()[0][1] < stopped_m[1] - 0.03

        # Chunks stop: stale after 0.5 s, the stiffness softens (soften_ramp_s 2 s), the arm holds still.
        before_m, _ = driver.pose()
        assert wait_until(lambda: int(driver.values().get("trips.stale_chunk", 0)) >= 1
                          and float(driver.values()["stiffness_scale"]) < 0.9, timeout_s=30), driver.values()
        assert np.linalg.norm(driver.pose()[0] - before_m) < 0.01

        # Robot loss: the simulator dies. The controller stops, says ERROR naming the cause, exits with one
        # line, and the graph (the controller is required) stops.
        kill(franky_sim)
        errors = lambda: [s for _, a in driver.diagnostics for s in a.status if s.level == DiagnosticStatus.ERROR]
        assert wait_until(lambda: errors(), timeout_s=30), output.getvalue()[-3000:]
        assert "robot 'franka' lost" in errors()[0].message and "Franka at 127.0.0.1" in errors()[0].message
        thread.join(timeout=60)
        assert result == [1], output.getvalue()[-3000:]
        text = output.getvalue()
        said = [line for line in text.splitlines() if line.startswith("[controller] ") and "error" in line.lower()]
        assert len(said) == 1 and "stopped commanding" in said[0], said
        assert "required node 'controller' exited with code 2" in text and "Traceback" not in text, text[-3000:]
    finally:
        runner.request_stop()
        thread.join(timeout=60)
    assert not thread.is_alive()
