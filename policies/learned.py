"""What the learned policies share: input layout, observation -> tensors, the observation encoder, and the
`Policy` plumbing (normalisation, inference mode, the weight lock used by hot swaps).

`batch_from_observations` is the one place observations become tensors, for inference and for training
batches built from logged observations alike, so the two can never disagree.
"""
from __future__ import annotations

import abc
import contextlib
import dataclasses
import threading
from typing import ClassVar, Sequence

import numpy as np
import torch
from torch import nn

from deploy.errors import ConfigError, DeployError
from deploy.policies.base import Policy, PolicyMetadata
from deploy.policies.normalization import Normalizer
from deploy.policies.vision import ImageEncoder, resize_images
from deploy.sensing.observation import Observation

ACTION_DIM = 8  # cartesian [x y z qx qy qz qw gripper_m] or joint [q1..q7 gripper_m]
STATE_DIMS = {"ee_pose": 7, "gripper_width": 1, "joint_positions": 7, "cube_pose": 7}  # cube: privileged sim state
QUATERNION_OFFSET = {"ee_pose": 3, "cube_pose": 3}  # state keys holding a quaternion [qx qy qz qw] at this offset


def camera_key(name: str) -> str:
    """Observation key of camera `name` (as filled by the policy node)."""
    return f"camera {name}"


def state_layout(state_keys: Sequence[str]) -> tuple[int, tuple[slice, ...]]:
    """-> (state dim S, quaternion slices in the concatenated state vector)."""
    dim, quaternions = 0, []
    for key in state_keys:
        if key not in STATE_DIMS:
            raise ConfigError(f"state key '{key}' is not one of {sorted(STATE_DIMS)}")
        if key in QUATERNION_OFFSET:
            quaternions.append(slice(dim + QUATERNION_OFFSET[key], dim + QUATERNION_OFFSET[key] + 4))
        dim += STATE_DIMS[key]
    return dim, tuple(quaternions)


def action_quaternions(action_space: str) -> tuple[slice, ...]:
    return (slice(3, 7),) if action_space == "cartesian" else ()


def batch_from_observations(observations: Sequence[Observation], metadata: PolicyMetadata) -> dict[str, torch.Tensor]:
    """-> {"images": (B, C, 3, h, w) float in [0, 1], "state": (B, S) float32, raw units}."""
    images, states = [], []
    for obs in observations:
        missing = [k for k in [camera_key(c) for c in metadata.image_keys] + list(metadata.state_keys)
                   if k not in obs.values]
        if missing:
            raise DeployError(f"observation lacks {missing} (policy reads cameras {list(metadata.image_keys)} "
                              f"and state {list(metadata.state_keys)}; it has {sorted(obs.values)})")
        for key in metadata.state_keys:
            if np.shape(obs[key]) != (STATE_DIMS[key],):
                raise DeployError(f"observation '{key}' has shape {np.shape(obs[key])}, expected ({STATE_DIMS[key]},)")
        states.append(np.concatenate([np.asarray(obs[k], dtype=np.float32) for k in metadata.state_keys]))
        for name in metadata.image_keys:
            image = np.asarray(obs[camera_key(name)])
            if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
                raise DeployError(f"observation '{camera_key(name)}' must be HxWx3 uint8 RGB, "
                                  f"got {image.shape} {image.dtype}")
            images.append(resize_images(torch.from_numpy(image)[None], metadata.image_size_hw)[0])
    b, c = len(observations), len(metadata.image_keys)
    h, w = metadata.image_size_hw
    image_batch = torch.stack(images).unflatten(0, (b, c)) if c else torch.zeros(b, 0, 3, h, w)
    return {"images": image_batch, "state": torch.from_numpy(np.stack(states))}


@dataclasses.dataclass
class LearnedPolicyConfig:
    """Hyper-parameters shared by the learned policies (the trunk that turns observations into tokens)."""

    d_model: int = 128  # token width
    n_heads: int = 4
    dim_feedforward: int = 512
    dropout: float = 0.1  # train time only; inference always runs in eval mode
    vision_channels: tuple[int, ...] = (32, 32, 64, 64)  # CNN widths; stride 2 on every other layer
    n_keypoints: int = 32  # spatial-softmax keypoints per camera
    seed: int = 0  # seeds weight initialisation and inference noise

    def __post_init__(self):
        self.vision_channels = tuple(self.vision_channels)
        if self.d_model < 1 or self.n_heads < 1 or self.d_model % self.n_heads:
            raise ConfigError(f"d_model ({self.d_model}) must be a positive multiple of n_heads ({self.n_heads})")
        if self.dim_feedforward < 1:
            raise ConfigError(f"dim_feedforward ({self.dim_feedforward}) must be >= 1")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout ({self.dropout}) must be in [0, 1)")
        if not self.vision_channels or min(self.vision_channels) < 1:
            raise ConfigError(f"vision_channels ({self.vision_channels}) must be a non-empty list of widths >= 1")
        if self.n_keypoints < 1:
            raise ConfigError(f"n_keypoints ({self.n_keypoints}) must be >= 1")


class ObservationEncoder(nn.Module):
    """images (B, C, 3, h, w) + normalised state (B, S) -> tokens (B, 1 + C, D): state first, then cameras."""

    def __init__(self, config: LearnedPolicyConfig, n_cameras: int, state_dim: int):
        super().__init__()
        self.images = ImageEncoder(config.vision_channels, config.n_keypoints, config.d_model) if n_cameras else None
        self.state = nn.Linear(state_dim, config.d_model)
        self.position = nn.Parameter(torch.randn(1 + n_cameras, config.d_model) * 0.02)  # which token is which

    def forward(self, images: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        tokens = [self.state(state)[:, None]]  # (B, 1, D)
        if self.images is not None:
            tokens.append(self.images(images))  # (B, C, D)
        return torch.cat(tokens, dim=1) + self.position  # (B, 1 + C, D)


@contextlib.contextmanager
def seeded(seed: int):
    """Deterministic weight initialisation without disturbing the caller's global RNG."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


class LearnedPolicy(nn.Module, Policy):
    """A torch policy behind the `Policy` interface; subclasses implement `_sample` and `loss`."""

    config_class: ClassVar[type[LearnedPolicyConfig]]

    def __init__(self, config: LearnedPolicyConfig, metadata: PolicyMetadata):
        super().__init__()
        if metadata.image_keys and min(metadata.image_size_hw) < 8:
            raise ConfigError(f"image_size_hw {metadata.image_size_hw} must be at least 8x8 when cameras are used")
        self.config = config
        self.metadata = metadata
        self.weight_version = "init"
        self.weights_lock = threading.Lock()  # held by inference and by weight swaps: swaps land between chunks
        state_dim, state_quaternions = state_layout(metadata.state_keys)
        self.normalizer = Normalizer(state_dim, state_quaternions, ACTION_DIM, action_quaternions(metadata.action_space))
        self.observation_encoder = ObservationEncoder(config, len(metadata.image_keys), state_dim)

    def encode(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Raw batch -> observation tokens (B, 1 + C, D)."""
        return self.observation_encoder(batch["images"], self.normalizer.state.normalize(batch["state"]))

    def predict_chunk(self, observation: Observation, committed_prefix: np.ndarray | None = None) -> np.ndarray:
        prefix = None
        if committed_prefix is not None:
            prefix = np.asarray(committed_prefix, dtype=np.float32)
            if prefix.ndim != 2 or prefix.shape[1] != ACTION_DIM or prefix.shape[0] > self.metadata.horizon:
                raise DeployError(f"committed_prefix has shape {prefix.shape}, expected (d <= "
                                  f"{self.metadata.horizon}, {ACTION_DIM})")
        batch = batch_from_observations([observation], self.metadata)
        was_training = self.training  # inference always runs in eval mode; a trainer's mode is restored
        with self.weights_lock, torch.inference_mode():
            if was_training:
                self.eval()
            actions = self._sample(batch, None if prefix is None else torch.from_numpy(prefix))  # (1, H, A)
            actions = self.normalizer.action.unnormalize(actions)[0]  # (H, A)
            if was_training:
                self.train()
        return actions.numpy().astype(np.float64)

    @abc.abstractmethod
    def _sample(self, batch: dict[str, torch.Tensor], prefix: torch.Tensor | None) -> torch.Tensor:
        """-> normalised actions (1, H, A); `prefix` (d, A) raw, for policies that inpaint."""

    @abc.abstractmethod
    def loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Training loss on a raw batch: `batch_from_observations` keys + "actions" (B, H, A)."""


def transformer_encoder(config: LearnedPolicyConfig, n_layers: int) -> nn.TransformerEncoder:
    """Pre-norm encoder stack shared by the chunk policies."""
    layer = nn.TransformerEncoderLayer(config.d_model, config.n_heads, config.dim_feedforward, config.dropout,
                                       batch_first=True, norm_first=True)
    return nn.TransformerEncoder(layer, n_layers, norm=nn.LayerNorm(config.d_model), enable_nested_tensor=False)


def transformer_decoder(config: LearnedPolicyConfig, n_layers: int) -> nn.TransformerDecoder:
    """Pre-norm decoder stack (chunk queries attend to the observation tokens)."""
    layer = nn.TransformerDecoderLayer(config.d_model, config.n_heads, config.dim_feedforward, config.dropout,
                                       batch_first=True, norm_first=True)
    return nn.TransformerDecoder(layer, n_layers, norm=nn.LayerNorm(config.d_model))
