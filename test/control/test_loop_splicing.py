"""How the loop splices chunks: built in the offering thread, swapped in by the tick at its splice time.

Driven tick by tick with simulated stamps through the external-controller backend (ROS-free; states fed by the
test, pose targets recorded), so every assertion is exact and independent of machine load.
"""
import threading

import numpy as np
import pytest

from deploy.control.chunks import CARTESIAN, Chunk, ChunkExecutor, ChunkExecutorConfig
from deploy.control.impedance import CartesianImpedanceConfig, PANDA_HOME_Q_RAD
from deploy.control.loop import MAX_SPLICE_LEAD_S, SPLICE_LEAD_S, ControlLoop
from deploy.control.safety import SafetyConfig
from deploy.robots.base import RobotState
from deploy.robots.external import ExternalControllerRobot

PERIOD_S = 0.001
HOME_Q_RAD = np.array(PANDA_HOME_Q_RAD)
DOWN_XYZW = [1.0, 0.0, 0.0, 0.0]


class Arm:
    """The external controller's side: states fed with exact 1 ms stamps, targets recorded."""

    def __init__(self):
        self.robot = ExternalControllerRobot(state_rate_hz=1.0 / PERIOD_S, connect_timeout_s=0.1)
        self.targets = []
        self.robot.attach_publishers(lambda p, q, s: self.targets.append((s, np.array(p))), lambda w: None)
        self.tick_index = 0

    def next_state(self):
        self.robot.feed_state(RobotState(self.tick_index * PERIOD_S, HOME_Q_RAD, np.zeros(7), np.zeros(7), 0.04))
        self.tick_index += 1


def start(strategy: str = "temporal_ensemble") -> tuple[Arm, ControlLoop]:
    arm = Arm()
    arm.next_state()
    arm.robot.connect()
    safety = SafetyConfig(max_tcp_speed_m_per_s=2.0, startup_ramp_s=0.0)
    loop = ControlLoop(arm.robot, ChunkExecutorConfig(strategy=strategy), CartesianImpedanceConfig(), safety)
    return arm, loop


def tick(arm, loop):
    record = loop.tick(wait_timeout_s=1.0)
    arm.next_state()
    return record


def chunk_at(stamp_s, x_m):
    """Near the TCP at HOME_Q_RAD (0.307, 0, 0.441), slow: the safety layer passes it unchanged."""
    actions = np.tile(np.concatenate([[x_m, 0.0, 0.441], DOWN_XYZW, [0.04]]), (16, 1))
    actions[:, 0] += 0.002 * np.arange(16)  # a slow ramp in x, so plans differ point by point
    return Chunk(stamp_s, 0.05 * np.arange(1, 17), actions)


def test_a_chunk_is_built_in_the_offering_thread_and_swapped_in_at_its_splice_tick(monkeypatch):
    arm, loop = start()
    for _ in range(20):
        tick(arm, loop)
    now_s = loop.last_tick.state.stamp_s
    held = loop.executor.sample(now_s)  # before the first chunk the loop holds the measured pose
    first, second = chunk_at(now_s - 0.1, 0.307), chunk_at(now_s + 0.03, 0.312)
    loop.offer_chunk(first, CARTESIAN)
    prepared_in = []
    real_prepare = loop.executor.prepare
    monkeypatch.setattr(loop.executor, "prepare",
                        lambda *args: prepared_in.append(threading.current_thread().name) or real_prepare(*args))
    for _ in range(30):
        tick(arm, loop)
    offer_s = loop.last_tick.state.stamp_s
    first_splice_s = first.stamp_s + loop.chunk_status(offer_s).lag_s
    offerer = threading.Thread(target=loop.offer_chunk, args=(second, CARTESIAN), name="subscription")
    offerer.start()
    offerer.join()
    references = {}
    for _ in range(200):
        record = tick(arm, loop)
        references[round(record.state.stamp_s / PERIOD_S)] = record.reference_position_m
    assert prepared_in == ["subscription"]  # the tick only swapped it in
    splice_s = second.stamp_s + loop.chunk_status(record.state.stamp_s).lag_s  # the splice lead adapts to the
    lead_ticks = (splice_s - offer_s) / PERIOD_S  # build time (x2): at least SPLICE_LEAD_S, on a tick
    assert lead_ticks >= SPLICE_LEAD_S / PERIOD_S - 1e-6 and lead_ticks == pytest.approx(round(lead_ticks), abs=1e-6)

    # The same chunks submitted at those ticks by hand give the same plan: the executed reference matches it.
    expected = ChunkExecutor(loop.executor.config, CARTESIAN)
    expected.hold(held)  # ... and the first chunk glides in from there, as a new writer's
    expected.writer_changed()
    expected.submit(first, first_splice_s)
    expected.submit(second, splice_s)
    for index, reference_m in references.items():
        if index * PERIOD_S >= splice_s - 1e-9:
            np.testing.assert_allclose(reference_m, expected.sample(index * PERIOD_S)[:3], atol=1e-12)
    before_splice = round(splice_s / PERIOD_S) - 1
    plan_without_second = ChunkExecutor(loop.executor.config, CARTESIAN)
    plan_without_second.hold(held)
    plan_without_second.writer_changed()
    plan_without_second.submit(first, first_splice_s)
    np.testing.assert_allclose(references[before_splice], plan_without_second.sample(before_splice * PERIOD_S)[:3],
                               atol=1e-12)


def test_chunks_arriving_faster_than_the_splice_lead_are_still_executed():
    """Every 4 ms a new chunk replaces the pending one but keeps its splice time: one of them runs each lead."""
    arm, loop = start(strategy="replace")  # the reference is the newest chunk run
    tick(arm, loop)
    offered = 0
    for step in range(400):
        if step % 4 == 0:
            stamp_s = loop.last_tick.state.stamp_s
            loop.offer_chunk(chunk_at(stamp_s, 0.307 + 0.0001 * step), CARTESIAN)
            offered += 1
        tick(arm, loop)
    received = loop.chunk_status(loop.last_tick.state.stamp_s).chunks_received
    # At least one per splice lead (which follows the build time, between SPLICE_LEAD_S and MAX_SPLICE_LEAD_S);
    # were each splice pushed a lead past the newest chunk, none would ever run.
    assert received >= offered * 4 * PERIOD_S / MAX_SPLICE_LEAD_S - 1
    assert loop.rejected_chunks == 0
    newest_run_step = 396 - MAX_SPLICE_LEAD_S / PERIOD_S  # offered at most one (longest) lead ago
    assert loop.last_tick.reference_position_m[0] > 0.307 + 0.0001 * newest_run_step


def test_after_a_change_of_writer_the_old_writers_waiting_chunk_never_runs_and_the_new_one_glides_in():
    arm, loop = start()
    for _ in range(20):
        tick(arm, loop)
    loop.offer_chunk(chunk_at(loop.last_tick.state.stamp_s, 0.307), CARTESIAN)
    for _ in range(100):
        tick(arm, loop)
    loop.offer_chunk(chunk_at(loop.last_tick.state.stamp_s, 0.28), CARTESIAN)  # the policy's, waiting for its tick
    loop.writer_changed()  # the operator takes over before that tick
    references = np.array([tick(arm, loop).reference_position_m for _ in range(200)])
    assert np.diff(references[:, 0]).min() > -1e-9  # the executing chunk ramps on: the 3 cm step back never ran
    operator_x = references[-1][0] - 0.04  # 4 cm back (the stiffness and force limit keep offsets under 6 cm)
    loop.offer_chunk(chunk_at(loop.last_tick.state.stamp_s, operator_x), CARTESIAN)
    references = np.array([tick(arm, loop).reference_position_m for _ in range(1500)])
    speeds_m_s = np.linalg.norm(np.diff(references, axis=0), axis=1) / PERIOD_S
    seam_speed = loop.executor.config.seam_speed
    assert abs(references[-1][0] - (operator_x + 0.002 * 15)) < 0.002  # arrived on the operator's chunk ...
    assert speeds_m_s.max() < 1.2 * seam_speed + 0.04  # ... gliding (the chunk itself ramps at 0.04 m/s)


def test_the_first_chunk_glides_in_from_the_measured_pose():
    arm, loop = start()
    for _ in range(20):
        tick(arm, loop)
    home_x = loop.last_tick.reference_position_m[0]
    loop.offer_chunk(chunk_at(loop.last_tick.state.stamp_s, home_x - 0.03), CARTESIAN)  # starts 3 cm away
    references = np.array([tick(arm, loop).reference_position_m for _ in range(450)])  # (within the stale
    speeds_m_s = np.linalg.norm(np.diff(references, axis=0), axis=1) / PERIOD_S  # chunk timeout: no hold yet)
    assert references[:, 0].min() < home_x - 0.01  # on its way to the chunk ...
    assert speeds_m_s.max() < 1.2 * loop.executor.config.seam_speed + 0.04  # ... gliding, not at the safety clip
