"""Boundary smoothness of chunk splicing: peak joint-acceleration jump at chunk switches, per strategy and delay.

A smooth 7-joint trajectory is streamed as 0.5 s chunks (50 Hz points) every 100 ms, each offset by a small
per-chunk error (an inconsistent policy) and submitted `delay` after its observation. The 1 kHz reference's
acceleration is its second difference; the jump at a splice is max |a(t) − a(splice⁻)| over the next 100 ms
(∞-norm over joints), reported as the median (and p90) over all switches. Also times `sample()`.

    /tmp/venvtest/bin/python bench/chunk_smoothness.py [--seconds 10] [--noise 0.003]
"""
import argparse
import time

import numpy as np

from deploy.control.chunks import JOINT, Chunk, ChunkExecutor, ChunkExecutorConfig

TICK_S, DT_S, HORIZON, PERIOD_S, WINDOW_S = 0.001, 0.02, 25, 0.1, 0.1
VARIANTS = [  # (label, config overrides)
    ("replace, no blend", dict(strategy="replace", continuity_blend_s=0.0)),
    ("replace", dict(strategy="replace")),
    ("temporal_ensemble", dict(strategy="temporal_ensemble")),
    ("weighted_merge", dict(strategy="weighted_merge")),
    ("rtc_frozen_prefix", dict(strategy="rtc_frozen_prefix")),
]


def truth(t_s):
    """(N, 8): joints ≈ 0.3 rad sines at 0.7–3.5 rad/s, gripper width."""
    freq = np.array([0.7, 1.1, 1.6, 2.0, 2.6, 3.1, 3.5])
    out = np.empty((len(t_s), 8))
    out[:, :7] = 0.3 * np.sin(np.outer(t_s, freq) + np.arange(7))
    out[:, 7] = 0.04
    return out


def acceleration_jumps(config, delay_s, seconds, noise, rng):
    """Acceleration jump [rad/s²] at every splice of one run."""
    executor = ChunkExecutor(config, JOINT)
    delay_ticks, period_ticks = round(delay_s / TICK_S), round(PERIOD_S / TICK_S)
    times_s = DT_S * np.arange(1, HORIZON + 1)
    n_ticks = round(seconds / TICK_S)
    refs, splices = np.empty((n_ticks, 8)), []
    for tick in range(n_ticks):
        if tick >= delay_ticks and (tick - delay_ticks) % period_ticks == 0:
            stamp_s = (tick - delay_ticks) * TICK_S
            actions = truth(stamp_s + times_s) + noise * rng.normal(size=8)  # (H, 8)
            executor.submit(Chunk(stamp_s, times_s, actions), tick * TICK_S)
            splices.append(tick)
        refs[tick] = executor.sample(tick * TICK_S) if tick >= delay_ticks else truth(np.zeros(1))[0]
    accel = np.diff(refs[:, :7], 2, axis=0) / TICK_S**2  # accel[i] is at tick i + 1
    window = round(WINDOW_S / TICK_S)
    jumps = [np.abs(accel[s - 1 : s - 1 + window] - accel[s - 3]).max() for s in splices[2:-1]]
    return np.array(jumps)


def sample_timing_us(n_calls=20000):
    """Median and p99 of one `sample()` call [µs] on a cubic temporal-ensemble plan."""
    executor = ChunkExecutor(ChunkExecutorConfig(), JOINT)
    times_s = DT_S * np.arange(1, HORIZON + 1)
    executor.submit(Chunk(0.0, times_s, truth(times_s)), 0.05)
    ticks = 0.05 + 0.4 * np.random.default_rng(0).random(n_calls)
    costs = np.empty(n_calls)
    for i, t_s in enumerate(ticks.tolist()):
        start = time.perf_counter_ns()
        executor.sample(t_s)
        costs[i] = time.perf_counter_ns() - start
    submit_start = time.perf_counter()
    executor.submit(Chunk(0.1, times_s, truth(0.1 + times_s)), 0.15)
    submit_ms = (time.perf_counter() - submit_start) * 1e3
    return np.median(costs) / 1e3, np.percentile(costs, 99) / 1e3, submit_ms


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--noise", type=float, default=0.003, help="per-chunk offset std [rad]")
    parser.add_argument("--delays", type=float, nargs="+", default=[0.05, 0.15, 0.3])
    args = parser.parse_args()
    for interpolation in ("linear", "cubic", "minimum_jerk"):
        print(f"\npeak joint-acceleration jump at chunk switches [rad/s²], median (p90), "
              f"interpolation={interpolation}, noise={args.noise} rad")
        print(f"{'strategy':<20}" + "".join(f"{f'delay {d * 1e3:.0f} ms':>22}" for d in args.delays))
        for label, overrides in VARIANTS:
            config = ChunkExecutorConfig(interpolation=interpolation, **overrides)
            cells = []
            for delay_s in args.delays:
                jumps = acceleration_jumps(config, delay_s, args.seconds, args.noise, np.random.default_rng(0))
                cells.append(f"{np.median(jumps):10.1f} ({np.percentile(jumps, 90):8.1f})")
            print(f"{label:<20}" + "".join(f"{c:>22}" for c in cells))
    median_us, p99_us, submit_ms = sample_timing_us()
    print(f"\nsample(): median {median_us:.1f} µs, p99 {p99_us:.1f} µs per call; submit(): {submit_ms:.2f} ms")


if __name__ == "__main__":
    main()
