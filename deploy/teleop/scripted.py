"""The scripted operator: stands in for a human in tests and benchmarks.

It watches every chunk the policy proposes and compares it with what a scripted expert (a `Policy` with
privileged state, e.g. `push_expert` with the cube pose) would do from the same state. When the policy drifts
(mean TCP distance over the leading part of the chunk > `takeover_distance_m`) it takes over and the expert's
chunks are executed; it hands back once the policy's proposals agree again (< `handback_distance_m`) for
`handback_agree_s` without a break.
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np

from deploy.control.chunks import Chunk
from deploy.errors import ConfigError
from deploy.sensing.observation import Observation
from deploy.teleop.authority import Operator


@dataclasses.dataclass
class ScriptedOperatorConfig:
    """When the scripted operator takes over and hands back."""

    expert: str = "push_expert"  # registered policy name of the scripted expert
    takeover_distance_m: float = 0.03  # policy chunk this far from the expert's (mean TCP distance) -> take over [m]
    handback_distance_m: float = 0.015  # closer than this ... [m]
    handback_agree_s: float = 0.5  # ... for this long without a break -> hand back [s]
    compared_fraction: float = 0.5  # leading fraction of each policy chunk that is compared
    chunk_rate_hz: float = 10.0  # expert chunks per second while in authority [Hz]

    def __post_init__(self):
        if not 0.0 < self.handback_distance_m <= self.takeover_distance_m <= 1.0:
            raise ConfigError(f"scripted: need 0 < handback_distance_m ({self.handback_distance_m}) <= "
                              f"takeover_distance_m ({self.takeover_distance_m}) <= 1 m")
        if not 0.0 <= self.handback_agree_s <= 10.0:
            raise ConfigError(f"scripted.handback_agree_s {self.handback_agree_s} outside [0, 10]")
        if not 0.0 < self.compared_fraction <= 1.0:
            raise ConfigError(f"scripted.compared_fraction {self.compared_fraction} outside (0, 1]")
        if not 0.5 <= self.chunk_rate_hz <= 100.0:
            raise ConfigError(f"scripted.chunk_rate_hz {self.chunk_rate_hz} outside [0.5, 100]")


def mean_tcp_distance_m(chunk: Chunk, reference: Chunk, fraction: float) -> float:
    """Mean TCP position distance between the leading `fraction` of `chunk`'s points and `reference`
    interpolated at the same absolute times (held at its ends) [m]."""
    count = max(1, math.ceil(fraction * len(chunk.times_s)))
    times_s = chunk.stamp_s + chunk.times_s[:count]  # (n,)
    reference_times_s = reference.stamp_s + reference.times_s  # (H,)
    reference_xyz = np.stack([np.interp(times_s, reference_times_s, reference.actions[:, k]) for k in range(3)],
                             axis=1)  # (n, 3)
    return float(np.linalg.norm(chunk.actions[:count, :3] - reference_xyz, axis=1).mean())


class ScriptedOperator(Operator):
    def __init__(self, config: ScriptedOperatorConfig, **expert_params):
        from deploy.policies import expert  # noqa: F401  (registers the scripted experts)
        from deploy.policies.base import make_policy

        self.config, self.name = config, f"scripted operator (expert '{config.expert}')"
        self.expert = make_policy(config.expert, **expert_params)
        if self.expert.metadata.action_space != "cartesian":
            raise ConfigError(f"scripted: expert '{config.expert}' must produce cartesian chunks")
        self.state_keys = tuple(self.expert.metadata.state_keys)
        self.chunk_period_s = 1.0 / config.chunk_rate_hz
        self.last_distance_m = math.nan  # of the last judged policy chunk, for diagnostics
        self._wants = False
        self._agree_since_s: float | None = None
        self._commanded_stamp_s = math.nan

    def expert_chunk(self, observation: Observation) -> Chunk:
        meta = self.expert.metadata
        return Chunk(stamp_s=observation.stamp_s, times_s=meta.dt_s * np.arange(1, meta.horizon + 1),
                     actions=self.expert.predict_chunk(observation), weight_version=self.expert.weight_version)

    def judge(self, chunk: Chunk, observation: Observation | None, now_s: float) -> None:
        if observation is None:
            return
        cfg = self.config
        self.last_distance_m = distance_m = mean_tcp_distance_m(chunk, self.expert_chunk(observation),
                                                                cfg.compared_fraction)
        if not self._wants:
            self._wants, self._agree_since_s = distance_m > cfg.takeover_distance_m, None
        elif distance_m < cfg.handback_distance_m:
            self._agree_since_s = now_s if self._agree_since_s is None else self._agree_since_s
            self._wants = now_s - self._agree_since_s < cfg.handback_agree_s
        else:
            self._agree_since_s = None

    def step(self, now_s: float, observation: Observation | None) -> tuple[str, ...]:
        return ()

    def status(self) -> str:
        return f"the policy's last chunk was {100 * self.last_distance_m:.1f} cm from the expert's"

    def wants_authority(self) -> bool:
        return self._wants

    def forget(self) -> None:
        self._wants, self._agree_since_s = False, None

    def command(self, now_s: float, observation: Observation | None) -> Chunk | None:
        """While in authority the expert's chunk IS the human action (one per fresh observation)."""
        if observation is None or observation.stamp_s == self._commanded_stamp_s:
            return None
        self._commanded_stamp_s = observation.stamp_s
        return self.expert_chunk(observation)
