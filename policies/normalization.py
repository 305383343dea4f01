"""Mean/std normalisation of state and actions, stored as buffers so the stats travel inside the checkpoint.

Safetensors keys: `normalizer.state.mean`, `normalizer.state.std`, `normalizer.action.mean`, `normalizer.action.std`.
Quaternion components pass through unscaled: they already lie in [-1, 1], and a dataset whose orientation
barely varies would give them a near-zero std that amplifies noise; after un-normalising they are
re-normalised to unit length so the controller never receives an invalid rotation.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from deploy.errors import ConfigError

MIN_STD = 1e-3  # a constant dimension (e.g. a gripper never moved) is centred, not blown up


class FeatureNormalizer(nn.Module):
    """Normalises the last axis of (..., D) tensors; `quaternion_slices` are left unscaled."""

    def __init__(self, dim: int, quaternion_slices: tuple[slice, ...] = ()):
        super().__init__()
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("std", torch.ones(dim))
        self.quaternion_slices = quaternion_slices

    def fit(self, data: np.ndarray, name: str) -> None:
        """Set the stats from a dataset (..., D) of raw values."""
        data = np.asarray(data, dtype=np.float64)
        if data.ndim < 1 or data.shape[-1] != self.mean.numel() or data.size == 0:
            raise ConfigError(f"normalizer.{name}: data of shape {data.shape} does not have {self.mean.numel()} "
                              "features in its last axis")
        if not np.isfinite(data).all():
            raise ConfigError(f"normalizer.{name}: data contains NaN or inf")
        flat = data.reshape(-1, data.shape[-1])  # (N, D)
        mean, std = flat.mean(axis=0), np.maximum(flat.std(axis=0), MIN_STD)
        for s in self.quaternion_slices:
            mean[s], std[s] = 0.0, 1.0
        self.mean.copy_(torch.from_numpy(mean))
        self.std.copy_(torch.from_numpy(std))

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    def unnormalize(self, x: torch.Tensor) -> torch.Tensor:
        """Inverse of `normalize`, quaternions re-normalised to unit length."""
        x = x * self.std + self.mean
        for s in self.quaternion_slices:
            q = x[..., s]
            x = torch.cat([x[..., :s.start], q / q.norm(dim=-1, keepdim=True).clamp_min(1e-8), x[..., s.stop:]], -1)
        return x


class Normalizer(nn.Module):
    """State and action normalisers of one policy."""

    def __init__(self, state_dim: int, state_quaternions: tuple[slice, ...],
                 action_dim: int, action_quaternions: tuple[slice, ...]):
        super().__init__()
        self.state = FeatureNormalizer(state_dim, state_quaternions)
        self.action = FeatureNormalizer(action_dim, action_quaternions)

    def fit(self, states: np.ndarray, actions: np.ndarray) -> None:
        """states (N, S), actions (N, A) or (N, H, A), raw units."""
        self.state.fit(states, "state")
        self.action.fit(actions, "action")
