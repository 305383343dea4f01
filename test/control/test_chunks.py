"""ChunkExecutor against a smooth ground truth streamed as overlapping, delayed, slightly inconsistent chunks.

Seeded and fast; times are simulated (integer 1 ms ticks), never read from a clock.
"""
import math
import threading
import zlib

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from deploy.control.chunks import (
    CARTESIAN, JOINT, STRATEGIES, Chunk, ChunkError, ChunkExecutor, ChunkExecutorConfig,
)
from deploy.control.blending import INTERPOLATIONS
from deploy.errors import ConfigError

TICK_S = 0.001  # controller period
DT_S = 0.02  # chunk point spacing (50 Hz policy output)
HORIZON = 25  # points per chunk (0.5 s)
PERIOD_S = 0.1  # a new observation every 100 ms
DURATION_S = 1.5
BLEND_S = 0.05
MARK = 1e3  # value given to late points; must never be executed
FLIP = Rotation.from_rotvec([math.pi, 0.0, 0.0])  # late quaternions are turned upside down


def ground_truth(space, t_s):
    """(N, 8) smooth reference: sines of ~0.3–1 rad/s amplitude, a slow rotation, a gripper ramp."""
    t_s = np.atleast_1d(t_s)
    out = np.empty((len(t_s), 8))
    freq = np.array([0.7, 1.1, 1.6, 2.0, 2.6, 3.1, 3.5])  # rad/s
    out[:, :7] = 0.3 * np.sin(np.outer(t_s, freq) + np.arange(7))
    out[:, 7] = 0.04 + 0.01 * np.sin(2.0 * t_s)
    if space is CARTESIAN:
        out[:, 3:7] = (Rotation.from_euler("x", 0.4) * Rotation.from_rotvec(np.outer(t_s, [0.5, -0.3, 0.8]))).as_quat()
    return out


def same_hemisphere(q, ref):
    """Sign of quaternions (N, 4) chosen to match ref (N, 4) row by row (test-side, written plainly)."""
    return q * np.where(np.einsum("ij,ij->i", q, ref) < 0.0, -1.0, 1.0)[:, None]


def make_chunks(space, delay_s, noise, rng, flip_signs=False, jitter_stamps=True):
    """[(submit_tick, chunk, deviation (8,) of its points from the ground truth)], late points marked."""
    out = []
    delay_ticks = round(delay_s / TICK_S)
    for j in range(int(DURATION_S / PERIOD_S)):
        stamp_tick = round(j * PERIOD_S / TICK_S) + (int(rng.integers(0, 6)) if jitter_stamps else 0)
        stamp_s, submit_tick = stamp_tick * TICK_S, stamp_tick + delay_ticks
        times_s = DT_S * np.arange(1, HORIZON + 1)
        truth = ground_truth(space, stamp_s + times_s)
        actions = truth.copy()
        actions[:, :] += noise * rng.normal(size=8)  # one offset per chunk: an inconsistent policy
        if space is CARTESIAN:
            rot = Rotation.from_rotvec(0.5 * noise * rng.normal(size=3)) * Rotation.from_quat(truth[:, 3:7])
            actions[:, 3:7] = rot.as_quat()
            if flip_signs:
                actions[:, 3:7] *= rng.choice([-1.0, 1.0], size=(HORIZON, 1))
        late = stamp_s + times_s < submit_tick * TICK_S
        deviation = np.abs(actions - truth)
        if space is CARTESIAN:
            deviation[:, 3:7] = np.abs(same_hemisphere(actions[:, 3:7], truth[:, 3:7]) - truth[:, 3:7])
        actions[late] = MARK
        if space is CARTESIAN:
            actions[late, 3:7] = (FLIP * Rotation.from_quat(truth[late, 3:7])).as_quat()
        out.append((submit_tick, Chunk(stamp_s, times_s, actions), deviation[~late].max(axis=0)))
    return out


def run(executor, space, chunks):
    """Tick at 1 kHz from the first submit: submit what is due, then sample. Returns times (N,), refs (N, A).

    The executor starts on the first chunk (no hold): starting from rest is test_hold_then_chunk_is_bumpless.
    """
    first, last = chunks[0][0], round((chunks[-1][1].stamp_s + chunks[-1][1].times_s[-1]) / TICK_S)
    due = {tick: chunk for tick, chunk, _ in chunks}
    times, refs = [], []
    for tick in range(first, last):
        t_s = tick * TICK_S
        if tick in due:
            executor.submit(due[tick], t_s)
        times.append(t_s)
        refs.append(executor.sample(t_s))
    return np.array(times), np.array(refs)


def step_bound(space, interpolation, deviation):
    """Largest per-tick change (8,) the executed reference may make.

    Every plan point is the truth plus a convex combination of chunk deviations (≤ dev), so consecutive
    points differ by ≤ v_max·h + 2·dev: linear interpolation (and the linear extension before a chunk's first
    point) never moves faster than that secant slope. A natural spline's slope can exceed its largest secant;
    we allow 2× (the diagonally dominant slope system of a cubic spline bounds it by 3× only for alternating
    data, which an offset per chunk cannot produce). The continuity fade adds at most the peak slope of the
    quintic ramp, 1.875/T, times the gap it closes, ≤ 2·dev plus the interpolation error of the truth.
    """
    t = np.arange(0.0, DURATION_S + 1.0, TICK_S)
    truth = ground_truth(space, t)
    v_max = np.abs(np.diff(truth, axis=0)).max(axis=0) / TICK_S  # (8,)
    a_max = np.abs(np.diff(truth, 2, axis=0)).max(axis=0) / TICK_S**2
    interp_err = a_max * DT_S**2 / 8.0  # linear interpolation error of a C2 path; splines do better
    kappa = 1.0 if interpolation == "linear" else 2.0
    return TICK_S * (kappa * (v_max + 2.0 * deviation / DT_S) + 1.875 * (2.0 * deviation + interp_err) / BLEND_S)


def check_executed(space, refs, times):
    """No late point ever executed; quaternions unit-norm and sign-continuous; near the truth."""
    truth = ground_truth(space, times)
    if space is CARTESIAN:
        quats = refs[:, 3:7]
        np.testing.assert_allclose(np.linalg.norm(quats, axis=1), 1.0, atol=1e-9)
        angle = (Rotation.from_quat(quats).inv() * Rotation.from_quat(truth[:, 3:7])).magnitude()
        assert angle.max() < 0.2, "a late (flipped) rotation was executed"
        assert (np.einsum("ij,ij->i", quats[1:], quats[:-1]) > 0.99).all(), "quaternion sign flipped"
        refs = np.delete(refs, np.s_[3:7], axis=1)
    assert np.abs(refs).max() < MARK / 10, "a point that was late on arrival was executed"


@pytest.mark.parametrize("space", [JOINT, CARTESIAN], ids=["joint", "cartesian"])
@pytest.mark.parametrize("delay_s", [0.05, 0.15, 0.3])
@pytest.mark.parametrize("interpolation", INTERPOLATIONS)
@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("noise", [0.0, 0.003], ids=["consistent", "inconsistent"])
def test_stream_is_continuous_and_skips_late_points(strategy, interpolation, delay_s, space, noise):
    rng = np.random.default_rng(zlib.crc32(f"{strategy}{interpolation}{delay_s}{space.name}{noise}".encode()))
    chunks = make_chunks(space, delay_s, noise, rng, flip_signs=space is CARTESIAN)
    config = ChunkExecutorConfig(strategy=strategy, interpolation=interpolation, continuity_blend_s=BLEND_S)
    executor = ChunkExecutor(config, space)
    times, refs = run(executor, space, chunks)
    check_executed(space, refs, times)
    deviation = np.max([dev for _, _, dev in chunks], axis=0)
    steps = np.abs(np.diff(refs, axis=0)).max(axis=0)
    bound = step_bound(space, interpolation, deviation)
    assert (steps <= bound).all(), f"per-tick step {steps} exceeds {bound}"
    status = executor.status(times[-1])
    assert status.chunks_received == len(chunks)
    late = sum(int((c.stamp_s + c.times_s < tick * TICK_S).sum()) for tick, c, _ in chunks)
    assert status.points_dropped_late == late
    assert status.lag_s == pytest.approx(delay_s, abs=0.006)


def test_raw_replace_jumps_beyond_the_continuity_bound():
    """The bound above is not vacuous: without the fade, replace jumps by the chunk-to-chunk inconsistency."""
    rng = np.random.default_rng(1)
    chunks = make_chunks(JOINT, 0.15, 0.003, rng)
    executor = ChunkExecutor(ChunkExecutorConfig(strategy="replace", continuity_blend_s=0.0), JOINT)
    times, refs = run(executor, JOINT, chunks)
    deviation = np.max([dev for _, _, dev in chunks], axis=0)
    steps = np.abs(np.diff(refs, axis=0)).max(axis=0)
    assert (steps > step_bound(JOINT, "cubic", deviation)).any()


@pytest.mark.parametrize("space", [JOINT, CARTESIAN], ids=["joint", "cartesian"])
@pytest.mark.parametrize("decay", [0.01, 0.5, -0.5])
@pytest.mark.parametrize("delay_s", [0.05, 0.15])
def test_temporal_ensemble_matches_offline_average(space, decay, delay_s):
    """At every point of the latest chunk, the reference is ACT's average over all received chunks
    covering that time (weights exp(-m·k), k = 0 for the oldest), computed here plainly."""
    rng = np.random.default_rng(7)
    chunks = make_chunks(space, delay_s, 0.01, rng, jitter_stamps=False)
    config = ChunkExecutorConfig(strategy="temporal_ensemble", interpolation="linear", continuity_blend_s=0.0,
                                 ensemble_decay=decay)
    executor = ChunkExecutor(config, space)
    executor.hold(ground_truth(space, 0.0)[0])
    checked = 0
    for n, (tick, chunk, _) in enumerate(chunks):
        now_s = tick * TICK_S
        executor.submit(chunk, now_s)
        next_s = chunks[n + 1][0] * TICK_S if n + 1 < len(chunks) else math.inf
        for i, t_s in enumerate(chunk.stamp_s + chunk.times_s):
            if not now_s <= t_s < next_s:
                continue  # late, or superseded by the next splice
            predictions = []  # oldest chunk first
            for sub_tick, old, _ in chunks[: n + 1]:
                abs_s = old.stamp_s + old.times_s
                live = abs_s >= sub_tick * TICK_S
                hit = np.flatnonzero(np.isclose(abs_s, t_s, atol=1e-9) & live)
                if len(hit) and abs_s[-1] >= now_s:
                    predictions.append(old.actions[hit[0]])
            weights = np.exp(-decay * np.arange(len(predictions)))
            expected = np.average(predictions, axis=0, weights=weights)
            got = executor.sample(t_s)
            if space is CARTESIAN:
                mean = Rotation.from_quat(np.array(predictions)[:, 3:7]).mean(weights=weights)
                assert (Rotation.from_quat(got[3:7]).inv() * mean).magnitude() < 1e-9
                expected, got = np.delete(expected, np.s_[3:7]), np.delete(got, np.s_[3:7])
            np.testing.assert_allclose(got, expected, atol=1e-9)
            checked += 1
    assert checked > len(chunks) * 3


def test_restarted_ensemble_runs_the_new_writer_alone():
    """After an authority switch the first chunk of the new writer is not averaged with the old writer's chunk
    (still covering the same times); it fades in from the executing plan, then runs exactly as sent."""
    config = ChunkExecutorConfig(strategy="temporal_ensemble", interpolation="linear", continuity_blend_s=BLEND_S,
                                 seam_speed=1.0)  # the 0.05 rad gap closes in 94 ms
    executor = ChunkExecutor(config, JOINT)
    times_s = DT_S * np.arange(1, HORIZON + 1)
    old_writer = Chunk(0.0, times_s, np.tile(ground_truth(JOINT, 0.0)[0], (HORIZON, 1)))
    new_writer = Chunk(0.1, times_s, np.tile(ground_truth(JOINT, 0.0)[0] + 0.05, (HORIZON, 1)))
    executor.submit(old_writer, 0.0)
    stale = executor.prepare(new_writer, 0.1)  # built before the switch: averages both writers
    executor.writer_changed()
    assert not executor.commit(stale, 0.1)  # no longer fits: rebuilt
    executor.submit(new_writer, 0.1)
    np.testing.assert_allclose(executor.sample(0.1), old_writer.actions[0], atol=1e-12)  # no jump
    after_fade_s = 0.1 + 0.1
    np.testing.assert_allclose(executor.sample(after_fade_s), new_writer.actions[0], atol=1e-12)
    without_restart = ChunkExecutor(config, JOINT)
    without_restart.submit(old_writer, 0.0)
    without_restart.submit(new_writer, 0.1)
    assert np.abs(without_restart.sample(after_fade_s) - new_writer.actions[0]).max() > 0.02  # the bug it fixes


@pytest.mark.parametrize("gap", [0.002, 0.011, 0.08])
@pytest.mark.parametrize("space", [JOINT, CARTESIAN], ids=["joint", "cartesian"])
def test_a_new_writer_glides_in_no_faster_than_the_seam_speed(space, gap):
    """After a change of writer, a small gap fades in continuity_blend_s; a larger one (an operator starting at
    the measured pose, behind the reference) takes as long as closing it at seam_speed needs."""
    config = ChunkExecutorConfig(strategy="replace", interpolation="linear", continuity_blend_s=BLEND_S,
                                 seam_speed=0.15)
    executor = ChunkExecutor(config, space)
    start = ground_truth(space, 0.0)[0]
    executor.hold(start)
    target = start.copy()
    target[:3] += gap / math.sqrt(3.0)
    executor.writer_changed()
    executor.submit(Chunk(0.0, np.array([1.0, 2.0]), np.stack([target, target])), 0.0)
    ticks_s = np.arange(0.0, 1.5, TICK_S)
    positions = np.array([executor.sample(t)[:3] for t in ticks_s])
    speed = np.abs(np.diff(positions, axis=0)).max(axis=1) / TICK_S
    assert speed.max() <= 0.15 * 1.001
    fade_s = max(BLEND_S, 1.875 * gap / math.sqrt(3.0) / 0.15)
    np.testing.assert_allclose(executor.sample(fade_s + TICK_S)[:3], target[:3], atol=1e-9)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_a_long_glide_arrives_while_chunks_keep_coming(strategy):
    """A new writer's target 0.3 away re-sent every 100 ms: each splice keeps the glide's end time (restarting a 3.75 s fade
    every 100 ms would barely move), so the reference arrives on time. Each re-splice fades the rest of the gap
    in on top of the glide under way, so the speed may exceed seam_speed, but stays within a small multiple."""
    config = ChunkExecutorConfig(strategy=strategy, interpolation="linear", continuity_blend_s=BLEND_S,
                                 seam_speed=0.15)
    executor = ChunkExecutor(config, JOINT)
    start = ground_truth(JOINT, 0.0)[0]
    executor.hold(start)
    executor.writer_changed()
    target = start + 0.3
    positions, glide_s = [], 1.875 * 0.3 / 0.15
    for tick in range(int((glide_s + 0.5) / TICK_S)):
        now_s = tick * TICK_S
        if tick % 100 == 0:
            executor.submit(Chunk(now_s, DT_S * np.arange(1, HORIZON + 1), np.tile(target, (HORIZON, 1))), now_s)
        positions.append(executor.sample(now_s))
    positions = np.array(positions)
    np.testing.assert_allclose(positions[-1], target, atol=1e-9)
    speed = np.abs(np.diff(positions, axis=0)).max(axis=1) / TICK_S
    assert 0.15 < speed.max() < 3.0 * 0.15


@pytest.mark.parametrize("interpolation", INTERPOLATIONS)
@pytest.mark.parametrize("delay_s", [0.05, 0.15, 0.3])
@pytest.mark.parametrize("space", [JOINT, CARTESIAN], ids=["joint", "cartesian"])
def test_rtc_keeps_committed_points_exactly(interpolation, delay_s, space):
    rng = np.random.default_rng(3)
    chunks = make_chunks(space, delay_s, 0.01, rng, flip_signs=space is CARTESIAN)
    config = ChunkExecutorConfig(strategy="rtc_frozen_prefix", interpolation=interpolation, frozen_steps=3,
                                 crossfade_steps=2, continuity_blend_s=BLEND_S)
    executor = ChunkExecutor(config, space)
    executor.hold(ground_truth(space, 0.0)[0])
    committed_total = 0
    for tick, chunk, _ in chunks:
        now_s = tick * TICK_S
        before_t, before_v = executor.upcoming(now_s)
        executor.submit(chunk, now_s)
        committed = executor.status(now_s).committed_steps
        assert committed == min(3, len(before_t))
        after_t, after_v = executor.upcoming(now_s)
        np.testing.assert_array_equal(after_t[:committed], before_t[:committed])
        np.testing.assert_allclose(after_v[:committed], before_v[:committed], atol=1e-12)
        for t_s, value in zip(before_t[:committed], before_v[:committed]):
            got = executor.sample(t_s)
            if space is CARTESIAN:
                got[3:7] = same_hemisphere(got[None, 3:7], value[None, 3:7])[0]
            np.testing.assert_allclose(got, value, atol=1e-12)
        committed_total += committed
    assert committed_total >= 3 * (len(chunks) - 1)


def test_weighted_merge_blends_overlap_0p3_old_0p7_new():
    rng = np.random.default_rng(5)
    chunks = make_chunks(JOINT, 0.05, 0.01, rng, jitter_stamps=False)
    executor = ChunkExecutor(ChunkExecutorConfig(strategy="weighted_merge", continuity_blend_s=0.0), JOINT)
    executor.hold(ground_truth(JOINT, 0.0)[0])
    for tick, chunk, _ in chunks[:4]:
        now_s = tick * TICK_S
        old_t, _ = executor.upcoming(now_s)
        abs_s = chunk.stamp_s + chunk.times_s
        live = abs_s >= now_s
        old = np.array([executor.sample(t) for t in abs_s[live]])
        executor.submit(chunk, now_s)
        overlap = abs_s[live] <= (old_t[-1] if len(old_t) else -math.inf)
        expected = np.where(overlap[:, None], 0.3 * old + 0.7 * chunk.actions[live], chunk.actions[live])
        got = np.array([executor.sample(t) for t in abs_s[live]])
        np.testing.assert_allclose(got, expected, atol=1e-12)


@pytest.mark.parametrize("space", [JOINT, CARTESIAN], ids=["joint", "cartesian"])
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_splices_prepared_in_another_thread_equal_submit(strategy, space):
    """prepare() in a second thread while the plan is sampled, commit() at the splice tick: the executed
    reference is exactly what submit() at that tick gives."""
    rng = np.random.default_rng(zlib.crc32(f"prepared{strategy}{space.name}".encode()))
    chunks = make_chunks(space, 0.15, 0.003, rng)
    config = ChunkExecutorConfig(strategy=strategy, continuity_blend_s=BLEND_S)
    reference, prepared = ChunkExecutor(config, space), ChunkExecutor(config, space)
    times, expected = run(reference, space, chunks)
    lead_ticks = 10  # prepared this long before its splice tick, while the executing plan is sampled
    prepare_at = {tick - lead_ticks: (tick, chunk) for tick, chunk, _ in chunks}
    first = chunks[0][0]
    pending, refs = {}, []
    for tick in range(first - lead_ticks, round(times[-1] / TICK_S) + 1):
        t_s = tick * TICK_S
        if tick in pending:
            assert prepared.commit(pending.pop(tick).result(), t_s)
        if tick in prepare_at:
            splice_tick, chunk = prepare_at[tick]
            pending[splice_tick] = _Background(prepared.prepare, chunk, splice_tick * TICK_S)
        if tick >= first:
            refs.append(prepared.sample(t_s))
    np.testing.assert_array_equal(np.array(refs), expected)
    assert prepared.status(times[-1]) == reference.status(times[-1])


class _Background:
    """Runs fn(*args) in a thread at once; result() joins it."""

    def __init__(self, fn, *args):
        self._out = []
        self._thread = threading.Thread(target=lambda: self._out.append(fn(*args)))
        self._thread.start()

    def result(self):
        self._thread.join()
        return self._out[0]


def test_a_splice_built_on_a_plan_no_longer_executing_is_refused():
    executor = ChunkExecutor(ChunkExecutorConfig(strategy="replace"), JOINT)
    first = executor.prepare(Chunk(0.0, [0.1, 0.2], np.zeros((2, 8))), 0.05)
    second = executor.prepare(Chunk(0.0, [0.1, 0.2], np.ones((2, 8))), 0.05)  # built on the same (empty) plan
    assert executor.commit(first, 0.05)
    assert not executor.commit(second, 0.05)
    np.testing.assert_array_equal(executor.sample(0.2), np.zeros(8))
    assert executor.status(0.2).chunks_received == 1
    late = executor.prepare(Chunk(0.0, [0.1], np.ones((1, 8))), 0.5)  # entirely late: counted, nothing swapped
    assert executor.commit(late, 0.5) and executor.status(0.5).points_dropped_late == 1
    np.testing.assert_array_equal(executor.sample(0.5), np.zeros(8))


def test_lifecycle_hold_exhaust_reset():
    executor = ChunkExecutor(ChunkExecutorConfig(), JOINT)
    assert executor.sample(0.0) is None
    assert executor.status(0.0).exhausted
    start = np.arange(8.0)
    executor.hold(start)
    np.testing.assert_array_equal(executor.sample(5.0), start)
    chunk = Chunk(1.0, [0.1, 0.2, 0.3], np.tile(start + 1.0, (3, 1)), weight_version="v2")
    executor.submit(chunk, 1.15)  # the point for 1.1 s is already late
    status = executor.status(1.15)
    assert (status.chunks_received, status.points_dropped_late, status.steps_remaining) == (1, 1, 2)
    assert status.lag_s == pytest.approx(0.15) and status.weight_version == "v2" and not status.exhausted
    np.testing.assert_allclose(executor.sample(9.0), start + 1.0)  # holds the last point after the end
    assert executor.status(9.0).exhausted and executor.status(9.0).steps_remaining == 0
    executor.submit(Chunk(0.0, [0.1], np.zeros((1, 8))), 2.0)  # entirely late: counted, not executed
    assert executor.status(9.0).points_dropped_late == 2
    np.testing.assert_allclose(executor.sample(9.0), start + 1.0)
    executor.reset(start)
    np.testing.assert_array_equal(executor.sample(0.0), start)
    assert executor.status(0.0).chunks_received == 0
    executor.reset()
    assert executor.sample(0.0) is None


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_hold_then_chunk_is_bumpless(strategy):
    """From a held pose the first chunk is faded in: no jump, and no step larger than the fade of the gap."""
    executor = ChunkExecutor(ChunkExecutorConfig(strategy=strategy, continuity_blend_s=BLEND_S), JOINT)
    held = ground_truth(JOINT, 0.0)[0]
    executor.hold(held)
    chunk = Chunk(0.0, DT_S * np.arange(1, HORIZON + 1), ground_truth(JOINT, DT_S * np.arange(1, HORIZON + 1)) + 0.01)
    executor.submit(chunk, 0.1)
    refs = np.array([executor.sample(0.1 + k * TICK_S) for k in range(200)])
    np.testing.assert_allclose(refs[0], held, atol=1e-12)
    raw_jump = np.abs(chunk.actions[5] - held).max()  # what replace without a fade would do at 0.1 s
    assert np.abs(np.diff(refs, axis=0)).max() < raw_jump / 10


def test_first_chunk_without_hold_starts_on_the_chunk():
    executor = ChunkExecutor(ChunkExecutorConfig(), JOINT)
    executor.submit(Chunk(0.0, [0.1, 0.2], np.stack([np.zeros(8), np.ones(8)])), 0.1)
    np.testing.assert_allclose(executor.sample(0.1), np.zeros(8))


GOOD_TIMES, GOOD_ACTIONS = np.array([0.1, 0.2]), np.tile([0, 0, 0, 0, 0, 0, 1, 0.04], (2, 1)).astype(float)


@pytest.mark.parametrize("change, message", [
    (dict(actions=np.where(np.eye(2, 8, 3) > 0, np.nan, GOOD_ACTIONS)), "non-finite value at point 0, component 3"),
    (dict(actions=np.where(np.eye(2, 8, 1) > 0, np.inf, GOOD_ACTIONS)), "non-finite"),
    (dict(times_s=np.array([0.1, np.nan])), "times_s has non-finite"),
    (dict(times_s=np.array([0.2, 0.2])), "not strictly increasing at point 1"),
    (dict(times_s=np.array([0.0, 0.2])), "times_s[0] = 0.0 must be > 0"),
    (dict(times_s=np.array([0.1])), "does not match 1 times"),
    (dict(times_s=np.array([])), "H >= 1"),
    (dict(stamp_s=math.nan), "stamp_s"),
])
def test_bad_chunk_raises_naming_the_problem(change, message):
    fields = dict(stamp_s=0.0, times_s=GOOD_TIMES, actions=GOOD_ACTIONS) | change
    with pytest.raises(ChunkError) as info:
        Chunk(**fields)
    assert message in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("actions, message", [
    (GOOD_ACTIONS[:, :7], "expected (H, 8) for cartesian"),
    (np.zeros((2, 8)), "quaternion of point 0 has zero norm"),
])
def test_chunk_not_fitting_the_space_raises_on_submit(actions, message):
    executor = ChunkExecutor(ChunkExecutorConfig(), CARTESIAN)
    with pytest.raises(ChunkError) as info:
        executor.submit(Chunk(0.0, GOOD_TIMES, actions), 0.0)
    assert message in str(info.value)
    assert executor.status(0.0).chunks_received == 0


@pytest.mark.parametrize("field, value", [
    ("strategy", "average"), ("interpolation", "spline"), ("continuity_blend_s", -0.1),
    ("ensemble_decay", math.inf), ("merge_old_weight", -1.0), ("frozen_steps", 1.5), ("crossfade_steps", -1),
    ("plan_dt_s", 0.0),
])
def test_config_rejects_bad_field_by_name(field, value):
    with pytest.raises(ConfigError, match=field):
        ChunkExecutorConfig(**{field: value})
