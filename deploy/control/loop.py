"""One control tick, ROS-free: chunk splice -> reference sample -> safety -> impedance law -> robot.

The node only moves chunks into `offer_chunk` (a one-slot latest buffer, as in ros2_control's realtime
buffer) and reads `last_tick` / `stats` for publishing; everything timing- or safety-relevant happens here,
in the thread that owns the loop.
"""
from __future__ import annotations

import dataclasses
import os
import threading
from collections import deque

import numpy as np

from deploy.control.chunks import (CARTESIAN, ActionSpace, Chunk, ChunkError, ChunkExecutor, ChunkExecutorConfig,
                                   ExecutorStatus)
from deploy.control.impedance import CartesianImpedance, CartesianImpedanceConfig, JointImpedance, JointImpedanceConfig
from deploy.control.safety import SafetyConfig, SafetyLayer
from deploy.errors import ConfigError
from deploy.robots.base import Capability, Robot, RobotState

GRIPPER_INDEX = 7  # gripper width [m] in a Cartesian action


@dataclasses.dataclass(frozen=True)
class TickRecord:
    """What one tick did (for publishing state / reference and for tests)."""

    state: RobotState
    reference_position_m: np.ndarray  # (3,) safe TCP reference (FK of the joint reference in joint space)
    reference_quat_xyzw: np.ndarray  # (4,)
    stiffness_scale: float
    tau_sent_nm: np.ndarray  # (7,)
    gripper_width_cmd_m: float


class LoopStats:
    """Tick period statistics over a sliding window, measured on the robot clock that paces the loop."""

    def __init__(self, period_s: float, window: int = 5000):
        self.period_s = period_s
        self._periods_s: deque[float] = deque(maxlen=window)
        self._last_stamp_s: float | None = None
        self.missed_deadlines = 0
        self.ticks = 0

    def record(self, stamp_s: float) -> None:
        if self._last_stamp_s is not None:
            period_s = stamp_s - self._last_stamp_s
            self._periods_s.append(period_s)
            if period_s > 1.5 * self.period_s:
                self.missed_deadlines += int(round(period_s / self.period_s)) - 1
        self._last_stamp_s = stamp_s
        self.ticks += 1

    def summary(self) -> dict[str, float]:
        if not self._periods_s:
            return {"rate_hz": 0.0, "jitter_p99_ms": 0.0, "missed_deadline_pct": 0.0}
        periods = np.fromiter(self._periods_s, dtype=float)
        jitter_ms = 1000 * np.abs(periods - self.period_s)
        return {"rate_hz": float(1.0 / periods.mean()),
                "jitter_p99_ms": float(np.percentile(jitter_ms, 99)),
                "missed_deadline_pct": 100.0 * self.missed_deadlines / max(1, self.ticks)}


class ControlLoop:
    """Executes chunks (Cartesian or joint space) with a compliant, always-safe torque law on a torque robot."""

    def __init__(self, robot: Robot, executor_config: ChunkExecutorConfig, impedance_config: CartesianImpedanceConfig,
                 safety_config: SafetyConfig, period_s: float = 0.001, space: ActionSpace = CARTESIAN,
                 joint_impedance_config: JointImpedanceConfig | None = None):
        if Capability.TORQUE not in robot.capabilities:
            raise ConfigError(f"{type(robot).__name__} takes {robot.capabilities.name.lower()} commands; this "
                              "controller drives torque backends only so far (target streaming is not wired yet)")
        self.robot = robot
        self.period_s = period_s
        self.space = space
        self.executor = ChunkExecutor(executor_config, space)
        self.impedance = CartesianImpedance(impedance_config)
        self.joint_impedance = JointImpedance(joint_impedance_config)
        self.safety = SafetyLayer(safety_config, robot.model)
        self.stats = LoopStats(period_s)
        self.rejected_chunks = 0
        self.last_rejection = ""
        self.last_tick: TickRecord | None = None
        self._slot: Chunk | None = None
        self._slot_lock = threading.Lock()
        self._last_seq = -1
        self._gripper_width_m: float | None = None

    def offer_chunk(self, chunk: Chunk, space: ActionSpace) -> None:
        """Called from any thread; the newest chunk wins and is spliced at the next tick."""
        if space != self.space:
            self.rejected_chunks += 1
            self.last_rejection = f"a {space.name} chunk, but this controller executes {self.space.name} chunks"
            return
        with self._slot_lock:
            self._slot = chunk

    def _take_chunk(self) -> Chunk | None:
        with self._slot_lock:
            chunk, self._slot = self._slot, None
        return chunk

    def tick(self, wait_timeout_s: float = 0.05) -> TickRecord | None:
        """Wait for the next robot sample and answer it with a torque; None when no new sample came."""
        state = self.robot.wait_for_state(self._last_seq, wait_timeout_s)
        if state is None or state.seq == self._last_seq:
            return None
        self._last_seq = state.seq
        now_s = state.stamp_s
        self.stats.record(now_s)
        if self._gripper_width_m is None:
            self._gripper_width_m = state.gripper_width_m
        chunk = self._take_chunk()
        if chunk is not None:
            try:
                self.executor.submit(chunk, now_s)
                self.safety.notify_chunk(now_s)
            except Exception as error:  # noqa: BLE001 -- a chunk that cannot be spliced is a counted trip,
                self.rejected_chunks += 1  # never an exception out of the loop
                self.last_rejection = f"{type(error).__name__}: {error}" if not isinstance(error, ChunkError) else str(error)
        candidate = self.executor.sample(now_s)  # (8,) or None before the first chunk
        repulsion_nm = self.safety.joint_limit_torque(state.q_rad)
        if self.space == CARTESIAN:
            pose = None if candidate is None else (candidate[0:3], candidate[3:7])
            safe = self.safety.filter_reference(pose, now_s, self.robot.model.ee_pose(state.q_rad))
            if safe is None:  # no valid measurement ever: command nothing, the robot brakes
                return None
            tau_nm = self.impedance.compute(state.q_rad, state.dq_rad_s, safe.position_m, safe.quat_xyzw,
                                            self.robot.model, self.period_s, stiffness_scale=safe.stiffness_scale,
                                            tau_extra_nm=repulsion_nm)
            reference = (safe.position_m, safe.quat_xyzw)
        else:
            safe = self.safety.filter_joint_reference(None if candidate is None else candidate[:7], now_s, state.q_rad)
            if safe is None:
                return None
            tau_nm = self.joint_impedance.compute(state.q_rad, state.dq_rad_s, safe.q_rad, self.robot.model,
                                                  self.period_s, stiffness_scale=safe.stiffness_scale,
                                                  tau_extra_nm=repulsion_nm)
            reference = self.robot.model.ee_pose(safe.q_rad)
        tau_sent_nm = self.robot.command_torque(tau_nm)
        if candidate is not None and np.isfinite(candidate[GRIPPER_INDEX]):
            self._gripper_width_m = float(candidate[GRIPPER_INDEX])
        self.robot.command_gripper(self._gripper_width_m)
        self.last_tick = TickRecord(state, reference[0], reference[1], safe.stiffness_scale, tau_sent_nm,
                                    self._gripper_width_m)
        return self.last_tick

    def chunk_status(self, now_s: float) -> ExecutorStatus:
        return self.executor.status(now_s)


def request_realtime_priority(priority: int) -> str:
    """Put the calling thread under SCHED_FIFO at `priority` (1..99; 0 = leave it), as a real-time control
    thread should run. Returns what happened, for the log; never raises (without the right, the loop still
    runs, with more jitter)."""
    if priority <= 0:
        return "normal scheduling (realtime_priority 0)"
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(priority))
    except (PermissionError, OSError) as error:
        return f"normal scheduling: SCHED_FIFO {priority} refused ({error.strerror}); expect more jitter"
    return f"SCHED_FIFO priority {priority}"
