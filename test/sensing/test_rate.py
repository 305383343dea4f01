import numpy as np
import pytest

from deploy.errors import ConfigError
from deploy.sensing.rate import StampDecimator, StampMatcher


def decimate(stamps_s, rate_hz):
    decimator = StampDecimator(rate_hz)
    return np.array([s for s in stamps_s if decimator.accept(s)])


def rate_of(stamps_s):
    return (len(stamps_s) - 1) / (stamps_s[-1] - stamps_s[0])


@pytest.mark.parametrize("input_hz, output_hz", [(250.0, 100.0), (1000.0, 100.0), (1000.0, 30.0), (250.0, 60.0)])
def test_output_rate_is_the_configured_rate_in_the_stamps_clock(input_hz, output_hz):
    stamps = 1.7e9 + np.arange(0, 10.0, 1.0 / input_hz)  # wall-clock-sized stamps: float rounding included
    kept = decimate(stamps, output_hz)
    assert rate_of(kept) == pytest.approx(output_hz, rel=0.01)
    assert np.diff(kept).max() <= 1.0 / output_hz + 1.0 / input_hz + 1e-6  # never more than one input late


def test_jittery_input_keeps_the_rate_and_each_sample_keeps_its_own_stamp():
    rng = np.random.default_rng(0)
    stamps = np.sort(np.arange(0, 20.0, 0.004) + rng.uniform(-0.0015, 0.0015, 5000))
    kept = decimate(stamps, 100.0)
    assert rate_of(kept) == pytest.approx(100.0, rel=0.01)
    assert set(kept) <= set(stamps)


def test_a_gap_skips_the_missed_slots_instead_of_bursting():
    stamps = np.concatenate([np.arange(0, 1.0, 0.004), np.arange(1.5, 2.5, 0.004)])  # 0.5 s without samples
    kept = decimate(stamps, 100.0)
    after_gap = kept[kept >= 1.5]
    assert after_gap[0] == pytest.approx(1.5)
    assert np.diff(after_gap).min() >= 0.008 - 1e-9  # no catch-up burst: spacing stays near the period
    assert rate_of(after_gap) == pytest.approx(100.0, rel=0.02)


def test_duplicates_are_dropped_and_time_going_back_starts_a_new_grid():
    decimator = StampDecimator(10.0)
    assert decimator.accept(5.0)
    assert not decimator.accept(5.0)
    assert not decimator.accept(5.05)
    assert decimator.accept(5.1)
    assert decimator.accept(0.0)  # sim reset
    assert not decimator.accept(0.05)
    assert decimator.accept(0.1)


def test_rate_must_be_positive():
    with pytest.raises(ConfigError, match="rate_hz must be positive, got 0"):
        StampDecimator(0.0)


def test_matcher_passes_exactly_the_accepted_stamps_whichever_stream_arrives_first():
    rng = np.random.default_rng(3)
    stamps = 1.7e9 + np.arange(0, 4.0, 0.004)  # a 250 Hz source, decimated to 100 Hz
    decimator, matcher = StampDecimator(100.0), StampMatcher(depth=100)
    accepted, passed = [], []
    for stamp in stamps:
        events = [("reference", stamp), ("side", stamp)]
        if rng.random() < 0.5:
            events.reverse()  # the side sample (e.g. the wrench) overtook the joint state
        for stream, s in events:
            if stream == "reference":
                if decimator.accept(s):
                    accepted.append(s)
                    match = matcher.accepted(s)
                    if match is not None:
                        passed.append(match)
            else:
                match = matcher.offer(s, ("wrench", s))
                if match is not None:
                    passed.append(match)
    assert [s for _, s in passed] == accepted and len(accepted) == pytest.approx(400, abs=2)


def test_matcher_memory_stays_bounded_and_late_partners_beyond_it_are_dropped():
    matcher = StampMatcher(depth=3)
    for stamp in range(10):  # side samples that never find a partner
        assert matcher.offer(float(stamp), stamp) is None
    assert matcher.accepted(0.0) is None  # forgotten: only the newest 3 are kept
    assert matcher.accepted(9.0) == 9
    for stamp in range(20, 30):  # accepted stamps whose side sample never comes
        matcher.accepted(float(stamp))
    assert matcher.offer(20.0, "late") is None and matcher.offer(29.0, "on time") == "on time"
    with pytest.raises(ConfigError, match="depth must be at least 1, got 0"):
        StampMatcher(depth=0)
