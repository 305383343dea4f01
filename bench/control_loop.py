"""Control-loop rate and jitter at 1 kHz against the real sim process (realtime mode, cameras rendering).

    python bench/control_loop.py [--seconds 10] [--mode realtime|lockstep]

Prints the tick rate on the robot clock, p99 tick-period jitter and missed-deadline %.
"""
from __future__ import annotations

import argparse
import os
import time


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--mode", default="realtime", choices=("realtime", "lockstep"))
    parser.add_argument("--camera-rate", type=float, default=30.0, help="sim camera rate [Hz]")
    args = parser.parse_args()
    from deploy.control.chunks import ChunkExecutorConfig
    from deploy.control.impedance import CartesianImpedanceConfig
    from deploy.control.loop import ControlLoop
    from deploy.control.safety import SafetyConfig
    from deploy.robots.sim import SimRobot
    from deploy.sim.process import SimConfig, SimProcess, connect_when_up

    sim = SimProcess(SimConfig(mode=args.mode, camera_rate_hz=args.camera_rate), f"deploy_bench_{os.getpid()}")
    robot = SimRobot(sim.link_name)
    connect_when_up(robot.connect)
    loop = ControlLoop(robot, ChunkExecutorConfig(), CartesianImpedanceConfig(add_gravity=True),
                                SafetyConfig())
    t_end = time.monotonic() + args.seconds
    while time.monotonic() < t_end:
        loop.tick()
    stats = loop.stats.summary()
    robot.stop()
    sim.stop()
    sim_seconds = loop.stats.ticks * loop.period_s
    print(f"mode={args.mode} ticks={loop.stats.ticks} sim-time/wall={sim_seconds / args.seconds:.2f}")
    print(f"rate {stats['rate_hz']:.0f} Hz (robot clock)  jitter p99 {stats['jitter_p99_ms']:.2f} ms  "
          f"missed deadlines {stats['missed_deadline_pct']:.1f} %")


if __name__ == "__main__":
    main()
