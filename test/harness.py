"""Test harness for real processes over real DDS: a private ROS domain per test, an rclpy probe node in the
test process, and graph processes that are always reaped."""
from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import threading
import time
from typing import Callable

import rclpy

from deploy.graph.description import dds_environment
from deploy.nodes.common import BackgroundSpin

_counter = itertools.count()


def fresh_domain_id() -> int:
    """A domain id no other test of this run uses (ids 1..100; runs are further isolated by netns)."""
    return 1 + (os.getpid() * 7 + next(_counter)) % 100


def ros_environment(domain_id: int) -> dict[str, str]:
    """Environment of a test's child processes: its domain and the package's DDS transport (as launched graphs)."""
    env = dict(os.environ)
    env.update(dds_environment(), ROS_DOMAIN_ID=str(domain_id), RMW_IMPLEMENTATION="rmw_fastrtps_cpp",
               PYTHONUNBUFFERED="1", MUJOCO_GL=env.get("MUJOCO_GL", "egl"))
    return env



def interrupt_process(proc: subprocess.Popen, timeout_s: float = 15.0) -> int:
    """Ctrl-C a node process started in its own session; SIGKILL its group if it has not stopped `timeout_s`
    later (nothing of a test may survive it). -> its exit code."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
    return proc.returncode

class Probe:
    """An rclpy node in the test process, on its own context/domain, spun in a background thread."""

    def __init__(self, domain_id: int, name: str = "test_probe", use_sim_time: bool = False):
        self.context = rclpy.Context()
        rclpy.init(context=self.context, domain_id=domain_id)
        self.node = rclpy.create_node(name, context=self.context,
                                      parameter_overrides=[rclpy.parameter.Parameter("use_sim_time", value=use_sim_time)])
        self._spin = BackgroundSpin(self.node, self.context)

    def collect(self, msg_type, topic: str, qos=10) -> list:
        """Subscribe and return the live list every received (receive_time_s, msg) is appended to."""
        received: list = []
        self.node.create_subscription(msg_type, topic, lambda m: received.append((time.monotonic(), m)), qos)
        return received

    def close(self):
        self._spin.close()


def remove_sim_link(link_name: str) -> None:
    """Remove the shared-memory link a killed sim left behind (a sim that ends cleanly removes its own)."""
    from multiprocessing import shared_memory

    try:
        segment = shared_memory.SharedMemory(name=link_name)
        segment.close()
        segment.unlink()
    except FileNotFoundError:
        pass
    for suffix in (".cameras", ".state_bell", ".command_bell"):
        if os.path.exists(f"/dev/shm/{link_name}{suffix}"):
            os.unlink(f"/dev/shm/{link_name}{suffix}")


def wait_until(predicate: Callable[[], bool], timeout_s: float, poll_s: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(poll_s)
    return predicate()


class GraphProcess:
    """`deploy launch ...` as a child process (own process group) with its output captured."""

    def __init__(self, args: list[str], domain_id: int):
        self.domain_id = domain_id
        cmd = [sys.executable, "-m", "deploy.cli", "launch", *args, "--domain-id", str(domain_id)]
        self.proc = subprocess.Popen(cmd, env=ros_environment(domain_id), stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True, start_new_session=True)
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def wait(self, timeout_s: float) -> int:
        """Wait for the graph to exit on its own; its whole output is read when this returns."""
        code = self.proc.wait(timeout=timeout_s)
        self._reader.join(timeout=10)
        return code

    def interrupt(self, timeout_s: float = 60.0) -> int | None:
        """Ctrl-C: the runner stops the nodes one by one (each may use its grace period); -> its exit code, or
        None when it was still stopping after timeout_s (then killed; `output` says which node held it up)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        try:
            return self.wait(timeout_s)
        except subprocess.TimeoutExpired:
            return None
        finally:
            self.kill()

    def kill(self):
        """Last resort at teardown: nothing of the group may survive the test."""
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(timeout=10)
        self._reader.join(timeout=5)
