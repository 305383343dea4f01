"""When each message of a replay is due: recorded timing relative to the first played log time, scaled by
the rate, with /clock ticks in between, repeated (and shifted in time) when looping.

Pure functions of bag time; the replay node sleeps until each event's wall offset and publishes it.
"""
from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Callable, Collection, Iterable, Iterator

from deploy.bags.store import with_stamp_shifted
from deploy.errors import ConfigError

LOOP_GAP_NS = 100_000_000  # a looped bag resumes this long after its last message (stamps keep increasing)
MAX_RATE = 1000.0


@dataclasses.dataclass(frozen=True)
class ReplaySchedule:
    """Bag time <-> wall offset since the replay began: due(t) = (t - first_ns) / rate."""

    first_ns: int  # log time of the first message played (bag start + start offset)
    last_ns: int  # log time of the bag's last message
    rate: float = 1.0

    def __post_init__(self):
        if not (math.isfinite(self.rate) and 0.0 < self.rate <= MAX_RATE):
            raise ConfigError(f"rate {self.rate} must be in (0, {MAX_RATE:g}]")

    @classmethod
    def for_bag(cls, start_ns: int, end_ns: int, start_offset_s: float, rate: float) -> ReplaySchedule:
        """The schedule playing a bag spanning [start_ns, end_ns] from start_offset_s on."""
        duration_s = (end_ns - start_ns) * 1e-9
        if not (math.isfinite(start_offset_s) and 0.0 <= start_offset_s <= duration_s):
            raise ConfigError(f"start offset {start_offset_s:g} s is outside the bag (duration {duration_s:.3f} s)")
        return cls(start_ns + round(start_offset_s * 1e9), end_ns, rate)

    def loop_shift_ns(self, loop: int) -> int:
        """How far bag times (and stamps) move in the loop-th pass (0 for the first)."""
        return loop * (self.last_ns - self.first_ns + LOOP_GAP_NS)

    def due_s(self, bag_ns: int) -> float:
        return (bag_ns - self.first_ns) * 1e-9 / self.rate

    def bag_ns(self, wall_s: float) -> int:
        return self.first_ns + round(wall_s * self.rate * 1e9)


def passes(read: Callable[[], Iterable[tuple[str, int, bytes]]], schedule: ReplaySchedule, loop: bool,
           stamped: Collection[str]) -> Iterator[tuple[str, int, bytes]]:
    """The messages `read()` yields (topic, log time [ns], data), once or — looping — forever, each pass
    shifted in time by `schedule.loop_shift_ns`: log times and the stamps of topics in `stamped`, so sim-time
    nodes see time go on instead of jumping back (and do not drop the repeats as out of order)."""
    for loop_index in itertools.count() if loop else (0,):
        shift_ns = schedule.loop_shift_ns(loop_index)
        for topic, log_ns, data in read():
            if shift_ns and topic in stamped:
                data = with_stamp_shifted(data, shift_ns)
            yield topic, log_ns + shift_ns, data


def timeline(messages: Iterable[tuple[str, int, bytes]], schedule: ReplaySchedule,
             clock_period_s: float | None) -> Iterator[tuple[float, str | None, int, bytes | None]]:
    """(due wall offset [s], topic, bag time [ns], data) for each message, with /clock events (topic None,
    data None) every clock_period_s of wall time in between (none if clock_period_s is None) — the first
    clock event at the first message's time, so sim-time nodes have a clock before any data."""
    next_clock_s = 0.0
    for topic, bag_ns, data in messages:
        due_s = schedule.due_s(bag_ns)
        while clock_period_s is not None and next_clock_s <= due_s:
            yield next_clock_s, None, schedule.bag_ns(next_clock_s), None
            next_clock_s += clock_period_s
        yield due_s, topic, bag_ns, data


__all__ = ["LOOP_GAP_NS", "ReplaySchedule", "passes", "timeline"]
