"""What a replay-test must stay within; kept light (the CLI reads its defaults when building `deploy --help`)."""
from __future__ import annotations

import dataclasses
import math

from deploy.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class Thresholds:
    """Limits a replay must stay within (None = reported, not checked)."""

    max_position_diff_m: float | None = 0.005  # any step of any matched chunk, TCP position
    max_rotation_diff_rad: float | None = 0.05  # any step, TCP orientation
    max_gripper_diff_m: float | None = 0.005  # any step, gripper width
    min_matched_fraction: float | None = 0.5  # of the bag's chunks that were replayed and compared
    max_latency_s: float | None = None  # p99 of the replayed inference latency (wall clock: depends on the machine)
    max_accel_jump_m_s2: float | None = None  # peak TCP acceleration jump at a splice, after blending
    max_safety_trips: int | None = 0  # workspace / orientation / NaN trips and rejected chunks

    def __post_init__(self):
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if value is not None and not (math.isfinite(value) and value >= 0):
                raise ConfigError(f"threshold {field.name} = {value} must be a finite value >= 0")


__all__ = ["Thresholds"]
