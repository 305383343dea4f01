"""Control-loop rate, jitter and tick compute time at 1 kHz against the real sim process (cameras rendering).

    python bench/control_loop.py [--seconds 10] [--mode realtime|lockstep] [--chunk-rate 10] [--delay 0.15]

Prints the tick rate on the robot clock, p99 tick-period jitter, missed-deadline %, the tick's compute time
(sample received -> torque sent; p50 / p99 / max, wall and thread CPU; and the loop's own LoopStats p99), and
the cold start: how long building the ControlLoop took (it compiles or loads the numba kernels) and the slowest
of the first 100 ticks (a JIT compile landing in a tick would show there). With `--chunk-rate` > 0 a second thread
offers 16-point Cartesian chunks (a slow circle, stamped `--delay` s in the past, `--chunk-rate` per second of
robot time) the way the node's subscription callback does, so the compute time includes splicing them.
"""
from __future__ import annotations

import argparse
import os
import threading
import time

import numpy as np

DOWN_XYZW = [1.0, 0.0, 0.0, 0.0]


class _TimedRobot:
    """Forwards to the robot and notes when each sample was handed to the loop (start of the tick's work), on
    the wall clock and as the thread's CPU time (which a loaded machine's preemption does not inflate)."""

    def __init__(self, robot):
        self._robot = robot
        self.sample_returned_s = self.sample_returned_cpu_s = 0.0

    def wait_for_state(self, after_seq, timeout_s):
        state = self._robot.wait_for_state(after_seq, timeout_s)
        self.sample_returned_s, self.sample_returned_cpu_s = time.perf_counter(), time.thread_time()
        return state

    def __getattr__(self, name):
        return getattr(self._robot, name)


def _offer_chunks(loop, rate_hz: float, delay_s: float, stop: threading.Event) -> None:
    from deploy.control.chunks import CARTESIAN, Chunk

    times_s = 0.05 * np.arange(1, 17)
    last_offer_s = -np.inf
    while not stop.wait(0.001):  # paced on the robot clock, so lockstep runs splice as often per tick
        if loop.last_tick is None or loop.last_tick.state.stamp_s < last_offer_s + 1.0 / rate_hz:
            continue
        last_offer_s = loop.last_tick.state.stamp_s
        stamp_s = last_offer_s - delay_s
        phase = 0.8 * (stamp_s + times_s)  # (16,) a 5 cm circle at 0.8 rad/s
        positions = np.stack([0.45 + 0.05 * np.cos(phase), 0.05 * np.sin(phase), np.full(16, 0.35)], axis=1)
        actions = np.hstack([positions, np.tile(DOWN_XYZW, (16, 1)), np.full((16, 1), 0.04)])
        loop.offer_chunk(Chunk(stamp_s, times_s, actions), CARTESIAN)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--mode", default="realtime", choices=("realtime", "lockstep"))
    parser.add_argument("--camera-rate", type=float, default=30.0, help="sim camera rate [Hz]")
    parser.add_argument("--chunk-rate", type=float, default=10.0, help="chunks offered per second (0 = none)")
    parser.add_argument("--delay", type=float, default=0.15, help="chunk stamp age when offered [s]")
    args = parser.parse_args()
    from deploy.control.chunks import ChunkExecutorConfig
    from deploy.control.impedance import CartesianImpedanceConfig
    from deploy.control.loop import ControlLoop
    from deploy.control.safety import SafetyConfig
    from deploy.robots.sim import SimRobot
    from deploy.sim.process import SimConfig, SimProcess, connect_when_up

    sim = SimProcess(SimConfig(mode=args.mode, camera_rate_hz=args.camera_rate), f"deploy_bench_{os.getpid()}")
    sim_robot = SimRobot(sim.link_name)
    connect_when_up(sim_robot.connect)
    robot = _TimedRobot(sim_robot)
    built_s = time.perf_counter()
    loop = ControlLoop(robot, ChunkExecutorConfig(), CartesianImpedanceConfig(add_gravity=True), SafetyConfig())
    built_s = time.perf_counter() - built_s
    stop = threading.Event()
    offerer = threading.Thread(target=_offer_chunks, args=(loop, args.chunk_rate, args.delay, stop), daemon=True)
    if args.chunk_rate > 0:
        offerer.start()
    compute_ms, cpu_ms, splice_ms = [], [], []  # per tick: wall, CPU; wall of the ticks that took a chunk in
    chunks = 0
    t_end = time.monotonic() + args.seconds
    while time.monotonic() < t_end:
        record = loop.tick()
        if record is not None:
            compute_ms.append(1000 * (time.perf_counter() - robot.sample_returned_s))
            cpu_ms.append(1000 * (time.thread_time() - robot.sample_returned_cpu_s))
            received = loop.chunk_status(record.state.stamp_s).chunks_received
            if received != chunks:
                splice_ms.append(compute_ms[-1])
                chunks = received
    stop.set()
    stats = loop.stats.summary()
    sim_robot.stop()
    sim.stop()
    sim_seconds = loop.stats.ticks * loop.period_s
    print(f"mode={args.mode} ticks={loop.stats.ticks} sim-time/wall={sim_seconds / args.seconds:.2f} "
          f"chunks spliced={chunks}  load average {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    print(f"rate {stats['rate_hz']:.0f} Hz (robot clock)  jitter p99 {stats['jitter_p99_ms']:.2f} ms  "
          f"missed deadlines {stats['missed_deadline_pct']:.1f} % (samples the loop skipped "
          f"{stats['skipped_sample_pct']:.1f} %)")
    print(f"cold start: ControlLoop built in {built_s:.2f} s; first 100 ticks max wall {max(compute_ms[:100]):.3f} ms")
    print(f"LoopStats tick compute p99 (last 5000 ticks) {stats['tick_p99_ms']:.3f} ms")
    for name, values in (("tick wall", compute_ms), ("tick CPU", cpu_ms), ("splicing ticks, wall", splice_ms)):
        values = np.array(values) if values else np.zeros(1)
        print(f"{name}: p50 {np.percentile(values, 50):.3f} ms  p99 {np.percentile(values, 99):.3f} ms  "
              f"max {values.max():.3f} ms  (n={len(values)})")


if __name__ == "__main__":
    main()
