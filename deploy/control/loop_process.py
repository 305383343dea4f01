"""The control loop in a child process of its own (the controller's `loop_runner: process`, which
config/realtime.yaml sets).

In the node's process the 1 kHz loop shared one interpreter lock with every rclpy callback: publishing the
robot state, decoding chunks, the executor's own wake-ups. Under SCHED_FIFO the executor then had to run one
priority below the loop (else it held the lock while preempted), so the real-time threads took most of a core
on 2 cores and starved the normal-priority nodes beside other load. Here the loop thread, the robot backend and
the chunk splicing run in a process with no rclpy at all; the node keeps ROS (decoding, publishing, services)
at normal priority.

Between the two, two pipes carry numbers and JSON, never pickle:
- node -> loop: chunks (a JSON header, then the times and actions as float64) and commands (hold, e-stop,
  release, writer change, gain changes, stop), applied by the child's command thread;
- loop -> node: robot state at the state rate, reference and chunk status at the reference rate, health at
  4 Hz, "up" once connected, and the cause when it gives up. The loop thread writes without blocking: one
  write() under PIPE_BUF is atomic, so on a full pipe (the node stalled) a report is dropped whole and the
  tick never waits for ROS.

A lost robot ends the child: it stops commanding (LoopRunner), reports ERROR and the cause, and exits; the
node reports and exits too. A node that dies ends the child: its command pipe closes, the robot is stopped.
"""
from __future__ import annotations

import json
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections.abc import Sequence
from multiprocessing.connection import Connection

import numpy as np

from deploy.control.chunks import ActionSpace, Chunk, ChunkError
from deploy.control.runner import (ERROR, GAIN_PREFIXES, SPACES, WARN, Health, LoopSpec, LoopThread, ReferenceOutput,
                                   ReferenceReport, StateOutput, with_gain_changes)
from deploy.errors import DeployError, RobotConnectionError, RobotLostError
from deploy.retry import connect_with_retry
from deploy.robots.base import RobotState
from deploy.robots.registry import make_robot

HEALTH_PERIOD_S = 0.25  # the child's health report period (the node publishes /diagnostics at 1 Hz)
START_GRACE_S = 60.0  # beyond connect_timeout_s: spawning the child and building its loop (imports, kernels)
STOP_TIMEOUT_S = 10.0  # the child's loop thread waits at most one sample; 10 s is a loaded machine
MAX_TEXT = 300  # characters of any one health value (a report stays one atomic pipe write)
# What the node may ask of the loop besides chunks: LoopThread methods without array arguments.
COMMANDS = ("reject", "writer_changed", "hold", "estop", "release", "apply_gain_changes")
STATE, REFERENCE, HEALTH, UP, FAILED, CHUNK, COMMAND, STOP = (b"s", b"r", b"h", b"u", b"f", b"c", b"o", b"q")


# --- wire format (both sides) -------------------------------------------------------------------------------
def encode_chunk(chunk: Chunk, space: ActionSpace) -> bytes:
    header = {"space": space.name, "stamp_s": chunk.stamp_s, "weight_version": chunk.weight_version,
              "points": len(chunk.times_s)}
    arrays = np.concatenate([chunk.times_s, chunk.actions.ravel()]).astype(np.float64)
    return CHUNK + json.dumps(header).encode() + b"\n" + arrays.tobytes()


def decode_chunk(body: bytes) -> tuple[Chunk, ActionSpace]:
    header_bytes, payload = body.split(b"\n", 1)
    header = json.loads(header_bytes)
    values = np.frombuffer(payload, dtype=np.float64)
    points = header["points"]
    actions = values[points:].reshape(points, -1)
    return (Chunk(header["stamp_s"], values[:points].copy(), actions.copy(), header["weight_version"]),
            SPACES[header["space"]])


def encode_state(state: RobotState) -> bytes:
    wrench = state.ee_wrench if state.ee_wrench is not None else np.full(6, np.nan)
    values = np.concatenate([[state.stamp_s, state.gripper_width_m, state.seq, state.ee_wrench is not None],
                             wrench, state.q_rad, state.dq_rad_s, state.tau_measured_nm])
    return STATE + values.astype(np.float64).tobytes()


def decode_state(body: bytes) -> RobotState:
    values = np.frombuffer(body, dtype=np.float64)
    stamp_s, gripper_width_m, seq, has_wrench = values[:4]
    q, dq, tau = np.split(values[10:].copy(), 3)
    return RobotState(float(stamp_s), q, dq, tau, float(gripper_width_m), int(seq),
                      values[4:10].copy() if has_wrench else None)


def encode_reference(report: ReferenceReport) -> bytes:
    values = [report.stamp_s, *report.position_m, *report.quat_xyzw, report.stiffness_scale, report.lag_s,
              report.committed_steps, report.steps_remaining, report.exhausted]
    return REFERENCE + np.array(values, dtype=np.float64).tobytes()


def decode_reference(body: bytes) -> ReferenceReport:
    v = np.frombuffer(body, dtype=np.float64)
    return ReferenceReport(float(v[0]), v[1:4].copy(), v[4:8].copy(), float(v[8]), float(v[9]), int(v[10]),
                           int(v[11]), bool(v[12]))


def encode_health(health: Health) -> bytes:
    return HEALTH + json.dumps({"level": health.level, "message": health.message[:MAX_TEXT],
                                "values": {k: v[:MAX_TEXT] for k, v in health.values.items()},
                                "stamp_s": health.stamp_s}).encode()


def decode_health(body: bytes) -> Health:
    fields = json.loads(body)
    return Health(fields["level"], fields["message"], fields["values"], fields["stamp_s"])


# --- the node's side ----------------------------------------------------------------------------------------
class LoopProcess:
    """The node's handle on the loop in its child process; the same methods as LoopThread. `on_state` and
    `on_reference` run on this side's reader thread."""

    def __init__(self, spec: LoopSpec, on_state: StateOutput, on_reference: ReferenceOutput):
        self.spec = spec
        self._on_state = on_state
        self._on_reference = on_reference
        self._gains = (spec.impedance, spec.joint_impedance)  # what the child runs, to validate changes here
        self._health = Health(WARN, "control process starting", {}, 0.0)
        self._failure: str | None = None  # the child's own words when it gave up
        self._up = threading.Event()
        self._stopping = False
        self._send_lock = threading.Lock()
        ctx = multiprocessing.get_context("spawn")  # a fork of a process with DDS threads is not safe
        command_reader, self._commands = ctx.Pipe(duplex=False)
        self._reports, report_writer = ctx.Pipe(duplex=False)
        self.process = ctx.Process(target=_child_main, args=(spec, command_reader, report_writer),
                                   name="control_loop", daemon=True)
        self.process.start()
        command_reader.close()  # the child's ends: closed here, so each side sees EOF when the other is gone
        report_writer.close()
        self._reader = threading.Thread(target=self._read_reports, name="loop_reports", daemon=True)
        self._reader.start()

    def start(self) -> None:
        """Wait until the child connected to the robot and runs the loop; raise its error if it could not."""
        deadline = time.monotonic() + self.spec.controller.connect_timeout_s + START_GRACE_S
        while not self._up.wait(0.1):
            if not self._reader.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RobotConnectionError(self._failure or f"robot '{self.spec.controller.robot}': the control "
                                           f"process ended before connecting (exit code {self.process.exitcode})")

    def _read_reports(self) -> None:
        while True:
            try:
                message = self._reports.recv_bytes()
            except (EOFError, OSError):
                break
            kind, body = message[:1], message[1:]
            if kind == STATE:
                self._on_state(decode_state(body))
            elif kind == REFERENCE:
                self._on_reference(decode_reference(body))
            elif kind == HEALTH:
                self._health = decode_health(body)
            elif kind == UP:
                self._up.set()
            elif kind == FAILED:
                self._failure = body.decode()
        self.process.join(timeout=STOP_TIMEOUT_S)

    def _send(self, message: bytes) -> None:
        with self._send_lock:
            try:
                self._commands.send_bytes(message)
            except OSError:  # the child is gone: `lost_cause` says why
                pass

    def offer_chunk(self, chunk: Chunk, space: ActionSpace) -> None:
        self._send(encode_chunk(chunk, space))

    def _command(self, name: str, *args) -> None:
        self._send(COMMAND + json.dumps([name, *args]).encode())

    def reject(self, reason: str) -> None:
        self._command("reject", reason)

    def writer_changed(self) -> None:
        self._command("writer_changed")

    def hold(self) -> None:
        self._command("hold")

    def estop(self) -> None:
        self._command("estop")

    def release(self) -> None:
        self._command("release")

    def apply_gain_changes(self, changes: dict[str, object]) -> None:
        """Validated here (a bad value raises ConfigError naming it and changes nothing), applied in the child."""
        self._gains = with_gain_changes(*self._gains, changes)
        gains = {name: list(value) if isinstance(value, Sequence) and not isinstance(value, str) else value
                 for name, value in changes.items() if name.startswith(GAIN_PREFIXES)}  # (rclpy gives array.array)
        if gains:
            self._command("apply_gain_changes", gains)

    @property
    def lost_cause(self) -> str | None:
        if self._failure is not None:
            return self._failure
        if self._up.is_set() and not self._reader.is_alive() and not self._stopping:
            return (f"robot '{self.spec.controller.robot}' lost: its control process ended "
                    f"(exit code {self.process.exitcode})")
        return None

    def raise_if_lost(self) -> None:
        cause = self.lost_cause
        if cause is not None:
            raise RobotLostError(f"{cause} (the controller stopped commanding)")

    def health(self) -> Health:
        health, cause = self._health, self.lost_cause
        if cause is not None and health.level != ERROR:
            return Health(ERROR, cause, {**health.values, "robot": "lost"}, health.stamp_s)
        return health

    def stop(self) -> None:
        """Ask the child to stop the loop and the robot, and wait for it (idempotent)."""
        self._stopping = True
        self._send(STOP)
        self.process.join(timeout=STOP_TIMEOUT_S)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()
        self._reader.join(timeout=STOP_TIMEOUT_S)


# --- the child's side ---------------------------------------------------------------------------------------
class _Reporter:
    """Writes reports to the node. The loop thread's never block (dropped whole when the pipe is full)."""

    def __init__(self, connection: Connection):
        self.connection = connection
        os.set_blocking(connection.fileno(), False)

    def send(self, message: bytes) -> None:
        try:
            self.connection.send_bytes(message)
        except BlockingIOError:  # the node is behind: this report is lost, the next one is fresh
            pass
        except OSError:  # the node is gone: the command pipe's EOF ends this process
            pass

    def send_final(self, message: bytes) -> None:
        """A report that must arrive (the cause of a loss): blocking, the loop has stopped by now."""
        try:
            os.set_blocking(self.connection.fileno(), True)
            self.connection.send_bytes(message)
        except OSError:
            pass


def _say(text: str) -> None:
    print(f"[control process] {text}", file=sys.stderr, flush=True)


def _child_main(spec: LoopSpec, commands: Connection, reports: Connection) -> None:
    # Ctrl-C, or launch's SIGTERM, reaching the whole group: the node stops this process (or, when the node is
    # gone, the command pipe's EOF does); exiting here first would look like a lost loop to the node.
    for stop_signal in (signal.SIGINT, signal.SIGTERM):
        signal.signal(stop_signal, signal.SIG_IGN)
    reporter = _Reporter(reports)
    config = spec.controller
    try:
        robot = make_robot(config.robot, **spec.robot_params)
        connect_with_retry(robot.connect, f"robot '{config.robot}'", config.connect_timeout_s, _say)
    except DeployError as error:
        reporter.send_final(FAILED + str(error).encode())
        sys.exit(1)
    loop = LoopThread(spec, robot, lambda state: reporter.send(encode_state(state)),
                      lambda report: reporter.send(encode_reference(report)))
    loop.start()  # the loop thread at realtime_priority, this (command) thread one below
    reporter.send(UP)
    next_health_s = 0.0
    try:
        while loop.lost_cause is None:
            if commands.poll(HEALTH_PERIOD_S):
                message = commands.recv_bytes()
                if message == STOP:
                    break
                _apply(loop, message)
            if time.monotonic() >= next_health_s:
                reporter.send(encode_health(loop.health()))
                next_health_s = time.monotonic() + HEALTH_PERIOD_S
    except (EOFError, OSError):  # the node is gone
        pass
    finally:
        loop.stop()
    if loop.lost_cause is not None:
        reporter.send_final(encode_health(loop.health()))
        reporter.send_final(FAILED + loop.lost_cause.encode())
        sys.exit(3)


def _apply(loop: LoopThread, message: bytes) -> None:
    kind, body = message[:1], message[1:]
    if kind == CHUNK:
        try:
            chunk, space = decode_chunk(body)
        except (ChunkError, KeyError, ValueError) as error:  # the node sent a valid Chunk: only a bug lands here
            loop.reject(f"chunk garbled between node and control process: {error}")
            return
        loop.offer_chunk(chunk, space)
    elif kind == COMMAND:
        name, *args = json.loads(body)
        if name in COMMANDS:
            try:
                getattr(loop, name)(*args)
            except DeployError as error:  # validated by the node first; said, never fatal
                _say(f"{name} refused: {error}")
