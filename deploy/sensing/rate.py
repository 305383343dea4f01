"""Decimation of a sample stream to a lower rate by the samples' own stamps.

A republisher that passes every sample whose stamp reaches the next slot of a fixed grid publishes at exactly
the configured rate in the samples' clock (wall or sim time), however late its own callbacks run, and adds no
waiting: a sample goes out when it arrives. A wall-clock timer would instead lose slots whenever the process
is descheduled and would add up to one period of sample age.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Any

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


class StampMatcher:
    """Decimates a second stream exactly like the first: passes the side samples whose stamp the first stream's
    decimator accepted, whichever of the two arrives first (two topics published together arrive over DDS in
    either order). Stamps match by equality: the publisher stamps both messages from one sample. Each side
    remembers its last `depth` unmatched stamps, so memory stays bounded when a side sample never gets a
    partner (its stamp was decimated away) or the other stream stops."""

    def __init__(self, depth: int = 100):
        if depth < 1:
            raise ConfigError(f"stamp matcher depth must be at least 1, got {depth}")
        self.depth = depth
        self._accepted: OrderedDict[float, None] = OrderedDict()  # accepted stamps no side sample matched yet
        self._waiting: OrderedDict[float, Any] = OrderedDict()  # side samples whose stamp was not accepted yet

    def accepted(self, stamp_s: float) -> Any | None:
        """The first stream passed a sample stamped `stamp_s`: returns the side sample already waiting for it."""
        if stamp_s in self._waiting:
            return self._waiting.pop(stamp_s)
        self._remember(self._accepted, stamp_s, None)
        return None

    def offer(self, stamp_s: float, sample: Any) -> Any | None:
        """A side sample: returned if its stamp was accepted already, else kept until it is (None now)."""
        if stamp_s in self._accepted:
            del self._accepted[stamp_s]
            return sample
        self._remember(self._waiting, stamp_s, sample)
        return None

    def _remember(self, memory: OrderedDict, stamp_s: float, value: Any) -> None:
        memory[stamp_s] = value
        while len(memory) > self.depth:
            memory.popitem(last=False)
