"""Round trips of every message <-> array mapping in deploy.nodes.conversions."""
import numpy as np
import pytest

from deploy.control.chunks import CARTESIAN, JOINT, Chunk
from deploy.nodes import conversions as conv


def test_time_round_trip_keeps_nanoseconds():
    for stamp_s in (0.0, 1.5, 1795307176.070754409, 12.000000001):
        assert conv.time_from_msg(conv.time_to_msg(stamp_s)) == pytest.approx(stamp_s, abs=1e-9)
    assert conv.duration_from_msg(conv.duration_to_msg(0.05)) == pytest.approx(0.05, abs=1e-9)


def test_cartesian_chunk_round_trip():
    rng = np.random.default_rng(0)
    actions = rng.normal(size=(16, 8))
    actions[:, 3:7] /= np.linalg.norm(actions[:, 3:7], axis=1, keepdims=True)
    chunk = Chunk(stamp_s=12.25, times_s=0.05 * np.arange(1, 17), actions=actions)
    msg = conv.chunk_to_msg(chunk, CARTESIAN)
    assert msg.joint_names == ["tcp", "gripper"] and msg.header.frame_id == "base"
    back, space = conv.chunk_from_msg(msg)
    assert space is CARTESIAN
    assert back.stamp_s == pytest.approx(12.25)
    np.testing.assert_allclose(back.times_s, chunk.times_s, atol=1e-9)
    np.testing.assert_allclose(back.actions, actions, atol=1e-12)


def test_joint_chunk_round_trip():
    actions = np.linspace(0, 1, 8 * 4).reshape(4, 8)
    chunk = Chunk(stamp_s=3.0, times_s=np.array([0.1, 0.2, 0.3, 0.4]), actions=actions)
    back, space = conv.chunk_from_msg(conv.chunk_to_msg(chunk, JOINT))
    assert space is JOINT
    np.testing.assert_allclose(back.actions, actions)


def test_image_round_trip_is_exact():
    image = np.random.default_rng(1).integers(0, 255, size=(48, 64, 3), dtype=np.uint8)
    msg = conv.image_to_msg(image, 5.5, "front_optical_frame")
    assert (msg.height, msg.width, msg.step, msg.encoding) == (48, 64, 192, "rgb8")
    np.testing.assert_array_equal(conv.image_from_msg(msg), image)


def test_joint_state_round_trip_by_name():
    q, dq, tau = np.arange(7.0), np.arange(7.0) / 10, -np.arange(7.0)
    msg = conv.joint_state_to_msg(2.0, q, dq, tau, 0.04)
    order = list(reversed(range(len(msg.name))))  # joint order must not matter
    msg.name = [msg.name[i] for i in order]
    msg.position, msg.velocity, msg.effort = ([list(a)[i] for i in order] for a in (msg.position, msg.velocity, msg.effort))
    stamp_s, q2, dq2, tau2, width = conv.joint_state_from_msg(msg)
    assert stamp_s == 2.0 and width == 0.04
    np.testing.assert_allclose(q2, q)
    np.testing.assert_allclose(dq2, dq)
    np.testing.assert_allclose(tau2, tau)


def test_pose_twist_and_labelled_array():
    stamp_s, position, quat = conv.pose_from_msg(conv.pose_to_msg([0.1, 0.2, 0.3], [0, 0, 0, 1], 4.0))
    assert stamp_s == 4.0
    np.testing.assert_allclose(position, [0.1, 0.2, 0.3])
    np.testing.assert_allclose(quat, [0, 0, 0, 1])
    twist = conv.twist_to_msg(np.arange(6.0), 1.0).twist
    assert (twist.linear.z, twist.angular.x) == (2.0, 3.0)
    values = {"lag_s": 0.12, "committed_steps": 3.0}
    assert conv.labelled_array_from_msg(conv.labelled_array_to_msg(values)) == values


def test_operator_twist_and_joy_round_trip():
    stamp_s, twist = conv.twist_from_msg(conv.twist_to_msg([0.5, -1.0, 0.25, 0.0, 0.125, -0.5], 7.25))
    assert stamp_s == 7.25 and twist.tolist() == [0.5, -1.0, 0.25, 0.0, 0.125, -0.5]
    stamp_s, axes, buttons = conv.joy_from_msg(conv.joy_to_msg([0.5, -0.25], [1, 0, 0, 1, 0], 3.5))
    assert (stamp_s, axes, buttons) == (3.5, [0.5, -0.25], [1, 0, 0, 1, 0])


def test_wrench_round_trip_keeps_order_stamp_and_frame():
    wrench = np.array([1.5, -2.0, 12.25, 0.1, -0.2, 0.03])  # [force N; torque N m]
    msg = conv.wrench_to_msg(wrench, 7.125)
    assert msg.header.frame_id == "base" and (msg.wrench.force.z, msg.wrench.torque.x) == (12.25, 0.1)
    stamp_s, back = conv.wrench_from_msg(msg)
    assert stamp_s == 7.125
    np.testing.assert_array_equal(back, wrench)
