"""The authority mux and the device operator, on an injected clock: deadman and hold-over timing, bumpless
takeover from the measured pose, one writer at a time, stale policy chunks dropped after the hand-back."""
import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from deploy.control.chunks import Chunk
from deploy.errors import ConfigError
from deploy.sensing.observation import Observation
from deploy.teleop.authority import AuthorityMux, Deadman, DeviceOperator, TeleopConfig
from deploy.teleop.devices import DeviceSample, OperatorDevice

DOWN = np.array([1.0, 0.0, 0.0, 0.0])
HOME = np.array([0.4, 0.05, 0.3])
TICK_S = 0.01


class PlayedDevice(OperatorDevice):
    """A device whose state the test sets; `read` hands out the queued presses once."""

    name = "played device"

    def __init__(self):
        self.twist, self.held, self.pending = np.zeros(6), False, []

    def read(self, now_s):
        events, self.pending = tuple(self.pending), []
        return DeviceSample(self.twist, self.held, events)


def observation(t_s, position=HOME, quat=DOWN, gripper_m=0.07):
    values = {"ee_pose": np.concatenate([position, quat]), "gripper_width": np.array([gripper_m])}
    return Observation(t_s, values, {k: t_s for k in values})


def policy_chunk(stamp_s, position=HOME + [0.1, 0.0, 0.0]):
    actions = np.tile(np.concatenate([position, DOWN, [0.04]]), (16, 1))
    return Chunk(stamp_s, 0.05 * np.arange(1, 17), actions)


@pytest.fixture
def rig():
    device = PlayedDevice()
    mux = AuthorityMux(DeviceOperator(device, TeleopConfig(max_linear_speed_m_s=0.1, max_angular_speed_rad_s=0.5,
                                                           hold_over_s=0.3, chunk_rate_hz=25.0)))
    return device, mux


def run(mux, start_s, end_s, measured=lambda t: observation(t)):
    """Tick at 100 Hz over [start_s, end_s); -> every MuxTick with its time."""
    ticks = []
    for t_s in np.arange(start_s, end_s - 1e-9, TICK_S):
        ticks.append((float(t_s), mux.tick(float(t_s), measured(float(t_s)))))
    return ticks


def test_deadman_holds_over_for_the_configured_time_after_release():
    deadman = Deadman(hold_over_s=0.3)
    assert not deadman.update(False, 0.0)
    assert deadman.update(True, 1.0) and deadman.update(True, 2.0)
    assert deadman.update(False, 2.1) and deadman.update(False, 2.3)
    assert not deadman.update(False, 2.31)
    assert deadman.update(True, 2.4)  # grabbed again


def test_takeover_starts_at_the_measured_pose_and_policy_chunks_stop(rig):
    device, mux = rig
    assert mux.policy_chunk(policy_chunk(0.95), 1.0, observation(1.0))  # policy in authority: forwarded
    assert run(mux, 0.0, 1.0)[-1][1].human is False

    device.held = True  # deadman, no motion: the operator's chunk holds exactly the measured pose
    (t_s, tick), *rest = run(mux, 1.0, 2.0)
    assert tick.human and tick.switched and tick.chunk is not None
    assert tick.chunk.stamp_s == t_s
    assert np.allclose(tick.chunk.actions[:, :3], HOME) and np.allclose(tick.chunk.actions[:, 3:7], DOWN)
    assert np.allclose(tick.chunk.actions[:, 7], 0.07)  # the measured gripper width
    assert all(r.human for _, r in rest)
    # 25 Hz operator chunks from a 100 Hz tick
    assert sum(r.chunk is not None for _, r in [(t_s, tick)] + rest) == 25
    # not a single policy chunk goes through while the operator has authority, whatever its stamp
    assert not any(mux.policy_chunk(policy_chunk(s), s + 0.03, observation(s)) for s in np.arange(1.0, 2.0, 0.2))


def test_hold_over_then_hand_back_drops_chunks_computed_while_the_operator_drove(rig):
    device, mux = rig
    device.held, device.twist = True, np.array([1.0, 0, 0, 0, 0, 0])
    last_held_s = run(mux, 0.0, 1.0)[-1][0]
    device.held = False  # let go: the target stands still for the hold-over, then the policy resumes
    ticks = run(mux, 1.0, 1.5)
    holding = [(t, r) for t, r in ticks if r.human]
    assert 0.3 - TICK_S - 1e-9 <= holding[-1][0] - last_held_s <= 0.3 + 1e-9
    held_positions = np.array([r.chunk.actions[:, :3] for _, r in holding if r.chunk is not None])
    assert np.ptp(held_positions.reshape(-1, 3), axis=0).max() < 1e-12
    handback_s = next(t for t, r in ticks if r.switched)
    assert 0.3 <= handback_s - last_held_s <= 0.3 + TICK_S + 1e-9 and mux.handback_s == handback_s
    assert not any(r.chunk for t, r in ticks if t >= handback_s)

    assert not mux.policy_chunk(policy_chunk(1.25), 1.4, observation(1.4))  # observed before the hand-back
    assert not mux.policy_may_write(handback_s)
    assert mux.policy_chunk(policy_chunk(handback_s + 0.02), 1.4, observation(1.4))


def test_twist_integrates_into_the_target_and_the_lead_over_the_arm_is_capped(rig):
    device, mux = rig
    device.held, device.twist = True, np.array([1.0, 0.0, -0.5, 0.0, 0.0, 1.0])
    measured = observation(0.0)
    for t_s in np.arange(0.0, 1.0 + 1e-6, TICK_S):
        tick = mux.tick(float(t_s), measured)
        if tick.chunk is not None:  # the arm follows: it is where the operator's last command put it
            first = tick.chunk.actions[0]
            measured = observation(t_s, first[:3], first[3:7])
    target = mux.operator.position_m
    assert target - HOME == pytest.approx([0.1, 0.0, -0.05], abs=1e-9)  # 1 s since the takeover at t = 0
    yaw_rad = (Rotation.from_quat(mux.operator.quat_xyzw) * Rotation.from_quat(DOWN).inv()).as_rotvec()
    assert yaw_rad == pytest.approx([0.0, 0.0, 0.5], abs=1e-9)  # about the base z axis
    # chunk points run ahead on the current velocity, 40 ms apart
    chunk = mux.operator.command(1.0, None)
    assert np.diff(chunk.actions[:, 0]) == pytest.approx([0.1 * 0.04] * 2)

    # An arm that does not move (blocked, clamped by safety): the target stops 5 cm ahead of it.
    device2 = PlayedDevice()
    stuck = AuthorityMux(DeviceOperator(device2, TeleopConfig(max_lead_m=0.05)))
    device2.held, device2.twist = True, np.array([1.0, 0, 0, 0, 0, 0])
    run(stuck, 0.0, 2.0)
    assert np.linalg.norm(stuck.operator.position_m - HOME) == pytest.approx(0.05)


def test_gripper_toggle_and_events(rig):
    device, mux = rig
    device.pending = ["success"]
    assert mux.tick(0.0, observation(0.0)).events == ("success",)  # events count without authority too
    device.held = True
    mux.tick(0.01, observation(0.01))
    device.pending = ["gripper", "failure"]
    tick = mux.tick(0.02, observation(0.02))
    assert tick.events == ("failure",)  # the gripper toggle is the operator's command, not an event
    assert mux.operator.command(0.02, None).actions[0, 7] == 0.0  # 0.07 measured -> closed
    device.pending = ["gripper", "rerecord"]
    assert mux.tick(0.03, observation(0.03)).events == ("rerecord",)
    assert mux.operator.command(0.03, None).actions[0, 7] == pytest.approx(0.08)


def test_no_takeover_without_a_measured_pose_and_the_policy_is_stopped_anyway(rig):
    device, mux = rig
    device.held = True
    tick = mux.tick(0.0, None)
    assert not tick.human and tick.chunk is None
    assert not mux.policy_chunk(policy_chunk(0.0), 0.0, None)  # the deadman always stops the policy
    assert mux.tick(0.01, observation(0.01)).human


def test_passthrough_forwards_everything():
    mux = AuthorityMux(None)
    assert mux.policy_chunk(policy_chunk(0.0), 0.0, None) and mux.policy_may_write(-1.0)
    tick = mux.tick(0.0, None)
    assert not tick.human and tick.chunk is None and tick.events == ()


def test_teleop_config_refuses_bad_values():
    with pytest.raises(ConfigError, match="teleop.hold_over_s -1"):
        TeleopConfig(hold_over_s=-1.0)
    with pytest.raises(ConfigError, match="controller would starve"):
        TeleopConfig(chunk_rate_hz=5.0, chunk_points=2, chunk_dt_s=0.04)
