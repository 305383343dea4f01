"""Small policies and observations shared by the policy tests (kept tiny so the folder runs in seconds)."""
import numpy as np

from deploy.policies.act import ACTConfig, ACTPolicy
from deploy.policies.base import PolicyMetadata
from deploy.policies.flow import FlowConfig, FlowPolicy
from deploy.sensing.observation import Observation

SMALL = dict(d_model=32, n_heads=2, dim_feedforward=64, vision_channels=(8, 8, 16), n_keypoints=8)
CAMERAS = ("wrist", "front")


def metadata(action_space="cartesian", horizon=8, size_hw=(32, 32)) -> PolicyMetadata:
    return PolicyMetadata(action_space=action_space, dt_s=0.05, horizon=horizon, image_keys=CAMERAS,
                          image_size_hw=size_hw, state_keys=("ee_pose", "gripper_width"))


def make(kind: str, seed: int = 0, action_space="cartesian", **overrides):
    config_cls, policy_cls = {"act": (ACTConfig, ACTPolicy), "flow": (FlowConfig, FlowPolicy)}[kind]
    return policy_cls(config_cls(**{**SMALL, "seed": seed, **overrides}), metadata(action_space))


def observation(seed: int = 0, stamp_s: float = 1.0) -> Observation:
    rng = np.random.default_rng(seed)
    values = {"camera wrist": rng.integers(0, 256, (48, 64, 3), dtype=np.uint8),
              "camera front": rng.integers(0, 256, (32, 32, 3), dtype=np.uint8),
              "ee_pose": np.array([0.45, 0.0, 0.25, 1.0, 0.0, 0.0, 0.0]),
              "gripper_width": np.array([0.04])}
    return Observation(stamp_s=stamp_s, values=values, stamps_s={k: stamp_s for k in values})


def fit_normalizer(policy, seed: int = 0) -> None:
    """Stats from a plausible dataset: TCP near (0.45, 0, 0.25), tool down, gripper 0..0.08 m."""
    rng = np.random.default_rng(seed)
    n, h = 64, policy.metadata.horizon
    actions = np.concatenate([0.45 + 0.05 * rng.standard_normal((n, h, 3)), np.tile([1.0, 0, 0, 0], (n, h, 1)),
                              rng.uniform(0, 0.08, (n, h, 1))], axis=-1)
    states = np.concatenate([actions[:, 0, :7], actions[:, 0, 7:]], axis=-1)
    policy.normalizer.fit(states, actions)
