"""The bag-side conversions in deploy.nodes.conversions: rclpy and rosbags agree on the bytes (so raw CDR can
go from DDS to a bag and back), QoS round trips, unknown types are named, and a chunk that does not decode
(NaN) is rejected and fails replay-test's safety gate."""
import numpy as np
import pytest
from rclpy.qos import DurabilityPolicy, ReliabilityPolicy
from rclpy.serialization import serialize_message

from bag_helpers import STORE, joint_state
from deploy.bags.replay_test import read_chunks
from deploy.bags.report import controller_configs, evaluate
from deploy.bags.store import BagWriter, qos_from_bag, qos_to_bag
from deploy.bags.thresholds import Thresholds
from deploy.bags.topics import QosSpec
from deploy.control.chunks import CARTESIAN, Chunk
from deploy.graph.description import config_dir
from deploy.nodes.conversions import (chunk_from_msg, chunk_to_msg, clock_to_msg, joint_state_from_msg,
                                      message_class, message_from_cdr, qos_from_profile, qos_to_profile)
from deploy.robots.mujoco_model import MujocoRobotModel

CHUNK_TYPE = "trajectory_msgs/msg/MultiDOFJointTrajectory"


def test_rosbags_bytes_decode_in_rclpy_and_back():
    t_ns = 1_700_000_000_123_456_789
    data = STORE.serialize_cdr(joint_state(t_ns), "sensor_msgs/msg/JointState")
    stamp_s, q, _, _, gripper = joint_state_from_msg(message_from_cdr(data, "sensor_msgs/msg/JointState"))
    assert stamp_s == pytest.approx(t_ns * 1e-9) and gripper == 0.04
    np.testing.assert_allclose(q, joint_state(t_ns).position[:7])
    again = STORE.deserialize_cdr(serialize_message(message_from_cdr(data, "sensor_msgs/msg/JointState")),
                                  "sensor_msgs/msg/JointState")  # padding bytes may differ, the values may not
    assert again.name == joint_state(t_ns).name and list(again.position) == list(joint_state(t_ns).position)


def test_a_chunk_serialized_by_rclpy_reads_back_in_rosbags():
    actions = np.tile([0.45, 0.0, 0.25, 1.0, 0.0, 0.0, 0.0, 0.04], (4, 1)) + 0.001 * np.arange(4)[:, None]
    chunk = Chunk(1.7e9 + 0.25, 0.05 * np.arange(1, 5), actions)
    data = serialize_message(chunk_to_msg(chunk, CARTESIAN))
    msg = STORE.deserialize_cdr(data, "trajectory_msgs/msg/MultiDOFJointTrajectory")
    assert [p.transforms[0].translation.x for p in msg.points] == list(actions[:, 0])
    back, _ = chunk_from_msg(message_from_cdr(data, "trajectory_msgs/msg/MultiDOFJointTrajectory"))
    np.testing.assert_array_equal(back.actions, actions)


def test_qos_round_trip_and_clock():
    overridden = QosSpec(keep_all=True, depth=1, deadline_ns=1_000_000_500, lifespan_ns=3, manual_liveliness=True,
                         liveliness_lease_ns=2 * 10**9)  # what a rosbag2 QoS override file can ask for
    for spec in (QosSpec(), QosSpec(reliable=False, depth=5), QosSpec(reliable=True, transient_local=True, depth=1),
                 overridden):
        assert qos_from_profile(qos_to_profile(spec)) == spec
        assert qos_from_bag(qos_to_bag(spec)) == spec  # and through a bag's offered_qos_profiles
    profile = qos_to_profile(QosSpec(reliable=False))
    assert profile.reliability == ReliabilityPolicy.BEST_EFFORT and profile.durability == DurabilityPolicy.VOLATILE
    clock = clock_to_msg(12_000_000_007)
    assert (clock.clock.sec, clock.clock.nanosec) == (12, 7)


def test_unknown_message_type_is_named():
    with pytest.raises(ValueError, match="message type 'nope_msgs/msg/Thing' is not installed"):
        message_class("nope_msgs/msg/Thing")
    assert message_class("sensor_msgs/msg/Image").__name__ == "Image"


def test_a_nan_chunk_in_a_bag_is_rejected_and_fails_the_safety_gate(tmp_path):
    good = Chunk(1.0, 0.05 * np.arange(1, 5), np.tile([0.45, 0.0, 0.25, 1.0, 0.0, 0.0, 0.0, 0.04], (4, 1)))
    bad = chunk_to_msg(Chunk(1.2, good.times_s, good.actions), CARTESIAN)
    bad.points[2].transforms[0].translation.y = float("nan")
    with BagWriter(tmp_path / "bag") as bag:
        bag.add_topic("/policy/chunk", CHUNK_TYPE)
        bag.write("/policy/chunk", 1_030_000_000, serialize_message(chunk_to_msg(good, CARTESIAN)))
        bag.write("/policy/chunk", 1_230_000_000, serialize_message(bad))
    chunks, rejected = read_chunks(tmp_path / "bag", "/policy/chunk", CHUNK_TYPE)
    assert [c.stamp_ns for c in chunks] == [10**9] and chunks[0].arrival_s == pytest.approx(1.03)
    assert rejected == ["chunk stamped 1200000000 ns: chunk: actions has non-finite value at point 2, component 1"]
    executor_config, safety_config = controller_configs(config_dir() / "controller_sim.yaml")
    result = evaluate(start_ns=10**9, recorded=[], replayed=chunks, rejected=rejected, skipped_sets={},
                      thresholds=Thresholds(), executor_config=executor_config, safety_config=safety_config,
                      model=MujocoRobotModel(), info={})
    assert result.failures == ["1 safety trips and rejected chunks > 0"]
    assert result.report["chunks"]["rejected"] == rejected
