"""The one `Policy` interface and the registry the policy node picks a policy from by name."""
from __future__ import annotations

import abc
import dataclasses

import numpy as np

from deploy.errors import ConfigError
from deploy.registry import Registry
from deploy.sensing.observation import Observation


@dataclasses.dataclass(frozen=True)
class PolicyMetadata:
    """What the node needs to feed a policy and to time its chunks."""

    action_space: str  # "cartesian" (x y z qx qy qz qw gripper) or "joint" (q1..q7 gripper)
    dt_s: float  # spacing of chunk points; point i is meant for stamp + (i + 1) * dt_s
    horizon: int  # H, points per chunk
    image_keys: tuple[str, ...] = ()  # camera names the policy reads
    image_size_hw: tuple[int, int] = (0, 0)
    state_keys: tuple[str, ...] = ("ee_pose",)

    def __post_init__(self):
        if self.action_space not in ("cartesian", "joint"):
            raise ConfigError(f"action_space '{self.action_space}' must be 'cartesian' or 'joint'")
        if not self.dt_s > 0 or self.horizon < 1:
            raise ConfigError(f"dt_s ({self.dt_s}) must be > 0 and horizon ({self.horizon}) >= 1")


class Policy(abc.ABC):
    metadata: PolicyMetadata
    weight_version: str = "none"

    def reset(self) -> None:
        """Forget episode state (latents, histories)."""

    @abc.abstractmethod
    def predict_chunk(self, observation: Observation, committed_prefix: np.ndarray | None = None) -> np.ndarray:
        """-> actions (H, A) for times observation.stamp_s + (i + 1) * dt_s.

        `committed_prefix` (d, A): points the controller will execute regardless (RTC); policies that can
        inpaint keep them, others ignore them.
        """


POLICIES: Registry[Policy] = Registry("policy")
register = POLICIES.register
make_policy = POLICIES.make
