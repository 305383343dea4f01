"""A flow-matching chunk policy (rectified flow): learn a velocity v(x_t, t, obs) that carries noise to
action chunks along straight lines x_t = (1 - t) * noise + t * actions; sample with a few Euler steps.

Prefix inpainting (for RTC-style frozen prefixes): at every Euler step the first d points of x_t are
overwritten with where the straight path to the committed prefix is at time t, (1 - t) * noise + t * prefix,
using the same initial noise; the network then shapes the free points around them, and at t = 1 the
prefix is exactly the committed one. (This is the replacement trick, not RTC's guided inpainting.)
"""
from __future__ import annotations

import dataclasses
import math

import torch
import torch.nn.functional as F
from torch import nn

from deploy.errors import ConfigError
from deploy.policies.base import PolicyMetadata, register
from deploy.policies.learned import (ACTION_DIM, LearnedPolicy, LearnedPolicyConfig, seeded, transformer_decoder,
                                     transformer_encoder)


@dataclasses.dataclass
class FlowConfig(LearnedPolicyConfig):
    n_encoder_layers: int = 1  # over observation tokens, once per chunk
    n_decoder_layers: int = 2  # velocity network over the chunk, once per Euler step
    n_steps: int = 8  # Euler steps at inference

    def __post_init__(self):
        super().__post_init__()
        for name in ("n_encoder_layers", "n_decoder_layers"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} ({getattr(self, name)}) must be >= 1")
        if not 1 <= self.n_steps <= 10:
            raise ConfigError(f"n_steps ({self.n_steps}) must be in [1, 10]")


def time_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """t (B,) in [0, 1] -> sinusoidal features (B, dim)."""
    freqs = torch.exp(-math.log(10_000.0) * torch.arange(dim // 2) / (dim // 2))  # (dim/2,)
    angles = 1000.0 * t[:, None] * freqs  # (B, dim/2)
    return torch.cat([angles.sin(), angles.cos()], dim=-1)


@register("flow")
class FlowPolicy(LearnedPolicy):
    config_class = FlowConfig

    def __init__(self, config: FlowConfig, metadata: PolicyMetadata):
        with seeded(config.seed):
            super().__init__(config, metadata)
            d = config.d_model
            self.encoder = transformer_encoder(config, config.n_encoder_layers)
            self.time_mlp = nn.Sequential(nn.Linear(d, d), nn.SiLU(), nn.Linear(d, d))
            self.action_in = nn.Linear(ACTION_DIM, d)
            self.chunk_position = nn.Parameter(torch.randn(metadata.horizon, d) * 0.02)
            self.decoder = transformer_decoder(config, config.n_decoder_layers)
            self.velocity_out = nn.Linear(d, ACTION_DIM)
        self.generator = torch.Generator().manual_seed(config.seed)
        self.eval()

    def reset(self) -> None:
        """Re-seed the sampling noise: the same observations after a reset give the same chunks."""
        self.generator.manual_seed(self.config.seed)

    def velocity(self, x_t: torch.Tensor, t: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
        """x_t (B, H, A), t (B,), memory (B, N, D) -> v (B, H, A) in normalised action units."""
        time = self.time_mlp(time_embedding(t, self.config.d_model))[:, None]  # (B, 1, D)
        tokens = self.action_in(x_t) + self.chunk_position + time  # (B, H, D)
        return self.velocity_out(self.decoder(tokens, torch.cat([memory, time], dim=1)))

    def _sample(self, batch, prefix):
        memory = self.encoder(self.encode(batch))  # (1, N, D)
        noise = torch.randn(1, self.metadata.horizon, ACTION_DIM, generator=self.generator)  # (1, H, A)
        x, d = noise.clone(), 0
        if prefix is not None:
            d, prefix = prefix.shape[0], self.normalizer.action.normalize(prefix)[None]  # (1, d, A)
        n = self.config.n_steps
        for k in range(n):
            t = k / n
            if d:
                x[:, :d] = (1 - t) * noise[:, :d] + t * prefix
            x = x + self.velocity(x, torch.full((1,), t), memory) / n
        if d:
            x[:, :d] = prefix
        return x

    def loss(self, batch):
        """Conditional flow matching: MSE between v(x_t, t) and the straight-line velocity actions - noise."""
        actions = self.normalizer.action.normalize(batch["actions"])  # (B, H, A)
        noise = torch.randn_like(actions)
        t = torch.rand(actions.shape[0])  # (B,)
        x_t = (1 - t[:, None, None]) * noise + t[:, None, None] * actions
        return F.mse_loss(self.velocity(x_t, t, self.encoder(self.encode(batch))), actions - noise)
