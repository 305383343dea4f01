"""Replay-test metrics, ROS-free, for Cartesian chunks ([x y z (m), qx qy qz qw, gripper (m)]):

- differences between replayed and recorded chunks matched by stamp, per chunk and per step;
- the reference the controller would execute: the chunks fed to `ChunkExecutor` at their arrival times and
  sampled at 1 kHz, with the peak acceleration jump at each splice (as bench/chunk_smoothness.py measures it);
- the trips `SafetyLayer` would raise on that reference (workspace box, orientation cone, speed, NaN).
"""
from __future__ import annotations

import collections
import dataclasses

import numpy as np

from deploy.control.chunks import CARTESIAN, Chunk, ChunkError, ChunkExecutor, ChunkExecutorConfig
from deploy.control.safety import SafetyConfig, SafetyLayer
from deploy.robots.base import RobotModel

TICK_S = 0.001  # the controller's period
SPLICE_WINDOW_S = 0.1  # an acceleration jump is looked for this long after a splice
POSITION, QUAT, GRIPPER = slice(0, 3), slice(3, 7), 7


@dataclasses.dataclass(frozen=True)
class TimedChunk:
    chunk: Chunk
    stamp_ns: int  # the chunk's header stamp, exactly (chunk.stamp_s is a float)
    arrival_s: float  # when the controller receives it: stamp + inference latency [s]


def quat_angle_rad(a_xyzw: np.ndarray, b_xyzw: np.ndarray) -> np.ndarray:
    """Angle between unit quaternions (..., 4) -> (...) [rad]; q and -q are the same rotation."""
    a = a_xyzw / np.linalg.norm(a_xyzw, axis=-1, keepdims=True)
    b = b_xyzw / np.linalg.norm(b_xyzw, axis=-1, keepdims=True)
    return 2.0 * np.arccos(np.clip(np.abs(np.sum(a * b, axis=-1)), 0.0, 1.0))


@dataclasses.dataclass(frozen=True)
class Differences:
    """Replayed minus recorded, for the chunks whose stamps match; arrays are (M chunks, H steps)."""

    stamps_ns: tuple[int, ...]
    position_m: np.ndarray
    rotation_rad: np.ndarray
    gripper_m: np.ndarray


def differences(recorded: dict[int, Chunk], replayed: dict[int, Chunk]) -> Differences:
    stamps = tuple(sorted(set(recorded) & set(replayed)))
    horizon = min((min(len(recorded[s].actions), len(replayed[s].actions)) for s in stamps), default=0)
    new = np.array([replayed[s].actions[:horizon] for s in stamps]).reshape(len(stamps), horizon, 8)
    old = np.array([recorded[s].actions[:horizon] for s in stamps]).reshape(len(stamps), horizon, 8)
    return Differences(stamps, np.linalg.norm(new[..., POSITION] - old[..., POSITION], axis=-1),
                       quat_angle_rad(new[..., QUAT], old[..., QUAT]), np.abs(new[..., GRIPPER] - old[..., GRIPPER]))


@dataclasses.dataclass(frozen=True)
class Execution:
    """What the controller would have executed: the 1 kHz reference and where each chunk was spliced in."""

    times_s: np.ndarray  # (N,)
    reference: np.ndarray  # (N, 8)
    splice_ticks: tuple[int, ...]  # tick index of each accepted chunk's splice
    splice_stamps_ns: tuple[int, ...]  # the stamp of the chunk spliced there
    rejected: tuple[str, ...]  # chunks the executor refused, with the reason


def execute(chunks: list[TimedChunk], config: ChunkExecutorConfig) -> Execution:
    """Feed `chunks` to a ChunkExecutor at their arrival times, starting from the first chunk's first point
    (the controller is taken to be following the policy already), and sample it every TICK_S until the last
    chunk's last point."""
    chunks = sorted(chunks, key=lambda c: c.arrival_s)
    executor = ChunkExecutor(config, CARTESIAN)
    executor.hold(chunks[0].chunk.actions[0])
    start_s = chunks[0].arrival_s
    end_s = max(c.chunk.stamp_s + c.chunk.times_s[-1] for c in chunks)
    times_s = start_s + TICK_S * np.arange(int(np.ceil((end_s - start_s) / TICK_S)) + 1)
    reference = np.empty((len(times_s), 8))
    splices, stamps, rejected, next_chunk = [], [], [], 0
    for tick, now_s in enumerate(times_s.tolist()):
        while next_chunk < len(chunks) and chunks[next_chunk].arrival_s <= now_s:
            timed = chunks[next_chunk]
            next_chunk += 1
            try:
                executor.submit(timed.chunk, now_s)
            except ChunkError as error:
                rejected.append(f"chunk stamped {timed.stamp_ns} ns: {error}")
                continue
            splices.append(tick)
            stamps.append(timed.stamp_ns)
        reference[tick] = executor.sample(now_s)
    return Execution(times_s, reference, tuple(splices), tuple(stamps), tuple(rejected))


def acceleration_jumps(execution: Execution) -> np.ndarray:
    """Per splice: max |a(t) - a(just before the splice)| over SPLICE_WINDOW_S of the TCP position [m/s²]
    (nan where the window does not fit the reference)."""
    accel = np.diff(execution.reference[:, POSITION], 2, axis=0) / TICK_S**2  # accel[i] is at tick i + 1
    window = round(SPLICE_WINDOW_S / TICK_S)
    jumps = []
    for tick in execution.splice_ticks:
        if tick < 3 or tick - 1 + window > len(accel):
            jumps.append(np.nan)
            continue
        jumps.append(float(np.linalg.norm(accel[tick - 1: tick - 1 + window] - accel[tick - 3], axis=1).max()))
    return np.array(jumps)


@dataclasses.dataclass(frozen=True)
class SafetyEvent:
    time_s: float
    reason: str
    chunk_stamp_ns: int  # the chunk being executed (its splice was the latest)


def safety_events(execution: Execution, arrivals_s: np.ndarray, config: SafetyConfig,
                  model: RobotModel) -> tuple[dict[str, int], list[SafetyEvent]]:
    """Run the reference through a SafetyLayer tick by tick (chunk arrivals feed its watchdog); -> trips per
    reason and each trip's onset. The watchdog going off after the last chunk is the replay's end, not a trip."""
    layer = SafetyLayer(config, model)
    measured = (execution.reference[0, POSITION], execution.reference[0, QUAT])
    arrivals_s = np.sort(np.asarray(arrivals_s, dtype=float))
    splice_ticks = np.asarray(execution.splice_ticks)
    events, next_arrival = [], 0
    for tick, now_s in enumerate(execution.times_s.tolist()):
        while next_arrival < len(arrivals_s) and arrivals_s[next_arrival] <= now_s:
            layer.notify_chunk(now_s)
            next_arrival += 1
        before = dict(layer.trips)
        row = execution.reference[tick]
        layer.filter_reference((row[POSITION], row[QUAT]), now_s, measured)
        for reason, count in layer.trips.items():
            if count > before.get(reason, 0) and not (reason == "stale_chunk" and now_s > arrivals_s[-1]):
                latest = int(np.searchsorted(splice_ticks, tick, side="right")) - 1
                stamp = execution.splice_stamps_ns[latest] if latest >= 0 else -1
                events.append(SafetyEvent(now_s, reason, stamp))
    return dict(collections.Counter(e.reason for e in events)), events


def percentiles(values_s) -> dict[str, float]:
    values = np.asarray(values_s, dtype=float)
    if values.size == 0:
        return {"count": 0}
    return {"count": int(values.size), "p50": float(np.percentile(values, 50)),
            "p99": float(np.percentile(values, 99)), "max": float(values.max())}


__all__ = ["Differences", "Execution", "SafetyEvent", "TICK_S", "TimedChunk", "acceleration_jumps", "differences",
           "execute", "percentiles", "quat_angle_rad", "safety_events"]
