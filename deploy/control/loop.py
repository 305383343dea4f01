"""One control tick, ROS-free: chunk splice -> reference sample -> safety -> command -> robot.

The command depends on what the robot takes (`Robot.capabilities`), never on which backend it is: a Cartesian
or joint impedance torque (sim, Franka), joint targets from damped-least-squares IK of the safe reference
(UR servoJ), or the safe TCP pose itself (an external compliant controller). The safety layer filters the
reference in every case; stiffness softening applies to the torque law only (a target-streaming robot holds
the safe reference; its own controller owns its gains).

The node only moves chunks into `offer_chunk`, which builds the spliced plan in the caller's thread (3-6 ms,
several 1 ms ticks) and leaves it in a one-slot buffer (as ros2_control's realtime buffer); the tick swaps it
in at its splice time, a reference swap. Everything timing- or safety-relevant happens in the thread that
owns the loop.
"""
from __future__ import annotations

import dataclasses
import math
import os
import sys
import threading
import time
from collections import deque

import numpy as np
from numba import njit

from deploy.control.blending import sample_plan
from deploy.control.chunks import (CARTESIAN, ActionSpace, Chunk, ChunkError, ChunkExecutor, ChunkExecutorConfig,
                                   ExecutorStatus, Splice)
from deploy.control.ik import IKConfig, solve_ik
from deploy.control.impedance import (CartesianImpedance, CartesianImpedanceConfig, JointImpedance,
                                      JointImpedanceConfig, cartesian_law)
from deploy.control.safety import SafetyConfig, SafetyLayer, filter_pose, joint_limit_repulsion
from deploy.errors import ConfigError
from deploy.robots.base import ARM_DOF, Capability, Robot, RobotState
from deploy.robots.mujoco_model import MujocoRobotModel, evaluate, packed_dynamics

SPLICE_LEAD_S = 0.01  # a chunk takes over at least this long after the last tick: time to build its plan
MAX_SPLICE_LEAD_S = 0.1  # ... and at most this long: the lead follows twice the last build time in between
SWITCH_INTERVAL_S = 0.0002  # interpreter lock hand-over bound in a process with a real-time thread
IK_UNREACHED_M, IK_UNREACHED_RAD = 0.001, 0.01  # IK residual beyond which the reference counts as unreachable


def _error_text(error: Exception) -> str:
    return str(error) if isinstance(error, ChunkError) else f"{type(error).__name__}: {error}"


@njit(nogil=True, cache=True)
def _cartesian_torque_tick(plan_times_s, plan_values, plan_slopes, quat_start, quat_stop, now_s, candidate,
                           safe_pose, frozen, dt_s, safety_limits, q_rad, dq_rad_s, joint_limits_rad, model_functions,
                           model_pointers, model_cache, model_scratch, model_buffer, torque_limits_nm, law_params,
                           law_state, period_s, stiffness_scale, tau_nm):
    """A whole Cartesian torque tick in one compiled call, composed of the modules' own kernels: sample the plan
    into `candidate`, filter it into the safe pose (safety), evaluate the MuJoCo model, add the joint-limit
    repulsion and run the impedance law into `tau_nm`. Through Python that was some ten calls and their
    wrappers, most of the tick. Returns the safety trip bits, or -1 (nothing changed) for a non-finite state."""
    n = q_rad.shape[0]
    for i in range(n):
        if not (np.isfinite(q_rad[i]) and np.isfinite(dq_rad_s[i])):
            return -1
    sample_plan(plan_times_s, plan_values, plan_slopes, now_s, quat_start, quat_stop, candidate)
    bits = filter_pose(safe_pose, candidate, frozen, dt_s, safety_limits)
    repulsion_nm = np.empty(n)
    bits |= joint_limit_repulsion(q_rad, joint_limits_rad, safety_limits, repulsion_nm)
    evaluate(model_functions, model_pointers, q_rad, dq_rad_s, True, model_cache, model_scratch, model_buffer)
    position_m, quat_xyzw, jacobian, mass_matrix, gravity_nm, coriolis_nm = packed_dynamics(model_buffer, n)
    tau_nm[:] = cartesian_law(q_rad, dq_rad_s, safe_pose[0:3], safe_pose[3:7], position_m, quat_xyzw, jacobian,
                              mass_matrix, gravity_nm, coriolis_nm, repulsion_nm, torque_limits_nm, law_params,
                              law_state, period_s, stiffness_scale)
    return bits


@dataclasses.dataclass(slots=True)
class TickRecord:
    """What one tick did (for publishing state / reference and for tests). Written once by the tick and only
    read after (not frozen: a frozen dataclass costs the 1 kHz tick ~1.5 µs more to build)."""

    state: RobotState
    reference_position_m: np.ndarray  # (3,) safe TCP reference (FK of the joint reference in joint space)
    reference_quat_xyzw: np.ndarray  # (4,)
    stiffness_scale: float
    tau_sent_nm: np.ndarray | None  # (dof,) torque robots
    joint_target_sent_rad: np.ndarray | None  # (dof,) joint-target robots
    gripper_width_cmd_m: float


class LoopStats:
    """Tick period statistics over a sliding window, measured on the robot clock that paces the loop, and the
    tick's own compute time (sample in -> command out) on the host clock.

    A missed deadline is a tick period on the robot clock longer than 1.5 periods: either the robot produced no
    sample in time (the sim's physics ran late) or the loop skipped samples it did produce. The second are
    counted apart, from gaps in the samples' sequence numbers (`skipped_sample_pct`): the loop's own share."""

    def __init__(self, period_s: float, window: int = 5000):
        self.period_s = period_s
        self._periods_s: deque[float] = deque(maxlen=window)
        self._compute_s: deque[float] = deque(maxlen=window)
        self._last_stamp_s: float | None = None
        self._last_seq: int | None = None
        self.missed_deadlines = 0
        self.skipped_samples = 0
        self.ticks = 0

    def record(self, stamp_s: float, seq: int | None = None) -> None:
        if self._last_stamp_s is not None:
            period_s = stamp_s - self._last_stamp_s
            self._periods_s.append(period_s)
            if period_s > 1.5 * self.period_s:
                self.missed_deadlines += int(round(period_s / self.period_s)) - 1
        if seq is not None and self._last_seq is not None and seq > self._last_seq + 1:
            self.skipped_samples += seq - self._last_seq - 1
        self._last_stamp_s, self._last_seq = stamp_s, seq
        self.ticks += 1

    def record_compute(self, seconds: float) -> None:
        self._compute_s.append(seconds)

    def summary(self) -> dict[str, float]:
        compute_ms = 1000 * np.fromiter(self._compute_s, dtype=float)
        tick_p99_ms = float(np.percentile(compute_ms, 99)) if len(compute_ms) else 0.0
        skipped_pct = 100.0 * self.skipped_samples / max(1, self.ticks)
        if not self._periods_s:
            return {"rate_hz": 0.0, "jitter_p99_ms": 0.0, "missed_deadline_pct": 0.0, "skipped_sample_pct": 0.0,
                    "tick_p99_ms": tick_p99_ms}
        periods = np.fromiter(self._periods_s, dtype=float)
        jitter_ms = 1000 * np.abs(periods - self.period_s)
        return {"rate_hz": float(1.0 / periods.mean()),
                "jitter_p99_ms": float(np.percentile(jitter_ms, 99)),
                "missed_deadline_pct": 100.0 * self.missed_deadlines / max(1, self.ticks),
                "skipped_sample_pct": skipped_pct,
                "tick_p99_ms": tick_p99_ms}


class ControlLoop:
    """Executes chunks (Cartesian or joint space) on a torque, joint-target or pose-target robot, always safe."""

    def __init__(self, robot: Robot, executor_config: ChunkExecutorConfig, impedance_config: CartesianImpedanceConfig,
                 safety_config: SafetyConfig, period_s: float | None = None, space: ActionSpace = CARTESIAN,
                 joint_impedance_config: JointImpedanceConfig | None = None, ik_config: IKConfig | None = None):
        commands = Capability.TORQUE | Capability.JOINT_TARGET | Capability.POSE_TARGET
        if not robot.capabilities & commands:
            raise ConfigError(f"{type(robot).__name__} takes none of torque, joint-target or pose-target commands")
        if space != CARTESIAN and robot.model.dof != ARM_DOF:
            raise ConfigError(f"{space.name} chunks need a {ARM_DOF}-joint arm (the safety layer's joint checks); "
                              f"this robot has {robot.model.dof} joints: use action_space cartesian")
        self.robot = robot
        self.period_s = robot.period_s if period_s is None else period_s
        self.space = space
        self.executor = ChunkExecutor(executor_config, space)
        self.impedance = CartesianImpedance(impedance_config)
        self.joint_impedance = JointImpedance(joint_impedance_config)
        self.safety = SafetyLayer(safety_config, robot.model)
        self.ik_config = ik_config or IKConfig()
        self.stats = LoopStats(self.period_s)
        self.rejected_chunks = 0
        self.last_rejection = ""
        self.ik_unreachable = 0  # times the IK residual rose past IK_UNREACHED_* (counted like a safety trip)
        self.last_tick: TickRecord | None = None
        self._slot: Splice | None = None
        self._slot_lock = threading.Lock()
        self._last_seq = -1
        self._now_s: float | None = None  # stamp of the latest tick (robot clock)
        self._splice_lead_s = SPLICE_LEAD_S
        self._gripper_width_m: float | None = None
        self._ik_seed_rad: np.ndarray | None = None
        self._ik_was_unreached = False
        # The compiled Cartesian torque tick runs where the model is MuJoCo's (sim, Franka); else the general one.
        compiled = (space == CARTESIAN and Capability.TORQUE in robot.capabilities
                    and isinstance(robot.model, MujocoRobotModel))
        self._compiled_model = ((robot.model.joint_limits_rad, *robot.model.native, robot.model.torque_limits_nm)
                                if compiled else None)
        self._candidate = np.empty(space.width)
        if compiled:
            self._warm_up_compiled_tick()

    # --- chunks in (any thread) --------------------------------------------------------------------------
    def offer_chunk(self, chunk: Chunk, space: ActionSpace) -> None:
        """Splice `chunk` into the executing plan here, in the caller's thread; the next tick at or after its
        splice time swaps it in. The newest chunk wins; a bad one is counted in `rejected_chunks`."""
        if space != self.space:
            self.reject(f"a {space.name} chunk, but this controller executes {self.space.name} chunks")
            return
        for attempt in range(3):  # rebuilt when the tick got past its splice time or committed another meanwhile
            with self._slot_lock:
                pending = self._slot
            # A newer chunk takes over when the one it replaces would have: splices never recede into the
            # future, so chunks arriving faster than the splice lead cannot starve the loop.
            splice_s = pending.splice_s if pending is not None else self._splice_time_s(chunk)
            started_s = time.perf_counter()
            try:
                splice = self.executor.prepare(chunk, splice_s)
            except Exception as error:  # noqa: BLE001 -- a chunk that cannot be spliced is counted, never raised
                self.reject(_error_text(error))
                return
            self._splice_lead_s = min(max(SPLICE_LEAD_S, 2.0 * (time.perf_counter() - started_s)), MAX_SPLICE_LEAD_S)
            with self._slot_lock:
                now_s = self._now_s
                in_time = now_s is None or now_s < splice.splice_s or pending is not None
                if (in_time and splice.generation == self.executor.generation) or attempt == 2:  # else the
                    self._slot = splice  # tick re-splices it (rare)
                    return

    def writer_changed(self) -> None:
        """Authority changed hands: the old writer's chunk still waiting for its splice tick never runs (re-spliced
        after the change it would take the new writer's glide); then see ChunkExecutor.writer_changed."""
        with self._slot_lock:
            self._slot = None
        self.executor.writer_changed()

    def _splice_time_s(self, chunk: Chunk) -> float:
        """The first tick at least the splice lead after the latest one (ticks come every period on the robot
        clock, so the commit lands on it exactly); before any tick, the chunk's stamp."""
        now_s = self._now_s
        if now_s is None:
            return chunk.stamp_s
        return now_s + math.ceil(self._splice_lead_s / self.period_s - 1e-9) * self.period_s

    def reject(self, reason: str) -> None:
        """Count a chunk that will never run (also for messages the node could not decode)."""
        with self._slot_lock:
            self.rejected_chunks += 1
            self.last_rejection = reason

    def _take_due_splice(self, now_s: float) -> Splice | None:
        with self._slot_lock:
            splice = self._slot
            if splice is None or splice.splice_s > now_s + 1e-9:
                return None
            self._slot = None
        return splice

    def _splice_due_chunk(self, now_s: float) -> None:
        """Swap in the prepared splice whose time has come; re-splice it here if it no longer fits.

        Committed d late (the loop stalled), the reference steps smoothstep5(d / fade) of the old/new gap
        into the fade (6e-4 of it 2 ms into a 50 ms fade; the stall itself jumped d along the plan), and the
        safety layer's speed limit bounds the step. Only past the whole fade would that be a raw switch:
        then it is re-spliced here, in the tick (costly, rare: the loop stalled longer than the fade).
        """
        splice = self._take_due_splice(now_s)
        if splice is None:
            return
        fade_s = self.executor.config.continuity_blend_s
        on_time = fade_s == 0.0 or now_s - splice.splice_s <= fade_s
        try:
            if not (on_time and self.executor.commit(splice, now_s)):
                self.executor.submit(splice.chunk, now_s)  # rare: the loop stalled, or another splice came first
            self.safety.notify_chunk(now_s)
        except Exception as error:  # noqa: BLE001 -- never an exception out of the loop
            self.reject(_error_text(error))

    # --- the tick (the loop's own thread) ----------------------------------------------------------------
    def tick(self, wait_timeout_s: float = 0.05) -> TickRecord | None:
        """Wait for the next robot sample and answer it with a command; None when no new sample came."""
        state = self.robot.wait_for_state(self._last_seq, wait_timeout_s)
        if state is None or state.seq == self._last_seq:
            return None
        started_s = time.perf_counter()
        self._last_seq = state.seq
        now_s = self._now_s = state.stamp_s
        self.stats.record(now_s, state.seq)
        if self._gripper_width_m is None:
            self._gripper_width_m = state.gripper_width_m
        self._splice_due_chunk(now_s)
        record = self._compiled_tick(state, now_s, started_s) if self._compiled_model is not None else None
        if record is not None:
            return record
        finite = bool(np.isfinite(state.q_rad).all() and np.isfinite(state.dq_rad_s).all())
        self.safety.note_sample(finite)
        if not finite:  # command nothing for this sample: the robot brakes on it as on a missed tick
            return None
        candidate = self.executor.sample(now_s)  # (A,) or None before the first chunk
        if self.space == CARTESIAN:
            pose = None if candidate is None else (candidate[0:3], candidate[3:7])
            safe = self.safety.filter_reference(pose, now_s, self.robot.model.ee_pose(state.q_rad))
            if safe is None:  # no valid measurement ever: command nothing, the robot brakes
                return None
            reference, safe_q_rad = (safe.position_m, safe.quat_xyzw), None
        else:
            safe = self.safety.filter_joint_reference(None if candidate is None else candidate[:-1], now_s,
                                                      state.q_rad)
            if safe is None:
                return None
            reference, safe_q_rad = self.robot.model.ee_pose(safe.q_rad), safe.q_rad
        if candidate is None:  # hold here; the first chunk is a new writer and glides in, wherever it starts
            start = (*reference[0], *reference[1]) if self.space == CARTESIAN else tuple(safe.q_rad)
            self.executor.hold(np.array([*start, self._gripper_width_m]))
            self.executor.writer_changed()
        tau_sent_nm, joint_target_sent_rad = self._command(state, reference, safe_q_rad, safe.stiffness_scale)
        if candidate is not None and math.isfinite(candidate[-1]):
            self._gripper_width_m = float(candidate[-1])
        self.robot.command_gripper(self._gripper_width_m)
        self.last_tick = TickRecord(state, reference[0], reference[1], safe.stiffness_scale, tau_sent_nm,
                                    joint_target_sent_rad, self._gripper_width_m)
        self.stats.record_compute(time.perf_counter() - started_s)
        return self.last_tick

    def _compiled_tick(self, state: RobotState, now_s: float, started_s: float) -> TickRecord | None:
        """The Cartesian torque tick as one compiled call (`_cartesian_torque_tick`); None when this tick needs
        the general path: no plan or safe pose yet, an e-stop snap pending, the law not started, a bad sample."""
        plan, impedance = self.executor.plan, self.impedance
        if plan is None or not impedance.target_set:
            return None
        safety = self.safety.compiled_tick_state(now_s)
        if safety is None:
            return None
        safe_pose, frozen, dt_s = safety
        tau_nm = np.empty(len(state.q_rad))
        bits = _cartesian_torque_tick(*plan.compiled_sampling, now_s, self._candidate, safe_pose, frozen, dt_s,
                                      self.safety.limits, state.q_rad, state.dq_rad_s, *self._compiled_model,
                                      impedance.params, impedance.state, self.period_s, self.safety.stiffness_scale,
                                      tau_nm)
        if bits < 0:
            return None
        self.safety.compiled_tick_done(bits)
        tau_sent_nm = self.robot.command_torque(tau_nm)
        gripper_m = self._candidate[-1]
        if math.isfinite(gripper_m):
            self._gripper_width_m = float(gripper_m)
        self.robot.command_gripper(self._gripper_width_m)
        self.last_tick = TickRecord(state, safe_pose[:3].copy(), safe_pose[3:].copy(), self.safety.stiffness_scale,
                                    tau_sent_nm, None, self._gripper_width_m)
        self.stats.record_compute(time.perf_counter() - started_s)
        return self.last_tick

    def _warm_up_compiled_tick(self) -> None:
        """Compile (or load from numba's cache) the fused tick at construction, so no compilation lands in a
        1 kHz tick: on a made-up plan, pose and law state; the model's cache is invalidated after."""
        n = self.robot.model.dof
        plan = np.array([0.0, 1.0]), np.tile([0.4, 0.0, 0.3, 1.0, 0.0, 0.0, 0.0, 0.04], (2, 1)), np.zeros((1, 8))
        _cartesian_torque_tick(*plan, 3, 7, 0.5, np.empty(8), plan[1][0, :7].copy(), False, 0.001,
                               self.safety.limits, np.zeros(n), np.zeros(n), *self._compiled_model,
                               self.impedance.params, self.impedance.state.copy(), 0.001, 1.0, np.empty(n))
        model_cache = self._compiled_model[3]
        model_cache[0] = 0.0  # the model's cache (q valid) no longer matches its last answer

    def _command(self, state: RobotState, reference, safe_q_rad: np.ndarray | None, stiffness_scale: float):
        """Send the safe reference in the form the robot takes; returns (torque sent, joint target sent)."""
        capabilities = self.robot.capabilities
        if Capability.TORQUE in capabilities:
            repulsion_nm = self.safety.joint_limit_torque(state.q_rad)
            if safe_q_rad is None:
                tau_nm = self.impedance.compute(state.q_rad, state.dq_rad_s, reference[0], reference[1],
                                                self.robot.model, self.period_s, stiffness_scale=stiffness_scale,
                                                tau_extra_nm=repulsion_nm)
            else:
                tau_nm = self.joint_impedance.compute(state.q_rad, state.dq_rad_s, safe_q_rad, self.robot.model,
                                                      self.period_s, stiffness_scale=stiffness_scale,
                                                      tau_extra_nm=repulsion_nm)
            return self.robot.command_torque(tau_nm), None
        if Capability.JOINT_TARGET in capabilities:
            q_target_rad = safe_q_rad if safe_q_rad is not None else self._inverse_kinematics(state, *reference)
            return None, self.robot.command_joint_target(q_target_rad)
        self.robot.command_pose_target(*reference)
        return None, None

    def _inverse_kinematics(self, state: RobotState, position_m: np.ndarray, quat_xyzw: np.ndarray) -> np.ndarray:
        """Joint target (dof,) for the safe TCP reference. Seeded with the last solution: the reference moved
        at most one speed-limited step since, so it converges in a step or two and stays on its IK branch;
        the measured q (which lags the target by the robot's servo delay) seeds the first tick and any tick
        after an unreached one."""
        seed_rad = self._ik_seed_rad if self._ik_seed_rad is not None else state.q_rad
        solution = solve_ik(self.robot.model, position_m, quat_xyzw, seed_rad, self.ik_config)
        unreached = solution.position_error_m > IK_UNREACHED_M or solution.rotation_error_rad > IK_UNREACHED_RAD
        if unreached and not self._ik_was_unreached:
            self.ik_unreachable += 1
        self._ik_was_unreached = unreached
        self._ik_seed_rad = None if unreached else solution.q_rad
        return solution.q_rad

    def chunk_status(self, now_s: float) -> ExecutorStatus:
        return self.executor.status(now_s)


def check_realtime_priority(priority: int, what: str) -> None:
    """A config's SCHED_FIFO priority: 0 (normal scheduling) or 2..98 (its lock-sharing threads go one below)."""
    if not 0 <= priority <= 98:
        raise ConfigError(f"{what} {priority} outside [0, 98] (0 = normal scheduling)")


def request_priority_below(priority: int) -> str:
    """For a thread that shares the interpreter lock with a real-time thread at `priority`: one below it, so the
    OS never preempts it while the real-time thread waits for the lock (priority inversion; see runner.py)."""
    return request_realtime_priority(max(0, priority - 1))


def request_realtime_priority(priority: int) -> str:
    """Put the calling thread under SCHED_FIFO at `priority` (1..98; 0 = leave it), as a real-time control
    thread should run, and cut the process's interpreter switch interval to SWITCH_INTERVAL_S: a thread under
    normal scheduling holding the lock the real-time thread waits for hands it over within that (else up to
    5 ms, or longer while the OS preempts it). Returns what happened, for the log; never raises (without the
    right, the loop still runs, with more jitter)."""
    if priority <= 0:
        return "normal scheduling (realtime_priority 0)"
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(priority))
    except (PermissionError, OSError) as error:
        return f"normal scheduling: SCHED_FIFO {priority} refused ({error.strerror}); expect more jitter"
    return f"SCHED_FIFO priority {priority}"


def compile_tick_kernels() -> None:
    """Compile (or load from numba's on-disk cache) every kernel a torque tick runs, by building a loop on an
    unconnected sim robot. `scripts/run setup` calls it once: compiling from scratch costs ~21 s of CPU, which a
    fresh machine's first controller start would otherwise spend before its first tick."""
    from deploy.robots.sim import SimRobot

    ControlLoop(SimRobot(), ChunkExecutorConfig(), CartesianImpedanceConfig(), SafetyConfig())
