"""ACT (Action Chunking with Transformers, Zhao et al. 2023): observation tokens -> transformer
encoder/decoder -> a chunk of H actions, with an optional CVAE latent over the chunk.

The CVAE lets training explain multi-modal demonstrations with a style latent z; at inference z = 0 (the
prior's mean), so the policy is deterministic and `predict_chunk` ignores `committed_prefix`.
"""
from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from torch import nn

from deploy.errors import ConfigError
from deploy.policies.base import PolicyMetadata, register
from deploy.policies.learned import (ACTION_DIM, LearnedPolicy, LearnedPolicyConfig, seeded, transformer_decoder,
                                     transformer_encoder)


@dataclasses.dataclass
class ACTConfig(LearnedPolicyConfig):
    n_encoder_layers: int = 2
    n_decoder_layers: int = 2
    use_vae: bool = True  # train-time CVAE encoder over the action chunk
    latent_dim: int = 32
    n_vae_encoder_layers: int = 2
    kl_weight: float = 10.0  # beta in L1 + beta * KL

    def __post_init__(self):
        super().__post_init__()
        for name in ("n_encoder_layers", "n_decoder_layers", "latent_dim", "n_vae_encoder_layers"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} ({getattr(self, name)}) must be >= 1")
        if self.kl_weight < 0:
            raise ConfigError(f"kl_weight ({self.kl_weight}) must be >= 0")


@register("act")
class ACTPolicy(LearnedPolicy):
    config_class = ACTConfig

    def __init__(self, config: ACTConfig, metadata: PolicyMetadata):
        with seeded(config.seed):
            super().__init__(config, metadata)
            d, h = config.d_model, metadata.horizon
            self.latent_in = nn.Linear(config.latent_dim, d)
            self.encoder = transformer_encoder(config, config.n_encoder_layers)
            self.encoder_position = nn.Parameter(torch.randn(1, d) * 0.02)  # the latent token's slot
            self.decoder = transformer_decoder(config, config.n_decoder_layers)
            self.queries = nn.Parameter(torch.randn(h, d) * 0.02)  # one per chunk step
            self.action_head = nn.Linear(d, ACTION_DIM)
            if config.use_vae:
                self.vae_cls = nn.Parameter(torch.randn(1, 1, d) * 0.02)
                self.vae_state = nn.Linear(self.normalizer.state.mean.numel(), d)
                self.vae_action = nn.Linear(ACTION_DIM, d)
                self.vae_position = nn.Parameter(torch.randn(2 + h, d) * 0.02)
                self.vae_encoder = transformer_encoder(config, config.n_vae_encoder_layers)
                self.vae_out = nn.Linear(d, 2 * config.latent_dim)
        self.eval()

    def _decode(self, observation_tokens: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """tokens (B, N, D), z (B, L) -> normalised actions (B, H, A)."""
        latent = (self.latent_in(z) + self.encoder_position)[:, None]  # (B, 1, D)
        memory = self.encoder(torch.cat([latent, observation_tokens], dim=1))  # (B, 1 + N, D)
        queries = self.queries.expand(z.shape[0], -1, -1)  # (B, H, D)
        return self.action_head(self.decoder(queries, memory))  # (B, H, A)

    def _sample(self, batch, prefix):
        tokens = self.encode(batch)  # (1, N, D)
        return self._decode(tokens, torch.zeros(tokens.shape[0], self.config.latent_dim))

    def _posterior(self, state: torch.Tensor, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """normalised state (B, S), actions (B, H, A) -> mu, log_var (B, L) of q(z | state, chunk)."""
        b = actions.shape[0]
        tokens = torch.cat([self.vae_cls.expand(b, -1, -1), self.vae_state(state)[:, None],
                            self.vae_action(actions)], dim=1) + self.vae_position  # (B, 2 + H, D)
        mu, log_var = self.vae_out(self.vae_encoder(tokens)[:, 0]).chunk(2, dim=-1)
        return mu, log_var

    def loss(self, batch):
        """L1 on normalised actions + kl_weight * KL(q(z | s, a) || N(0, I))."""
        actions = self.normalizer.action.normalize(batch["actions"])  # (B, H, A)
        tokens = self.encode(batch)
        if self.config.use_vae:
            mu, log_var = self._posterior(self.normalizer.state.normalize(batch["state"]), actions)
            z = mu + torch.randn_like(mu) * (0.5 * log_var).exp()
            kl = (-0.5 * (1 + log_var - mu.pow(2) - log_var.exp())).sum(-1).mean()
        else:
            z, kl = torch.zeros(actions.shape[0], self.config.latent_dim), torch.zeros(())
        return F.l1_loss(self._decode(tokens, z), actions) + self.config.kl_weight * kl
