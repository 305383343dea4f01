"""Maps a robot controller's sample clock onto host wall-clock (ROS) time for hardware backends.

Why: the host's arrival time of a sample jitters with the network and the scheduler, while the robot's own
clock ticks exactly (1 ms Franka, 2 ms UR e-series). Stamping with `robot_time + offset` keeps the robot's
exact spacing and still lands on the wall clock the ROS nodes use. The offset is the least-delayed
arrival seen (every arrival is `robot_time + offset + latency` with latency >= 0), relaxed slowly upward so
a host clock running faster than the robot's is followed too.
"""
from __future__ import annotations

DRIFT_ALLOWANCE = 1e-4  # [s/s] upward relaxation of the offset, above typical crystal drift (~50 ppm)
RESYNC_THRESHOLD_S = 0.5  # a host-clock step (NTP) larger than this re-seeds the offset


class RobotClockMapper:
    """`stamp(robot_time_s, host_time_s)` -> robot sample time on the host wall clock [s]."""

    def __init__(self) -> None:
        self._base_s: float | None = None  # first arrival offset; the estimate is kept relative to it, so the
        self._offset_s = 0.0  # 1e-7 s relaxation steps are not lost to float rounding at epoch-sized values
        self._last_robot_s = 0.0

    def stamp(self, robot_time_s: float, host_time_s: float) -> float:
        if self._base_s is None:
            self._base_s = host_time_s - robot_time_s
        arrival_offset_s = (host_time_s - self._base_s) - robot_time_s
        if abs(arrival_offset_s - self._offset_s) > RESYNC_THRESHOLD_S:
            self._offset_s = arrival_offset_s
        else:
            elapsed_s = max(0.0, robot_time_s - self._last_robot_s)
            self._offset_s = min(arrival_offset_s, self._offset_s + DRIFT_ALLOWANCE * elapsed_s)
        self._last_robot_s = robot_time_s
        return robot_time_s + self._offset_s + self._base_s
