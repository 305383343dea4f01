"""A scripted placeholder policy: the TCP circles above the table, pointing down.

It exercises the whole chunk path (stamped chunks, splicing, safety, impedance) before a learned policy
exists; consecutive chunks agree because points are a function of absolute time.
"""
from __future__ import annotations

import numpy as np

from deploy.sensing.observation import Observation
from deploy.policies.base import Policy, PolicyMetadata, register

TOOL_DOWN_XYZW = np.array([1.0, 0.0, 0.0, 0.0])  # 180 deg about x: the TCP z axis points at the table


@register("circle")
class CirclePolicy(Policy):
    def __init__(self, center_m=(0.45, 0.0, 0.25), radius_m: float = 0.08, period_s: float = 6.0,
                 dt_s: float = 0.05, horizon: int = 16, gripper_width_m: float = 0.04):
        self.metadata = PolicyMetadata(action_space="cartesian", dt_s=dt_s, horizon=horizon)
        self._center_m = np.asarray(center_m, dtype=float)
        self._radius_m = radius_m
        self._omega_rad_s = 2 * np.pi / period_s
        self._gripper_width_m = gripper_width_m
        self.weight_version = "scripted-circle"

    def predict_chunk(self, observation: Observation, committed_prefix=None) -> np.ndarray:
        times_s = observation.stamp_s + self.metadata.dt_s * np.arange(1, self.metadata.horizon + 1)
        phase = self._omega_rad_s * times_s
        positions = self._center_m + self._radius_m * np.stack([np.cos(phase), np.sin(phase), 0 * phase], axis=1)
        actions = np.empty((self.metadata.horizon, 8))  # (H, A)
        actions[:, 0:3] = positions
        actions[:, 3:7] = TOOL_DOWN_XYZW
        actions[:, 7] = self._gripper_width_m
        return actions
