"""The control loop against the real sim process in lockstep: every tick answered, so torque-rate limits and
the workspace box can be checked tick by tick through faults (a far target, a NaN chunk, chunks stopping)."""
import os

import numpy as np
import pytest

from deploy.control.chunks import CARTESIAN, JOINT, Chunk, ChunkExecutorConfig
from deploy.control.impedance import CartesianImpedanceConfig, JointImpedanceConfig
from deploy.control.loop import ControlLoop
from deploy.control.safety import SafetyConfig
from deploy.robots.sim import SimRobot
from deploy.sim.process import SimConfig, SimProcess, connect_when_up

DOWN = [1.0, 0.0, 0.0, 0.0]


@pytest.fixture
def loop(request):
    space = getattr(request, "param", CARTESIAN)
    config = SimConfig(mode="lockstep", image_width=32, image_height=32, camera_rate_hz=1.0)
    sim = SimProcess(config, f"deploy_looptest_{os.getpid()}")
    robot = SimRobot(sim.link_name)
    try:
        connect_when_up(robot.connect)
    except BaseException:  # a sim that never came up is still stopped, its link removed
        sim.stop()
        raise
    safety = SafetyConfig(stale_chunk_timeout_s=0.3, soften_ramp_s=0.5)
    yield ControlLoop(robot, ChunkExecutorConfig(), CartesianImpedanceConfig(add_gravity=True), safety, space=space,
                      joint_impedance_config=JointImpedanceConfig(add_gravity=True))
    robot.stop()
    sim.stop()


def chunk(stamp_s, position, x_override=None):
    actions = np.tile(np.concatenate([position, DOWN, [0.04]]), (16, 1))
    if x_override is not None:
        actions[3, 0] = x_override
    return Chunk(stamp_s, 0.05 * np.arange(1, 17), actions)


def test_faults_never_exceed_the_torque_rate_or_leave_the_box(loop):
    start, far = [0.36, 0.05, 0.44], [1.5, 0.05, 0.44]
    # None: chunks stop. The far target lasts 2.5 s: the arm moves at about 0.2 m/s (the impedance law clips the
    # pose error at 5 cm) and gets within 1.5 cm of the box edge; after 1.5 s it was still 3 cm short.
    schedule = [(0.0, start), (1.0, far), (3.5, start), (4.5, None), (6.0, start)]
    box_max = np.array(loop.safety.config.workspace_max_m)
    taus, gravities, tcps = [], [], []
    nan_sent = False
    while True:
        record = loop.tick(wait_timeout_s=5.0)
        assert record is not None
        t = record.state.stamp_s
        if t > 9.0:
            break
        target = [p for s, p in schedule if s <= t][-1]
        if target is not None and record.state.seq % 100 == 0:
            loop.offer_chunk(chunk(t, target), CARTESIAN)
        if not nan_sent and t > 0.5:
            with pytest.raises(Exception):
                chunk(t, start, x_override=np.nan)  # a NaN never even becomes a Chunk ...
            nan_sent = True
        q = record.state.q_rad
        taus.append(record.tau_sent_nm)
        gravities.append(loop.robot.model.bias_torque(q, np.zeros(7)))
        tcps.append(loop.robot.model.ee_pose(q)[0])
    active = np.array(taus) - np.array(gravities)  # the limit applies to the torque beyond gravity
    steps = np.abs(np.diff(active[200:], axis=0))  # after the start-up hand-over from the brakes
    assert steps.max() <= loop.impedance.config.max_torque_rate_nm_per_tick + 1e-6
    assert np.array(tcps)[:, 0].max() < box_max[0] + 0.005
    assert np.array(tcps)[:, 0].max() > box_max[0] - 0.03
    assert loop.safety.trips.get("workspace", 0) >= 1
    assert loop.safety.trips.get("stale_chunk", 0) >= 1
    assert np.linalg.norm(tcps[-1] - np.array(start)) < 0.01  # resumed after the stale period


def test_a_malformed_chunk_is_counted_and_ignored(loop):
    record = loop.tick(wait_timeout_s=5.0)
    bad = object.__new__(Chunk)  # what a corrupt message would decode to if validation were skipped
    for name, value in (("stamp_s", record.state.stamp_s), ("times_s", np.array([0.1, 0.05])),
                        ("actions", np.zeros((2, 8))), ("weight_version", "")):
        object.__setattr__(bad, name, value)
    loop.offer_chunk(bad, CARTESIAN)
    for _ in range(50):
        record = loop.tick(wait_timeout_s=5.0)
    assert record is not None  # the loop kept running
    assert loop.rejected_chunks == 1, loop.last_rejection


@pytest.mark.parametrize("loop", [JOINT], indirect=True)
def test_joint_space_chunks_reach_their_joint_target(loop):
    target_q = np.array([0.3, -0.6, 0.1, -2.2, 0.1, 1.7, 0.6])
    actions = np.tile(np.concatenate([target_q, [0.04]]), (16, 1))
    while True:
        record = loop.tick(wait_timeout_s=5.0)
        assert record is not None
        if record.state.seq % 100 == 0:
            loop.offer_chunk(Chunk(record.state.stamp_s, 0.05 * np.arange(1, 17), actions), JOINT)
        if record.state.stamp_s > 4.0:
            break
    assert np.abs(record.state.q_rad - target_q).max() < 0.01
    loop.offer_chunk(Chunk(record.state.stamp_s, 0.05 * np.arange(1, 17), np.zeros((16, 8))), CARTESIAN)
    assert "executes joint chunks" in loop.last_rejection
