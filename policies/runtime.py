"""Running a policy online, without ROS: the small pieces of arithmetic the policy node needs, kept here so
they are tested without rclpy (STYLE.md rule 1) and the node stays a translator.

- `LatencyWindow`: rolling p50 / p99 of recent latencies and the rate of events.
- `committed_prefix`: the RTC prefix handed to `predict_chunk` — the previous chunk resampled on the new
  chunk's time grid, for the points that will already be executing when the new chunk lands.
- `ExecutedFractionTrigger`: infer when the executing chunk is `fraction` executed, once per chunk.
- `dummy_observation`: a well-formed observation for warm-up inferences.
- `write_random_checkpoint`: a tiny random-weight checkpoint (tests, benchmarks).
"""
from __future__ import annotations

import collections
import math
import os
from pathlib import Path

import numpy as np

from deploy.errors import ConfigError
from deploy.policies.base import PolicyMetadata
from deploy.sensing.observation import Observation

DEMO_TCP_XYZ_M = (0.45, 0.0, 0.25)  # centre of the demo workspace
TOOL_DOWN_XYZW = (1.0, 0.0, 0.0, 0.0)
STATE_PLACEHOLDERS = {"ee_pose": np.array(DEMO_TCP_XYZ_M + TOOL_DOWN_XYZW), "gripper_width": np.array([0.04]),
                      "joint_positions": np.array([0.0, -0.785, 0.0, -2.356, 0.0, 1.571, 0.785]),
                      "cube_pose": np.array([0.5, 0.0, 0.02, 0.0, 0.0, 0.0, 1.0])}


class LatencyWindow:
    """The last `size` samples of a latency [s] with the time each was recorded (for the event rate)."""

    def __init__(self, size: int = 200):
        self._values_s: collections.deque[float] = collections.deque(maxlen=size)
        self._times_s: collections.deque[float] = collections.deque(maxlen=size)
        self.count = 0  # every sample ever added

    def add(self, value_s: float, at_s: float) -> None:
        self._values_s.append(value_s)
        self._times_s.append(at_s)
        self.count += 1

    def percentile_s(self, q: float) -> float:
        """q-th percentile [s] of the window; nan when empty."""
        return float(np.percentile(self._values_s, q)) if self._values_s else math.nan

    def rate_hz(self, now_s: float, span_s: float = 5.0) -> float:
        """Events per second over the last `span_s` seconds before now_s."""
        recent = [t for t in self._times_s if now_s - span_s < t <= now_s]
        return len(recent) / span_s


def committed_prefix(stamp_s: float, times_s: np.ndarray, actions: np.ndarray, new_stamp_s: float, dt_s: float,
                     horizon: int, until_s: float, quat: slice | None = None) -> np.ndarray | None:
    """The previous chunk (stamp_s, times_s (H,), actions (H, A)) sampled at the new chunk's point times
    new_stamp_s + (i + 1) * dt_s that fall at or before `until_s` (now + expected inference latency) and inside
    the previous chunk's span: those points will be executing before the new chunk arrives, so a policy that
    inpaints keeps them. Linear interpolation; the quaternion slice is re-normalised. -> (d, A) or None.
    """
    abs_s = stamp_s + np.asarray(times_s, dtype=float)  # (H,)
    grid_s = new_stamp_s + dt_s * np.arange(1, horizon + 1)  # (H_new,)
    keep = (grid_s <= until_s) & (grid_s >= abs_s[0]) & (grid_s <= abs_s[-1])
    if not keep.any():
        return None
    d = int(np.argmin(keep)) if not keep.all() else horizon  # contiguous from point 0 only
    if d == 0:
        return None
    grid_s = grid_s[:d]
    out = np.stack([np.interp(grid_s, abs_s, actions[:, k]) for k in range(actions.shape[1])], axis=1)  # (d, A)
    if quat is not None:
        out[:, quat] /= np.linalg.norm(out[:, quat], axis=1, keepdims=True).clip(min=1e-9)
    return out


class ExecutedFractionTrigger:
    """Fire once the executing chunk is `fraction` executed (1 - steps_remaining / horizon >= fraction) or the
    controller has run out of plan; then wait until that inference is done and, if it produced a chunk, until
    the controller reports a new splice (its lag_s changes) or `timeout_s` passes — so one chunk, one inference."""

    def __init__(self, fraction: float, horizon: int, timeout_s: float):
        if not 0.0 < fraction < 1.0:
            raise ConfigError(f"execute_fraction {fraction} must be in (0, 1)")
        self.fraction, self.horizon, self.timeout_s = fraction, horizon, timeout_s
        self._busy_since_s: float | None = None  # fired, inference not finished or chunk not yet spliced
        self._lag_at_fire = math.nan
        self._published = False

    def update(self, lag_s: float, steps_remaining: float, exhausted: bool, now_s: float) -> bool:
        """Feed one chunk-status sample; -> True when an inference should start now."""
        if self._busy_since_s is not None:
            spliced = self._published and not _same(lag_s, self._lag_at_fire)
            if not (spliced or now_s - self._busy_since_s > self.timeout_s):
                return False
            self._busy_since_s = None
        executed = 1.0 - steps_remaining / self.horizon
        if exhausted or executed >= self.fraction:
            self._busy_since_s, self._lag_at_fire, self._published = now_s, lag_s, False
            return True
        return False

    def done(self, published: bool) -> None:
        """The inference fired last ended; without a chunk, the next status may fire again at once."""
        if published:
            self._published = True
        else:
            self._busy_since_s = None


def _same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == b


def dummy_observation(metadata: PolicyMetadata, stamp_s: float = 0.0) -> Observation:
    """Grey images of the policy's input size and the demo pose: a well-formed input for warm-up inferences."""
    h, w = metadata.image_size_hw
    values = {f"camera {name}": np.full((max(h, 8), max(w, 8), 3), 128, np.uint8) for name in metadata.image_keys}
    values.update({key: STATE_PLACEHOLDERS[key].copy() for key in metadata.state_keys})
    return Observation(stamp_s=stamp_s, values=values, stamps_s={k: stamp_s for k in values})


def write_random_checkpoint(path: str | os.PathLike, kind: str = "act", *, image_keys: tuple[str, ...] = (),
                            image_size_hw: tuple[int, int] = (32, 32),
                            state_keys: tuple[str, ...] = ("ee_pose", "gripper_width"), horizon: int = 16,
                            dt_s: float = 0.05, seed: int = 0, weight_version: str = "random",
                            spread_m: float = 0.01, **config) -> Path:
    """A random-weight checkpoint whose normaliser centres actions on the demo pose (±`spread_m`), so its
    chunks are safe targets. `config` overrides the architecture's config (e.g. d_model=32)."""
    from deploy.policies.checkpoint import POLICY_TYPES, save_checkpoint  # torch only when asked for

    if kind not in POLICY_TYPES:
        raise ConfigError(f"policy kind '{kind}' is not one of {sorted(POLICY_TYPES)}")
    cls = POLICY_TYPES[kind]
    metadata = PolicyMetadata(action_space="cartesian", dt_s=dt_s, horizon=horizon, image_keys=tuple(image_keys),
                              image_size_hw=tuple(image_size_hw), state_keys=tuple(state_keys))
    policy = cls(cls.config_class(**{"seed": seed, **config}), metadata)
    rng = np.random.default_rng(seed)
    n = 64
    actions = np.concatenate([np.array(DEMO_TCP_XYZ_M) + spread_m * rng.standard_normal((n, horizon, 3)),
                              np.tile(TOOL_DOWN_XYZW, (n, horizon, 1)), rng.uniform(0.0, 0.08, (n, horizon, 1))], -1)
    states = np.stack([np.concatenate([STATE_PLACEHOLDERS[k] + 0.01 * rng.standard_normal(STATE_PLACEHOLDERS[k].shape)
                                       for k in state_keys]) for _ in range(n)])
    policy.normalizer.fit(states, actions)
    return save_checkpoint(policy, path, weight_version=weight_version)


__all__ = ["ExecutedFractionTrigger", "LatencyWindow", "committed_prefix", "dummy_observation",
           "write_random_checkpoint"]
