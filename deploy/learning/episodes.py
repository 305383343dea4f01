"""Episodes on the running graph, without ROS: what one logged step holds, how the arm is brought to the start
pose between episodes, and when an episode ends.

A step is taken at about the policy's chunk spacing (`step_rate_hz` = 1 / dt); what was commanded at the step's
stamp + (i + 1) dt, by the policy or by the operator when they had authority, is the action chunk a policy
learns to output for this step's observation (`commanded_chunk_labels`; `chunk_labels` for executed references).
"""
from __future__ import annotations

import dataclasses
import math
import threading

import numpy as np

from deploy.errors import ConfigError
from deploy.policies.expert import TOOL_DOWN_XYZW, walk

START_TCP_XYZ_M = np.array([0.45, 0.0, 0.25])  # where every episode starts, tool down, above the cube region
HOMING_CLEARANCE_Z_M = 0.12  # a TCP lower than this rises first, so homing never sweeps across the table
HOMING_CHUNK_MARGIN_S = 0.25  # a chunk stamped this long before the episode's first step is the homing chunk


@dataclasses.dataclass(frozen=True)
class EpisodeConfig:
    step_rate_hz: float = 20.0  # logged steps per second (= 1 / the policy's chunk spacing)
    timeout_s: float = 30.0  # an episode without success ends as a failure after this long
    success_hold_s: float = 0.3  # the task must report success this long before the episode ends
    homing_speed_m_s: float = 0.2
    homing_tolerance_m: float = 0.01  # the start pose is reached within this distance
    homing_timeout_s: float = 30.0
    settle_s: float = 0.5  # wait after placing the cube, so the first observation sees it at rest
    gripper_width_m: float = 0.0  # gripper command while homing (the push task keeps it closed)

    def __post_init__(self):
        for name in ("step_rate_hz", "timeout_s", "homing_speed_m_s", "homing_tolerance_m", "homing_timeout_s"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"episode {name} {getattr(self, name)} must be > 0")


def homing_actions(tcp_xyz_m: np.ndarray, dt_s: float, speed_m_s: float, gripper_width_m: float,
                   target_xyz_m: np.ndarray = START_TCP_XYZ_M) -> np.ndarray:
    """(N, 8) Cartesian points every dt_s from the TCP to the start pose (rising first when low), tool down;
    N covers the whole path plus a short hold at the end."""
    path = [np.asarray(tcp_xyz_m, dtype=float)]
    if path[0][2] < HOMING_CLEARANCE_Z_M:
        path.append(np.array([*path[0][:2], HOMING_CLEARANCE_Z_M]))
    path.append(np.asarray(target_xyz_m, dtype=float))
    path = np.array(path)
    length_m = float(np.linalg.norm(np.diff(path, axis=0), axis=1).sum())
    n = max(2, math.ceil(length_m / (speed_m_s * dt_s)) + 10)
    actions = np.empty((n, 8))
    actions[:, 0:3] = walk(path, speed_m_s * dt_s * np.arange(1, n + 1))
    actions[:, 3:7] = TOOL_DOWN_XYZW
    actions[:, 7] = gripper_width_m
    return actions


class LatestValues:
    """Thread-safe store of the newest value of each named input (subscription callbacks write, the step timer
    reads); `snapshot` fills inputs never received with NaN of the declared shape so every step has every field."""

    def __init__(self, shapes: dict[str, tuple[int, ...]]):
        self._shapes = dict(shapes)
        self._values: dict[str, np.ndarray] = {}
        self._frames: dict[str, tuple[float, np.ndarray]] = {}
        self._lock = threading.Lock()

    def set(self, key: str, value) -> None:
        if key not in self._shapes:
            raise ConfigError(f"step field '{key}' is not one of {sorted(self._shapes)}")
        value = np.asarray(value, dtype=float).reshape(self._shapes[key])
        with self._lock:
            self._values[key] = value

    def set_frame(self, camera: str, stamp_s: float, image: np.ndarray) -> None:
        with self._lock:
            self._frames[camera] = (stamp_s, image)

    def has_frames(self, cameras) -> bool:
        with self._lock:
            return all(camera in self._frames for camera in cameras)

    def snapshot(self, cameras) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """-> (values incl. `stamp_<camera>_s`, frames) at this moment."""
        with self._lock:
            values = {key: self._values.get(key, np.full(shape, np.nan)).copy() for key, shape in self._shapes.items()}
            frames = {camera: self._frames[camera][1] for camera in cameras}
            for camera in cameras:
                values[f"stamp_{camera}_s"] = np.array(self._frames[camera][0])
        return values, frames


def chunk_labels(stamps_s: np.ndarray, executed: np.ndarray, dt_s: float, horizon: int,
                 quat: slice | None = slice(3, 7)) -> np.ndarray:
    """Behaviour-cloning targets from one episode: for the step at stamps_s[t], the executed actions at
    stamps_s[t] + (i + 1) * dt_s, i < H (linear interpolation between logged steps, the last action held past
    the episode's end; the quaternion slice re-normalised). Steps are logged at roughly dt_s, but a loaded
    machine stretches them, so labels follow the stamps, not the step index. -> (T, H, A)."""
    times = stamps_s[:, None] + dt_s * np.arange(1, horizon + 1)[None, :]  # (T, H)
    labels = np.stack([np.interp(times, stamps_s, executed[:, k]) for k in range(executed.shape[1])], axis=-1)
    if quat is not None:
        labels[..., quat] /= np.linalg.norm(labels[..., quat], axis=-1, keepdims=True).clip(min=1e-9)
    return labels


def due_action(chunk, now_s: float, silence_s: float) -> np.ndarray:
    """The point of `chunk` (a deploy.control.chunks.Chunk, or None) due next at `now_s` — what its author
    commands now; NaN when there is no chunk or it ended more than `silence_s` ago. -> (A,)"""
    if chunk is None:
        return np.full(8, np.nan)
    due = chunk.stamp_s + chunk.times_s
    if now_s > due[-1] + silence_s:
        return np.full(chunk.actions.shape[1], np.nan)
    return chunk.actions[min(int(np.searchsorted(due, now_s)), len(due) - 1)]


def proposed_chunk_labels(stamps_s: np.ndarray, chunk_stamps_s: np.ndarray, chunks: np.ndarray, dt_s: float,
                          quat: slice | None = slice(3, 7), point_times_s: np.ndarray | None = None) -> np.ndarray:
    """Behaviour-cloning targets from the chunks the acting policy (the expert) proposed: for the step at
    stamps_s[t], its latest chunk (H, A) stamped chunk_stamps_s[t], re-sampled at stamps_s[t] + (i + 1) dt_s
    (its end point held beyond it). Unlike executed actions, these carry the expert's intent at full speed,
    not the controller's blending lag. Chunk points sit at chunk_stamps_s[t] + point_times_s[t] ((T, H), NaN
    = padding), by default at the policy's own spacing (i + 1) dt_s. -> (T, H, A), NaN where a step has no chunk."""
    horizon = chunks.shape[1]
    grid_s = dt_s * np.arange(1, horizon + 1)
    out = np.full_like(chunks, np.nan)
    for t in range(len(stamps_s)):
        times_s = grid_s if point_times_s is None else point_times_s[t]
        points = np.isfinite(times_s) & np.isfinite(chunks[t]).all(axis=1)
        if not points.any() or not np.isfinite(chunk_stamps_s[t]):
            continue
        wanted = stamps_s[t] + grid_s
        at = chunk_stamps_s[t] + times_s[points]
        out[t] = np.stack([np.interp(wanted, at, chunks[t, points, k]) for k in range(chunks.shape[2])], -1)
    if quat is not None:
        out[..., quat] /= np.linalg.norm(out[..., quat], axis=-1, keepdims=True).clip(min=1e-9)
    return out


POLICY_CHUNK_FIELDS = ("policy_chunk", "policy_chunk_stamp_s")
OPERATOR_CHUNK_FIELDS = ("intervention", "human_chunk", "human_chunk_times_s", "human_chunk_stamp_s")


def commanded_chunk_labels(steps: dict[str, np.ndarray], dt_s: float) -> tuple[np.ndarray, np.ndarray]:
    """What whoever had authority commanded at each logged step, as a chunk on the step's own grid: the
    operator's chunk on intervention steps, the policy's proposal otherwise (`proposed_chunk_labels`). These are
    the actions a policy should output (and the critic scores), free of the controller's blending lag and of
    the homing chunk sent before an episode starts. -> (usable steps (T,) bool, labels (T, H, A))."""
    stamps_s = steps["stamp_s"]
    labels = proposed_chunk_labels(stamps_s, steps["policy_chunk_stamp_s"], steps["policy_chunk"], dt_s)
    labels[steps["policy_chunk_stamp_s"] < stamps_s[0] - HOMING_CHUNK_MARGIN_S] = np.nan
    operator = steps["intervention"] > 0.5
    if operator.any():
        labels[operator] = proposed_chunk_labels(stamps_s[operator], steps["human_chunk_stamp_s"][operator],
                                                 steps["human_chunk"][operator], dt_s,
                                                 point_times_s=steps["human_chunk_times_s"][operator])
    return np.isfinite(labels).all(axis=(1, 2)), labels


class EpisodeClock:
    """Ends an episode on held success or timeout (times in seconds of the node clock)."""

    def __init__(self, config: EpisodeConfig, start_s: float):
        self.config, self.start_s = config, start_s
        self._success_since_s: float | None = None

    def update(self, now_s: float, success: bool) -> str | None:
        """-> None while running, else the outcome reason: "success" or "timeout"."""
        if success:
            self._success_since_s = now_s if self._success_since_s is None else self._success_since_s
            if now_s - self._success_since_s >= self.config.success_hold_s:
                return "success"
        else:
            self._success_since_s = None
        if now_s - self.start_s >= self.config.timeout_s:
            return "timeout"
        return None


def rates_text(outcomes: list[dict], window: int) -> str:
    """Success and intervention rates over the last `window` episodes (the console's lines share it)."""
    recent = outcomes[-window:]
    if not recent:
        return "no episode done yet"
    success = np.mean([o["success"] for o in recent])
    intervention = np.mean([o.get("intervention_fraction", 0.0) for o in recent])
    return f"last {len(recent)}: success {success:.0%}, intervention {intervention:.0%}"


def console_line(outcomes: list[dict], window: int, learner: dict[str, str], weight_version: str) -> str:
    """The operator console's line after an episode: its outcome, recent success and intervention rates, the
    learner's progress and the weights the policy runs."""
    last = outcomes[-1]
    learner_text = (f"learner step {learner.get('step', '?')} critic {learner.get('critic', '-')} "
                    f"actor {learner.get('actor', '-')} v{learner.get('version', '?')}" if learner else "no learner")
    return (f"episode {len(outcomes)} (seed {last['seed']}): {'SUCCESS' if last['success'] else 'failure'} "
            f"in {last['duration_s']:.1f} s, operator {last.get('intervention_fraction', 0.0):.0%} | "
            f"{rates_text(outcomes, window)} | {learner_text} | weights {weight_version}")


def _flag(value: bool | None, true: str, false: str) -> str:
    return "?" if value is None else (true if value else false)


def status_line(episode: int, elapsed_s: float, operator_authority: bool | None, deadman: bool | None,
                weight_version: str, outcomes: list[dict], window: int) -> str:
    """The operator console's live line while episode `episode` runs (refreshed about once a second): who has
    authority, the operator's deadman, the weights the policy runs and the rates so far. None = not heard yet."""
    return (f"live episode {episode} {elapsed_s:.0f} s | authority {_flag(operator_authority, 'OPERATOR', 'policy')} "
            f"| deadman {_flag(deadman, 'held', 'released')} | weights {weight_version} | "
            f"{rates_text(outcomes, window)}")
