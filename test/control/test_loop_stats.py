import pytest

from deploy.control.loop import LoopStats


def test_steady_loop_has_no_jitter_or_misses():
    stats = LoopStats(period_s=0.001)
    for i in range(1000):
        stats.record(i * 0.001)
    summary = stats.summary()
    assert summary["rate_hz"] == pytest.approx(1000.0)
    assert summary["jitter_p99_ms"] == pytest.approx(0.0, abs=1e-6)
    assert summary["missed_deadline_pct"] == 0.0


def test_a_stall_counts_the_ticks_it_missed():
    stats = LoopStats(period_s=0.001)
    stamps = [i * 0.001 for i in range(100)] + [0.099 + 0.005 + i * 0.001 for i in range(100)]
    for stamp in stamps:
        stats.record(stamp)
    assert stats.missed_deadlines == 4  # a 5 ms gap is 4 missed 1 ms ticks
    assert stats.summary()["missed_deadline_pct"] == pytest.approx(100 * 4 / 200)


def test_samples_the_loop_skipped_are_told_apart_from_samples_the_robot_sent_late():
    stats = LoopStats(period_s=0.001)
    for i in range(100):  # the robot late once by 3 ms: samples 0..99 all answered
        stats.record(i * 0.001 + (0.003 if i >= 50 else 0.0), seq=i)
    assert stats.missed_deadlines == 3 and stats.skipped_samples == 0
    for i in range(100, 200):  # the loop stalls: samples 150..153 never answered
        if not 150 <= i <= 153:
            stats.record(0.003 + i * 0.001, seq=i)
    assert stats.missed_deadlines == 3 + 4 and stats.skipped_samples == 4
    assert stats.summary()["skipped_sample_pct"] == pytest.approx(100 * 4 / 196)


def test_tick_compute_time_p99_is_reported():
    stats = LoopStats(period_s=0.001)
    assert stats.summary()["tick_p99_ms"] == 0.0
    for i in range(1000):
        stats.record(i * 0.001)
        stats.record_compute(0.005 if i % 50 == 0 else 0.0002)  # 2 % of ticks take 5 ms
    assert stats.summary()["tick_p99_ms"] == pytest.approx(5.0)
    assert stats.summary()["jitter_p99_ms"] == pytest.approx(0.0, abs=1e-6)  # compute time is not period jitter
