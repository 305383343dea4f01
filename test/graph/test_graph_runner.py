"""The graph runner with REAL processes: `graph_main.py launch heartbeat_test ...` (the production CLI and
runner with a test-only graph of rclpy heartbeat nodes, see graph_main.py / graph_heartbeat_node.py).

Each test uses its own ROS_DOMAIN_ID and localhost-only discovery (DESIGN.md: runs on one domain cross-talk).
"""
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from harness import Probe, fresh_domain_id, ros_environment
from std_msgs.msg import String

HERE = Path(__file__).resolve().parent

def domain_id() -> int:
    return fresh_domain_id()  # unique within this pytest run, shared with test/harness.py users


def ros_env(domain: int) -> dict[str, str]:
    env = ros_environment(domain)  # the package's DDS transport, as every launched graph
    env["PYTHONPATH"] = os.pathsep.join([str(HERE), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


class Runner:
    """`graph_main.py launch heartbeat_test` as a subprocess, its stdout/stderr collected line by line."""

    def __init__(self, domain: int, *args: str):
        self.proc = subprocess.Popen(
            [sys.executable, str(HERE / "graph_main.py"), "launch", "heartbeat_test", "--domain-id", str(domain),
             "--grace", "3", *args],
            env=ros_env(domain), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.out: list[str] = []
        self.err: list[str] = []
        self.readers = [threading.Thread(target=self._read, args=(pipe, lines), daemon=True)
                        for pipe, lines in ((self.proc.stdout, self.out), (self.proc.stderr, self.err))]
        for reader in self.readers:
            reader.start()

    @staticmethod
    def _read(pipe, lines):
        for line in pipe:
            lines.append(line.rstrip("\n"))

    def wait_for(self, predicate, timeout_s=20.0):
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if predicate():
                return True
            time.sleep(0.05)
        raise AssertionError(f"timed out; stdout={self.out} stderr={self.err}")

    def child_pids(self) -> dict[str, int]:
        found = (re.match(r"deploy: started '(\w+)' \(pid (\d+)\)", line) for line in self.err)
        return {m.group(1): int(m.group(2)) for m in found if m}

    def finish(self, timeout_s=20.0) -> int:
        code = self.proc.wait(timeout=timeout_s)
        for reader in self.readers:
            reader.join(timeout=2.0)
        return code

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        for pid in self.child_pids().values():  # never leave a process behind, even when a test fails
            try:
                os.killpg(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass


def alive(pid: int) -> bool:
    """True if `pid` exists and is not a zombie (reparented zombies may never be reaped in a container)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def wait_all_dead(pids, timeout_s=10.0) -> list[int]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and any(alive(p) for p in pids):
        time.sleep(0.05)
    return [p for p in pids if alive(p)]


@pytest.fixture
def runners():
    started: list[Runner] = []
    yield started
    for runner in started:
        runner.kill()


@pytest.mark.timeout(60)
def test_graph_runs_prefixes_output_and_stops_cleanly_on_sigint(runners, monkeypatch):
    domain = domain_id()
    for key, value in ros_env(domain).items():  # the probe's DDS participant reads these at init
        if key.startswith(("ROS_", "RMW_", "FASTDDS_")):
            monkeypatch.setenv(key, value)
    probe = Probe(domain)
    try:
        received = {topic: probe.collect(String, topic)
                    for topic in ["/hb_a/heartbeat", "/hb_b/heartbeat", "/custom/heartbeat"]}
        runner = Runner(domain, "tag:=t42")
        runners.append(runner)
        runner.wait_for(lambda: all(received.values()))
    finally:
        probe.close()
    first = {topic: json.loads(msgs[0][1].data) for topic, msgs in received.items()}
    assert first["/hb_a/heartbeat"] == {"name": "hb_a", "greeting": "hello from yaml", "tag": "t42"}
    assert first["/hb_b/heartbeat"] == {"name": "hb_b", "greeting": "hello from yaml", "tag": "t42"}
    assert first["/custom/heartbeat"]["name"] == "hb_required"  # remapped from ~/heartbeat
    pids = runner.child_pids()
    assert list(pids) == ["hb_required", "hb_a", "hb_b"]  # start order
    for name in pids:
        assert f"[{name}] heartbeat {name} up" in runner.out

    runner.proc.send_signal(signal.SIGINT)
    assert runner.finish() == 0
    assert wait_all_dead(pids.values()) == []
    for name in pids:  # each node got SIGINT and shut down by itself (no SIGTERM/SIGKILL needed)
        assert f"[{name}] heartbeat {name} stopped" in runner.out
    stopped = [line for line in runner.out if line.endswith(" stopped")]
    assert stopped == ["[hb_b] heartbeat hb_b stopped", "[hb_a] heartbeat hb_a stopped",
                       "[hb_required] heartbeat hb_required stopped"]  # reverse start order


@pytest.mark.timeout(60)
def test_required_node_exit_stops_the_graph_with_a_clear_message(runners):
    runner = Runner(domain_id(), "fail_after:=1.0")
    runners.append(runner)
    code = runner.finish(timeout_s=30)
    assert code != 0
    assert "deploy: required node 'hb_required' exited with code 3 — stopping the graph" in runner.err
    assert "    | heartbeat hb_required failing on purpose with code 3" in runner.err  # its last output
    assert wait_all_dead(runner.child_pids().values()) == []
    assert "[hb_a] heartbeat hb_a stopped" in runner.out


@pytest.mark.timeout(60)
def test_duration_stops_cleanly(runners):
    runner = Runner(domain_id(), "--duration", "2", "names:=a")
    runners.append(runner)
    assert runner.finish(timeout_s=30) == 0
    assert "deploy: --duration 2 s elapsed — stopping the graph" in runner.err
    assert list(runner.child_pids()) == ["hb_required", "hb_a"]
    assert wait_all_dead(runner.child_pids().values()) == []


@pytest.mark.timeout(60)
@pytest.mark.parametrize("args, message", [
    (["bogus:=1"], "deploy: error: unknown launch argument 'bogus' for graph 'heartbeat_test' "
                   "(known: names, tag, fail_after, stubborn)"),
    (["fail_after:=soon"], "deploy: error: node 'hb_required': parameter 'exit_after_s' must be a float, "
                           "got 'soon'"),
    (["names:=a,a"], "deploy: error: launch argument 'names' lists a name twice: 'a,a'"),
])
def test_bad_arguments_exit_2_with_one_line_and_start_nothing(runners, args, message):
    runner = Runner(domain_id(), *args)
    runners.append(runner)
    assert runner.finish() == 2
    assert runner.err == [message]
    assert runner.out == []


@pytest.mark.timeout(60)
def test_nodes_die_with_a_sigkilled_runner(runners):
    runner = Runner(domain_id())
    runners.append(runner)
    runner.wait_for(lambda: len(runner.child_pids()) == 3 and sum(" up" in line for line in runner.out) == 3)
    pids = list(runner.child_pids().values())
    runner.proc.kill()
    runner.proc.wait()
    assert wait_all_dead(pids, timeout_s=5.0) == []


@pytest.mark.timeout(60)
def test_node_ignoring_sigint_gets_sigterm_after_the_grace_period(runners):
    runner = Runner(domain_id(), "stubborn:=true", "names:=a", "--grace", "1")
    runners.append(runner)
    runner.wait_for(lambda: sum(" up" in line for line in runner.out) == 2)
    runner.proc.send_signal(signal.SIGINT)
    assert runner.finish() == 0
    assert "deploy: 'hb_a' still running 1 s after SIGINT — sending SIGTERM" in runner.err
    assert "[hb_required] heartbeat hb_required stopped" in runner.out  # it did not need SIGTERM
    assert not any("'hb_required' still running" in line for line in runner.err)
    assert wait_all_dead(runner.child_pids().values()) == []
