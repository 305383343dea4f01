"""The control tick's compute alone, in-process: no sim process, so the figure holds on a loaded machine.

    python bench/control_tick.py [--ticks 1000] [--repeats 7]

A torque robot that answers at once with a state on a 1 ms clock (the MuJoCo Panda model, q drifting so every
tick re-evaluates the dynamics), the sim's default controller configuration, a 16-point Cartesian chunk offered
every 100 ticks (its splice is built outside the timed tick, as the node's callback does). Prints the tick's
thread CPU time per tick: min and median over the repeats of the mean over `--ticks` ticks. Runs on main too
(nothing here is new API), for a before/after beside the same load.
"""
from __future__ import annotations

import argparse
import os
import time

import numpy as np

from deploy.control.chunks import CARTESIAN, Chunk, ChunkExecutorConfig
from deploy.control.impedance import PANDA_HOME_Q_RAD, CartesianImpedanceConfig
from deploy.control.loop import ControlLoop
from deploy.control.safety import SafetyConfig
from deploy.robots.base import Capability, Robot, RobotState
from deploy.robots.mujoco_model import MujocoRobotModel

CHUNK_TIMES_S = 0.05 * np.arange(1, 17)


class _InstantArm(Robot):
    capabilities = Capability.TORQUE

    def __init__(self):
        self.model = MujocoRobotModel()
        self.seq = 0
        self.q_rad = np.array(PANDA_HOME_Q_RAD)

    def connect(self) -> None:
        pass

    def stop(self) -> None:
        pass

    def read_state(self) -> RobotState:
        self.seq += 1
        self.q_rad = self.q_rad + 1e-6
        return RobotState(self.seq * 0.001, self.q_rad, np.full(7, 0.01), np.zeros(7), 0.04, seq=self.seq)

    def command_torque(self, tau_nm):
        return np.array(tau_nm, dtype=float)

    def command_gripper(self, width_m: float) -> float:
        return width_m


def _circle_chunk(stamp_s: float) -> Chunk:
    phase = 0.8 * (stamp_s + CHUNK_TIMES_S)  # (16,) a 5 cm circle at 0.8 rad/s
    positions = np.stack([0.45 + 0.05 * np.cos(phase), 0.05 * np.sin(phase), np.full(16, 0.35)], axis=1)
    return Chunk(stamp_s, CHUNK_TIMES_S, np.hstack([positions, np.tile([1.0, 0.0, 0.0, 0.0], (16, 1)),
                                                    np.full((16, 1), 0.04)]))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--ticks", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    arm = _InstantArm()
    loop = ControlLoop(arm, ChunkExecutorConfig(), CartesianImpedanceConfig(add_gravity=True), SafetyConfig())
    per_tick_us = []
    for _ in range(args.repeats):
        cpu_ns = 0
        for k in range(args.ticks):
            if k % 100 == 0:
                loop.offer_chunk(_circle_chunk(arm.seq * 0.001), CARTESIAN)
            started_ns = time.thread_time_ns()
            loop.tick()
            cpu_ns += time.thread_time_ns() - started_ns
        per_tick_us.append(cpu_ns / args.ticks / 1000)
    print(f"tick CPU per tick, in-process: min {min(per_tick_us):.1f} µs, median {np.median(per_tick_us):.1f} µs "
          f"({args.repeats} x {args.ticks} ticks)  load average {' '.join(f'{v:.2f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    main()
