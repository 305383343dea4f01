"""Robot-state and gripper mappings for arms of any joint count, and foreign JointStates (ros2_control's
joint_state_broadcaster: own joint names, own order, no gripper entry)."""
import numpy as np
import pytest
from sensor_msgs.msg import JointState

from deploy.nodes import conversions as conv


def test_six_joint_state_round_trips_under_the_package_names():
    q, dq, tau = np.arange(6.0), np.arange(6.0) / 10, -np.arange(6.0)
    msg = conv.joint_state_to_msg(3.0, q, dq, tau, float("nan"))
    assert msg.name == ["joint1", "joint2", "joint3", "joint4", "joint5", "joint6", "gripper"]
    stamp_s, q2, dq2, tau2, width_m = conv.joint_state_from_msg(msg)
    assert stamp_s == 3.0 and np.isnan(width_m)
    np.testing.assert_array_equal(q2, q)
    np.testing.assert_array_equal(dq2, dq)
    np.testing.assert_array_equal(tau2, tau)


def test_foreign_joint_state_is_read_by_the_given_names_in_model_order():
    names = [f"fr3_joint{i}" for i in range(1, 8)]
    order = [3, 0, 6, 1, 5, 2, 4]
    msg = JointState(name=[names[i] for i in order] + ["fr3_finger_joint1"],
                     position=[float(i) for i in order] + [0.02])  # no velocities or efforts
    msg.header.stamp = conv.time_to_msg(7.5)
    stamp_s, q, dq, tau, width_m = conv.joint_state_from_msg(msg, names, "gripper")
    assert stamp_s == 7.5 and np.isnan(width_m)
    np.testing.assert_array_equal(q, np.arange(7.0))
    assert not dq.any() and not tau.any()
    assert conv.joint_state_from_msg(msg, names, "fr3_finger_joint1")[4] == 0.02
    with pytest.raises(ValueError, match=r"lacks joints \['shoulder_pan_joint'\]"):
        conv.joint_state_from_msg(msg, ["shoulder_pan_joint"])
    msg.position = msg.position[:3]
    with pytest.raises(ValueError, match="8 names but 3 positions"):
        conv.joint_state_from_msg(msg, names)


def test_gripper_width_round_trip():
    assert conv.gripper_width_from_msg(conv.gripper_width_to_msg(0.035)) == 0.035
