"""Robot-clock -> wall-clock mapping against a known offset, jittery latency and clock drift (seeded)."""
import numpy as np

from deploy.robots.clock import RobotClockMapper

TRUE_OFFSET_S = 1.7e9


def test_stamps_keep_the_robot_spacing_and_converge_to_the_least_delayed_arrival():
    rng = np.random.default_rng(0)
    mapper = RobotClockMapper()
    robot_s = np.arange(5000) * 0.001
    latency_s = 0.0002 + rng.exponential(0.0003, robot_s.size)  # the best arrivals are ~0.2 ms late
    stamps_s = np.array([mapper.stamp(r, r + TRUE_OFFSET_S + lat) for r, lat in zip(robot_s, latency_s)])
    late = stamps_s[1000:] - (robot_s[1000:] + TRUE_OFFSET_S)
    assert np.all((late > 0.0001) & (late < 0.0004))  # within the best latency, not the jitter
    assert np.percentile(np.abs(np.diff(stamps_s[1000:]) - 0.001), 99) < 1e-5


def test_drift_and_clock_steps_are_followed():
    mapper = RobotClockMapper()
    for fast_ppm in (50.0, -50.0):  # host clock faster / slower than the robot's
        robot_s = np.arange(20000) * 0.001
        host_s = robot_s * (1 + fast_ppm * 1e-6) + TRUE_OFFSET_S + 0.0002
        error_s = [mapper.stamp(r, h) - h for r, h in zip(robot_s, host_s)]
        assert abs(error_s[-1]) < 0.0002
        mapper = RobotClockMapper()
    mapper.stamp(0.0, TRUE_OFFSET_S)
    assert abs(mapper.stamp(0.001, TRUE_OFFSET_S + 3600.001) - (TRUE_OFFSET_S + 3600.001)) < 1e-6  # NTP step
