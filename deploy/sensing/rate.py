"""Decimation of a sample stream to a lower rate by the samples' own stamps.

A republisher that passes every sample whose stamp reaches the next slot of a fixed grid publishes at exactly
the configured rate in the samples' clock (wall or sim time), however late its own callbacks run, and adds no
waiting: a sample goes out when it arrives. A wall-clock timer would instead lose slots whenever the process
is descheduled and would add up to one period of sample age.
"""
from __future__ import annotations

from deploy.errors import ConfigError

STAMP_TOLERANCE_S = 1e-6  # stamps are float seconds: a sample this close before its slot counts as on time


class StampDecimator:
    """Accepts the first sample at or after each slot of a grid of period 1/rate_hz anchored at the first
    sample. After a gap in the input, the missed slots are skipped (not caught up); a stamp earlier than the
    last accepted one (time jumped back, e.g. a sim reset) starts a new grid."""

    def __init__(self, rate_hz: float):
        if not rate_hz > 0:
            raise ConfigError(f"decimation rate_hz must be positive, got {rate_hz}")
        self.period_s = 1.0 / rate_hz
        self._last_s: float | None = None
        self._next_slot_s = 0.0

    def accept(self, stamp_s: float) -> bool:
        if self._last_s is None or stamp_s < self._last_s:
            self._last_s, self._next_slot_s = stamp_s, stamp_s + self.period_s
            return True
        if stamp_s < self._next_slot_s - STAMP_TOLERANCE_S:
            return False
        slots_passed = int((stamp_s - self._next_slot_s + STAMP_TOLERANCE_S) // self.period_s) + 1
        self._last_s, self._next_slot_s = stamp_s, self._next_slot_s + slots_passed * self.period_s
        return True
