"""Run a resolved graph without ROS 2 `launch`: one process per node, output prefixed, orderly shutdown.

Each node runs as `python -m <module> --ros-args ...` in its own process group (so a terminal's Ctrl-C
reaches only the runner, which then stops the nodes in reverse start order: SIGINT, grace period, SIGTERM,
SIGKILL). Children get PR_SET_PDEATHSIG, so they die even if the runner itself is SIGKILLed.
"""
from __future__ import annotations

import collections
import ctypes
import importlib.util
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from typing import IO, Any

from deploy.errors import ConfigError
from deploy.graph.description import ResolvedGraph, ResolvedNode, dds_environment

RUNNER_ENV = {  # forced for every child of the runner (the runner is for machines without a ROS 2 distro)
    "RMW_IMPLEMENTATION": "rmw_fastrtps_cpp",
    "PYTHONUNBUFFERED": "1",
}
TAIL_LINES = 15  # lines of a crashed required node's output repeated in the failure report
TERM_GRACE_S = 2.0  # wait after SIGTERM before SIGKILL
_PR_SET_PDEATHSIG = 1


def param_value(value: Any) -> str:
    """A typed parameter value as the YAML text rcl parses from `-p name:=<text>` (strings stay strings)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return json.dumps(str(value), ensure_ascii=False)  # a YAML double-quoted scalar


def node_command(node: ResolvedNode, python: str = sys.executable) -> list[str]:
    """The argv that starts `node`: `python -m module --ros-args -r __node:=name --params-file ... -p ... -r ...`."""
    cmd = [python, "-m", node.module, "--ros-args", "-r", f"__node:={node.name}"]
    for path in node.params_files:
        cmd += ["--params-file", str(path)]
    for name, value in node.parameters:
        cmd += ["-p", f"{name}:={param_value(value)}"]
    for src, dst in node.remappings:
        cmd += ["-r", f"{src}:={dst}"]
    return cmd


def child_environment(base: Mapping[str, str], domain_id: int | None = None) -> dict[str, str]:
    """The caller's environment plus Fast DDS, unbuffered output and the package's DDS transport, forced: the
    profile and the discovery range keep every packet on this host only together."""
    env = dict(base)
    env.update(RUNNER_ENV)
    env.update(dds_environment())
    if domain_id is not None:
        if not 0 <= domain_id <= 232:
            raise ConfigError(f"--domain-id {domain_id} is out of range (0..232)")
        env["ROS_DOMAIN_ID"] = str(domain_id)
    return env


def check_modules(graph: ResolvedGraph) -> None:
    """Raise ConfigError naming the first node whose module cannot be found (before anything starts)."""
    for node in graph.nodes:
        try:
            found = importlib.util.find_spec(node.module) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            raise ConfigError(f"node '{node.name}': module '{node.module}' not found")


def _pdeathsig_preexec():
    """preexec_fn: the child gets SIGKILL when the runner dies (Linux); returns None elsewhere."""
    if not sys.platform.startswith("linux"):
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl  # resolved in the parent: the child only calls it
    parent = os.getpid()

    def preexec():
        prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        if os.getppid() != parent:  # the runner died before prctl took effect
            os._exit(1)

    return preexec


class _Child:
    def __init__(self, node: ResolvedNode, proc: subprocess.Popen):
        self.node = node
        self.proc = proc
        self.tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)
        self.readers: list[threading.Thread] = []
        self.reported = False


class GraphRunner:
    """Starts the nodes of a `ResolvedGraph`, supervises them and stops them; see `run()`."""

    def __init__(self, graph: ResolvedGraph, env: Mapping[str, str], grace_s: float = 5.0,
                 out: IO[str] | None = None, err: IO[str] | None = None):
        self.graph = graph
        self.env = dict(env)
        self.grace_s = grace_s
        self.out = out if out is not None else sys.stdout
        self.err = err if err is not None else sys.stderr
        self.children: list[_Child] = []
        self._stop = threading.Event()
        self._hurry = threading.Event()
        self._lock = threading.Lock()

    # -- output ------------------------------------------------------------------------------------------
    def say(self, line: str, stream: IO[str] | None = None) -> None:
        with self._lock:
            target = stream if stream is not None else self.err
            target.write(line + "\n")
            target.flush()

    def _pump(self, child: _Child, pipe: IO[bytes], stream: IO[str]) -> None:
        prefix = f"[{child.node.name}] "
        for raw in iter(pipe.readline, b""):
            line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
            child.tail.append(line)
            self.say(prefix + line, stream)
        pipe.close()

    # -- lifecycle ---------------------------------------------------------------------------------------
    def request_stop(self) -> None:
        """Ask `run()` to stop the graph (signal-handler safe); a second request skips the grace periods."""
        if self._stop.is_set():
            self._hurry.set()
        self._stop.set()

    def start(self) -> None:
        preexec = _pdeathsig_preexec()
        for node in self.graph.nodes:
            proc = subprocess.Popen(node_command(node), env=self.env, stdin=subprocess.DEVNULL,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    start_new_session=True, preexec_fn=preexec)
            child = _Child(node, proc)
            self.children.append(child)
            for pipe, stream in ((proc.stdout, self.out), (proc.stderr, self.err)):
                reader = threading.Thread(target=self._pump, args=(child, pipe, stream), daemon=True,
                                          name=f"deploy-{node.name}-reader")
                reader.start()
                child.readers.append(reader)
            self.say(f"deploy: started '{node.name}' (pid {proc.pid})")

    def run(self, duration_s: float | None = None) -> int:
        """Start the graph and supervise it until stopped; returns the process exit code (0 = clean stop)."""
        code = 0
        try:
            self.start()
            code = self._supervise(duration_s)
        finally:
            self.stop()
        return code

    def _supervise(self, duration_s: float | None) -> int:
        deadline = None if duration_s is None else time.monotonic() + duration_s
        while True:
            if self._stop.wait(0.05):
                self.say("deploy: stop requested — stopping the graph")
                return 0
            if deadline is not None and time.monotonic() >= deadline:
                self.say(f"deploy: --duration {duration_s:g} s elapsed — stopping the graph")
                return 0
            for child in self.children:
                returncode = child.proc.poll()
                if returncode is None or child.reported:
                    continue
                child.reported = True
                for reader in child.readers:
                    reader.join(timeout=1.0)
                if child.node.required:  # a clean exit ends the graph's work (e.g. all episodes run): code 0
                    self._report_required_exit(child, returncode)
                    return 0 if returncode == 0 else 1
                self.say(f"deploy: node '{child.node.name}' exited with code {returncode}")
            if all(c.reported for c in self.children):
                self.say("deploy: every node exited")
                return 0 if all(c.proc.returncode == 0 for c in self.children) else 1

    def _report_required_exit(self, child: _Child, returncode: int) -> None:
        how = f"exited with code {returncode}"
        if returncode < 0:
            how = f"was killed by {signal.Signals(-returncode).name}"
        self.say(f"deploy: required node '{child.node.name}' {how} — stopping the graph")
        if returncode != 0 and child.tail:
            self.say(f"deploy: last output of '{child.node.name}':")
            for line in child.tail:
                self.say(f"    | {line}")

    def stop(self) -> None:
        """Stop every node still running, in reverse start order: SIGINT, grace, SIGTERM, SIGKILL."""
        for child in reversed(self.children):
            proc = child.proc
            if proc.poll() is None:
                steps = ((signal.SIGINT, self.grace_s), (signal.SIGTERM, TERM_GRACE_S), (signal.SIGKILL, None))
                for i, (sig, wait_s) in enumerate(steps):
                    if i > 0:
                        previous, waited_s = steps[i - 1]
                        self.say(f"deploy: '{child.node.name}' still running {waited_s:g} s after "
                                 f"{previous.name} — sending {sig.name}")
                    self._signal_group(proc, sig)
                    if self._wait(proc, wait_s):
                        break
            self._signal_group(proc, signal.SIGKILL)  # anything the node itself started
            for reader in child.readers:
                reader.join(timeout=1.0)

    def _wait(self, proc: subprocess.Popen, timeout_s: float | None) -> bool:
        if timeout_s is None:
            proc.wait()
            return True
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and not self._hurry.is_set():
            try:
                proc.wait(timeout=0.05)
                return True
            except subprocess.TimeoutExpired:
                pass
        return proc.poll() is not None

    @staticmethod
    def _signal_group(proc: subprocess.Popen, sig: int) -> None:
        try:
            os.killpg(proc.pid, sig)  # the child leads its own group (start_new_session)
        except (ProcessLookupError, PermissionError):
            pass


def run_graph(graph: ResolvedGraph, domain_id: int | None = None, duration_s: float | None = None,
              grace_s: float = 5.0) -> int:
    """Run `graph` in the foreground, SIGINT/SIGTERM stopping it; returns the exit code for the CLI."""
    env = child_environment(os.environ, domain_id)
    check_modules(graph)
    runner = GraphRunner(graph, env, grace_s=grace_s)
    handled = (signal.SIGINT, signal.SIGTERM)
    previous = {sig: signal.signal(sig, lambda *_: runner.request_stop()) for sig in handled}
    try:
        return runner.run(duration_s)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
