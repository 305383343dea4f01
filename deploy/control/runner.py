"""Runs the control loop and judges its health, ROS-free: the node only publishes what `tick` and `health` give.

The loop runs in its own thread paced by the robot's samples (`start`; `step` is one tick). `LoopThread` is
what drives it: in the node's process (the default) or in the loop's own (deploy.control.loop_process). With
`realtime_priority` > 0 the loop thread runs SCHED_FIFO and the thread that starts it (the one that splices
chunks: milliseconds of Python) one priority below: under normal scheduling
that thread held the interpreter lock while the OS preempted it and the real-time tick waited behind it
(priority inversion: FIFO on the loop thread alone left 16 % missed deadlines in the whole sim graph, with the
executor one below 3 %); it hands the lock to a waiting tick within the switch interval
`request_realtime_priority` sets.

A robot that goes away (the backend raises, or no new sample for `robot_timeout_s`) is fatal: the runner stops
commanding at once (`Robot.stop`: the arm's own controller holds or brakes), remembers the cause, and `health`
turns ERROR naming it. The runner never restarts the loop: the node reports and exits, and a graph that
requires the controller stops with it. A dead control loop inside a live process, with
diagnostics still saying WARN, is the one failure mode this module exists to rule out.
"""
from __future__ import annotations

import dataclasses
import threading
import time
from typing import Callable, Sequence

import numpy as np

from deploy.control.chunks import CARTESIAN, JOINT, ActionSpace, Chunk, ChunkExecutorConfig
from deploy.control.impedance import CartesianImpedanceConfig, JointImpedanceConfig
from deploy.control.loop import (ControlLoop, TickRecord, check_realtime_priority, request_priority_below,
                                 request_realtime_priority)
from deploy.control.safety import SafetyConfig
from deploy.errors import ConfigError, DeployError, RobotLostError
from deploy.robots.base import Robot, RobotState

OK, WARN, ERROR = 0, 1, 2  # diagnostic levels (the numbers of diagnostic_msgs/DiagnosticStatus)
THREAD_WAIT_S = 0.05  # the thread's longest wait for one sample: how often it looks at the watchdog and stop
SPACES = {"cartesian": CARTESIAN, "joint": JOINT}
LOOP_RUNNERS = ("process", "thread")
GAIN_PREFIXES = ("impedance.", "joint_impedance.")  # parameters that change the running loop's gains


@dataclasses.dataclass
class ControllerConfig:
    """The controller's own options (its ROS parameters without prefix)."""

    robot: str = "sim"  # robot backend (sim|franka|ur|external); its options come as robot_params.<name>
    action_space: str = "cartesian"  # chunks executed: cartesian (~/chunk) or joint (~/joint_chunk)
    state_publish_rate_hz: float = 250.0  # /robot/joint_states (and /robot/ee_wrench) rate [Hz]
    reference_publish_rate_hz: float = 50.0  # ~/reference and ~/chunk_status rate [Hz]
    realtime_priority: int = 0  # SCHED_FIFO priority of the loop thread, the thread that splices chunks one
    # below; 0 = normal scheduling. Refused without the right (no CAP_SYS_NICE / rtprio): said on /diagnostics, not
    # fatal. config/realtime.yaml sets 80 (README "Real-time scheduling")
    loop_runner: str = "thread"  # "thread": a thread of the node's process, sharing the interpreter lock with
    # rclpy; "process": the loop thread in a child process of its own (deploy.control.loop_process; with
    # config/realtime.yaml). A backend reached over ROS topics always runs in a thread. bench/graph_loop.py --runner
    connect_timeout_s: float = 60.0  # keep retrying the robot this long at start-up, then fail naming it [s]
    robot_timeout_s: float = 3.0  # no new robot sample this long while running = robot lost: stop and exit [s]

    def __post_init__(self):
        if self.action_space not in SPACES:
            raise ConfigError(f"action_space '{self.action_space}' (choose {'|'.join(SPACES)})")
        check_realtime_priority(self.realtime_priority, "realtime_priority")
        if self.loop_runner not in LOOP_RUNNERS:
            raise ConfigError(f"loop_runner '{self.loop_runner}' (choose {'|'.join(LOOP_RUNNERS)})")
        for name, high in (("connect_timeout_s", 600.0), ("robot_timeout_s", 60.0)):
            if not 0.0 < getattr(self, name) <= high:
                raise ConfigError(f"{name} {getattr(self, name)} outside (0, {high:g}]")
        for name in ("state_publish_rate_hz", "reference_publish_rate_hz"):
            if not 1.0 <= getattr(self, name) <= 1000.0:
                raise ConfigError(f"{name} {getattr(self, name)} outside [1, 1000]")


@dataclasses.dataclass(frozen=True)
class Health:
    """What the diagnostics say about the loop: level, one-line message, and key/value details."""

    level: int
    message: str
    values: dict[str, str]
    stamp_s: float  # robot-clock stamp of the latest tick (0 before any)


class LoopRunner:
    """Ticks `loop`, hands ticks to each output at its rate, and stops the robot for good when it goes away.

    `outputs`: (rate_hz, callback) pairs; a callback gets every round(robot rate / rate_hz)-th tick record.
    """

    def __init__(self, loop: ControlLoop, robot_name: str, robot_timeout_s: float = 3.0,
                 outputs: Sequence[tuple[float, Callable[[TickRecord], None]]] = (),
                 clock: Callable[[], float] = time.monotonic):
        self.loop = loop
        self._outputs = [(max(1, round(1.0 / (loop.period_s * rate_hz))), callback) for rate_hz, callback in outputs]
        self.robot_name = robot_name
        self.robot_timeout_s = robot_timeout_s
        self.lost_cause: str | None = None  # why the robot was given up; set once, never cleared
        self.scheduling = "no loop thread"  # what the thread's real-time priority request came to
        self._clock = clock
        self._last_sample_s: float | None = None  # host clock at the latest new sample (or the first step)
        self._running = False
        self._thread: threading.Thread | None = None
        self._stop_lock = threading.Lock()

    def start(self, realtime_priority: int = 0) -> None:
        """Run the loop in its own thread, SCHED_FIFO at `realtime_priority` when > 0 and allowed; the calling
        thread (the node's executor, which splices chunks into the plan) goes one priority below it."""
        self._running = True
        self._thread = threading.Thread(target=self._run, args=(realtime_priority,), name="control_loop",
                                        daemon=True)
        self._thread.start()
        request_priority_below(realtime_priority)

    def _run(self, realtime_priority: int) -> None:
        self.scheduling = request_realtime_priority(realtime_priority)
        while self._running and self.step(THREAD_WAIT_S):
            pass

    def step(self, wait_timeout_s: float = 0.0) -> bool:
        """One tick (waiting up to `wait_timeout_s` for a sample); False once the robot is lost."""
        if self.lost_cause is not None:
            return False
        samples_before = self.loop.stats.ticks
        try:
            record = self.loop.tick(wait_timeout_s)
            if record is not None:
                ticks = self.loop.stats.ticks
                for every, callback in self._outputs:
                    if ticks % every == 0:
                        callback(record)
        except DeployError as error:  # the backend's own words: reflex, link gone, connection lost
            self._lose(str(error))
            return False
        except Exception as error:  # noqa: BLE001 -- a bug in the loop must stop the arm, not kill a thread
            self._lose(f"control loop failed: {type(error).__name__}: {error}")
            return False
        now_s = self._clock()
        if self._last_sample_s is None or self.loop.stats.ticks != samples_before:
            self._last_sample_s = now_s
        elif now_s - self._last_sample_s > self.robot_timeout_s:
            self._lose(f"no sample from robot '{self.robot_name}' for {now_s - self._last_sample_s:.1f} s "
                       f"(robot_timeout_s {self.robot_timeout_s:g})")
            return False
        return True

    def _lose(self, cause: str) -> None:
        self.lost_cause = f"robot '{self.robot_name}' lost: {cause}"
        self._stop_robot()

    def raise_if_lost(self) -> None:
        if self.lost_cause is not None:
            raise RobotLostError(f"{self.lost_cause} (the controller stopped commanding)")

    def stop(self) -> None:
        """Stop the thread, then the robot (idempotent)."""
        self._running = False
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=10.0)  # a tick waits at most THREAD_WAIT_S; 10 s is a loaded machine
        self._stop_robot()

    def _stop_robot(self) -> None:
        with self._stop_lock:
            try:
                self.loop.robot.stop()
            except Exception:  # noqa: BLE001 -- stopping a robot that is already gone must not raise
                pass

    def health(self) -> Health:
        """Rate, deadlines, chunks and safety trips; ERROR once the robot is lost, WARN after a safety trip."""
        loop = self.loop
        tick = loop.last_tick
        now_s = tick.state.stamp_s if tick is not None else 0.0
        status = loop.chunk_status(now_s)
        trip = loop.safety.last_trip_reason or ""
        values = {**{k: f"{v:.3f}" for k, v in loop.stats.summary().items()},
                  "missed_deadlines": str(loop.stats.missed_deadlines),
                  "robot": "lost" if self.lost_cause else "ok", "scheduling": self.scheduling,
                  "chunk_lag_s": f"{status.lag_s:.3f}", "chunks_received": str(status.chunks_received),
                  "chunks_rejected": str(loop.rejected_chunks), "last_rejection": loop.last_rejection,
                  "stiffness_scale": f"{tick.stiffness_scale:.2f}" if tick else "n/a",
                  "last_trip": trip,
                  **{f"trips.{k}": str(v) for k, v in loop.safety.trips.items()},
                  "trips.bad_chunk": str(loop.rejected_chunks),
                  "trips.ik_unreachable": str(loop.ik_unreachable)}
        if self.lost_cause is not None:
            return Health(ERROR, self.lost_cause, values, now_s)
        return Health(WARN if trip else OK, trip or "ok", values, now_s)


def with_gain_changes(impedance: CartesianImpedanceConfig, joint_impedance: JointImpedanceConfig,
                      changes: dict[str, object]) -> tuple[CartesianImpedanceConfig, JointImpedanceConfig]:
    """Both gain configs with run-time changes ({"impedance.<field>": value, "joint_impedance.<field>": ...},
    other names ignored) applied, bounds-checked by the config dataclasses: a bad value raises ConfigError
    naming it."""
    configs = []
    for config, prefix in zip((impedance, joint_impedance), GAIN_PREFIXES):
        fields = {name.removeprefix(prefix): tuple(value) if isinstance(value, list) else value
                  for name, value in changes.items() if name.startswith(prefix)}
        configs.append(config.with_updates(**fields) if fields else config)
    return configs[0], configs[1]


def apply_gain_changes(loop: ControlLoop, changes: dict[str, object]) -> None:
    """Run-time gain changes into the running loop, all or nothing (see with_gain_changes)."""
    impedance, joint_impedance = with_gain_changes(loop.impedance.config, loop.joint_impedance.config, changes)
    for law, config in ((loop.impedance, impedance), (loop.joint_impedance, joint_impedance)):
        if config is not law.config:
            law.set_config(config)


@dataclasses.dataclass(frozen=True)
class LoopSpec:
    """Everything a control loop is built from: plain config dataclasses, so a child process rebuilds the same
    loop (deploy.control.loop_process)."""

    controller: ControllerConfig
    robot_params: dict
    chunks: ChunkExecutorConfig
    impedance: CartesianImpedanceConfig
    joint_impedance: JointImpedanceConfig
    safety: SafetyConfig


@dataclasses.dataclass(frozen=True)
class ReferenceReport:
    """The safe reference and the chunk executor's progress at one tick (~/reference and ~/chunk_status)."""

    stamp_s: float
    position_m: np.ndarray  # (3,)
    quat_xyzw: np.ndarray  # (4,)
    stiffness_scale: float
    lag_s: float
    committed_steps: int
    steps_remaining: int
    exhausted: bool


StateOutput = Callable[[RobotState], None]
ReferenceOutput = Callable[[ReferenceReport], None]


class LoopThread:
    """The control loop on a thread of this process: what the node (or the loop's own process) drives.

    `on_state` gets every robot sample at the state publish rate, `on_reference` the reference at its rate,
    both from the loop thread. The robot must be connected before `start`."""

    def __init__(self, spec: LoopSpec, robot: Robot, on_state: StateOutput, on_reference: ReferenceOutput):
        config = spec.controller
        self.spec = spec
        self.loop = ControlLoop(robot, spec.chunks, spec.impedance, spec.safety, space=SPACES[config.action_space],
                                joint_impedance_config=spec.joint_impedance)
        self.runner = LoopRunner(self.loop, config.robot, config.robot_timeout_s,
                                 ((config.state_publish_rate_hz, lambda record: on_state(record.state)),
                                  (config.reference_publish_rate_hz,
                                   lambda record: on_reference(self._reference_report(record)))))

    def _reference_report(self, record: TickRecord) -> ReferenceReport:
        stamp_s = record.state.stamp_s
        status = self.loop.chunk_status(stamp_s)
        return ReferenceReport(stamp_s, record.reference_position_m, record.reference_quat_xyzw,
                               record.stiffness_scale, status.lag_s, status.committed_steps, status.steps_remaining,
                               status.exhausted)

    def start(self) -> None:
        self.runner.start(self.spec.controller.realtime_priority)

    def offer_chunk(self, chunk: Chunk, space: ActionSpace) -> None:
        self.loop.offer_chunk(chunk, space)

    def reject(self, reason: str) -> None:
        self.loop.reject(reason)

    def writer_changed(self) -> None:
        self.loop.writer_changed()

    def hold(self) -> None:
        self.loop.safety.hold()

    def estop(self) -> None:
        self.loop.safety.estop()

    def release(self) -> None:
        self.loop.safety.release_hold()
        self.loop.safety.reset_estop()

    def apply_gain_changes(self, changes: dict[str, object]) -> None:
        apply_gain_changes(self.loop, changes)

    def health(self) -> Health:
        return self.runner.health()

    @property
    def lost_cause(self) -> str | None:
        return self.runner.lost_cause

    def raise_if_lost(self) -> None:
        self.runner.raise_if_lost()

    def stop(self) -> None:
        self.runner.stop()
