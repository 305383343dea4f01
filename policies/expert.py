"""The scripted expert for the sim task (push the cube onto the goal patch), with privileged access to the cube
pose (`/sim/cube_pose`). It records the demonstrations BC learns from and plays the scripted operator.

Stateless and closed-loop: every chunk is planned from the measured TCP and cube poses, so it recovers when the
cube slips sideways, when a human or a policy moved the arm, and when it takes over mid-episode. The plan is a
polyline of waypoints walked at a fixed speed from the current TCP:
- pushing: the TCP is behind the cube on the cube→goal line and low → slide along the line until the cube's
  centre reaches the goal (small lateral offsets are corrected on the way);
- otherwise: rise clear of the cube if low and near it, travel high to above the contact point behind the cube,
  descend to pushing height.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from deploy.policies.base import Policy, PolicyMetadata, register
from deploy.sensing.observation import Observation
from deploy.sim import scene

TOOL_DOWN_XYZW = np.array([1.0, 0.0, 0.0, 0.0])  # 180 deg about x: the TCP z axis points at the table
DESCEND_RADIUS_M = 0.015  # a TCP this close (xy) to the contact point goes straight down to it


@dataclasses.dataclass(frozen=True)
class PushExpertConfig:
    push_height_m: float = 0.025  # TCP height while pushing (cube centre is at 0.02)
    travel_height_m: float = 0.10  # TCP height when moving over the cube
    contact_offset_m: float = 0.04  # TCP distance behind the cube centre when pushing (half cube + finger)
    travel_speed_m_s: float = 0.2
    push_speed_m_s: float = 0.08
    aligned_lateral_m: float = 0.02  # TCP this close to the cube→goal line counts as behind the cube
    clearance_m: float = 0.08  # within this xy distance of the cube a low TCP rises before travelling
    overshoot_m: float = 0.01  # push the cube centre this far past the goal centre along the line
    gripper_width_m: float = 0.0  # closed fingers make a narrow, stiff pusher


@register("push_expert")
class PushExpert(Policy):
    def __init__(self, dt_s: float = 0.05, horizon: int = 16, **config):
        self.metadata = PolicyMetadata(action_space="cartesian", dt_s=dt_s, horizon=horizon,
                                       state_keys=("ee_pose", "gripper_width", "cube_pose"))
        self.config = PushExpertConfig(**config)
        self.weight_version = "scripted-push-expert"

    def predict_chunk(self, observation: Observation, committed_prefix=None) -> np.ndarray:
        tcp = np.asarray(observation["ee_pose"], dtype=float)[:3]
        cube = np.asarray(observation["cube_pose"], dtype=float)[:3]
        path = np.vstack([tcp, self.waypoints(tcp, cube)])  # (W + 1, 3)
        speed = self.config.push_speed_m_s if self.pushing(tcp, cube) else self.config.travel_speed_m_s
        distances = speed * self.metadata.dt_s * np.arange(1, self.metadata.horizon + 1)  # (H,)
        actions = np.empty((self.metadata.horizon, 8))
        actions[:, 0:3] = walk(path, distances)
        actions[:, 3:7] = TOOL_DOWN_XYZW
        actions[:, 7] = self.config.gripper_width_m
        return actions

    def line(self, cube: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Unit push direction (xy) from the cube to the goal, and the contact point behind the cube (xyz)."""
        to_goal = scene.GOAL_CENTER_M - cube[:2]
        direction = to_goal / max(np.linalg.norm(to_goal), 1e-6)
        contact = np.append(cube[:2] - self.config.contact_offset_m * direction, self.config.push_height_m)
        return direction, contact

    def pushing(self, tcp: np.ndarray, cube: np.ndarray) -> bool:
        """TCP low and behind the cube, close to the cube→goal line."""
        direction, contact = self.line(cube)
        offset = tcp[:2] - contact[:2]
        along = offset @ direction
        lateral = abs(offset @ np.array([-direction[1], direction[0]]))
        low = tcp[2] < self.config.push_height_m + 0.015
        return bool(low and lateral < self.config.aligned_lateral_m and -0.03 < along < 0.02)

    def waypoints(self, tcp: np.ndarray, cube: np.ndarray) -> np.ndarray:
        """(W, 3) the rest of the plan after the current TCP."""
        cfg = self.config
        direction, contact = self.line(cube)
        if self.pushing(tcp, cube):  # back onto the line where the TCP is, then along it
            on_line = contact[:2] + ((tcp[:2] - contact[:2]) @ direction) * direction
            end_xy = scene.GOAL_CENTER_M + (cfg.overshoot_m - cfg.contact_offset_m) * direction
            return np.array([np.append(on_line, cfg.push_height_m), np.append(end_xy, cfg.push_height_m)])
        if np.linalg.norm(tcp[:2] - contact[:2]) < DESCEND_RADIUS_M:  # right above the contact point
            return contact[None]
        points = []
        near_cube = np.linalg.norm(tcp[:2] - cube[:2]) < cfg.clearance_m
        if tcp[2] < cfg.travel_height_m - 0.01 and near_cube:
            points.append(np.append(tcp[:2], cfg.travel_height_m))
        points += [np.append(contact[:2], cfg.travel_height_m), contact]
        return np.array(points)


def walk(path: np.ndarray, distances: np.ndarray) -> np.ndarray:
    """Points at arc lengths `distances` (N,) along the polyline `path` (W, 3), stopping at its end -> (N, 3)."""
    lengths = np.linalg.norm(np.diff(path, axis=0), axis=1)  # (W - 1,)
    arc = np.concatenate([[0.0], np.cumsum(lengths)])  # (W,)
    if arc[-1] < 1e-9:
        return np.tile(path[-1], (len(distances), 1))
    clipped = np.minimum(distances, arc[-1])
    return np.stack([np.interp(clipped, arc, path[:, k]) for k in range(3)], axis=1)
