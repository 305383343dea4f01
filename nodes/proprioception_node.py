"""Proprioception node: republishes the controller's high-rate robot state at a configurable rate, with
the TCP pose (forward kinematics from the robot's model) and twist, all stamped with the sample time.

Samples are decimated by their own stamps (deploy.sensing.rate) and republished the moment they arrive: the
output rate is exact in the samples' clock however the node is scheduled, and no sample waits for a timer.
The gripper width travels in the joint states as the "gripper" entry (nodes/conversions.py). The external
wrench, when the robot measures one, comes from the controller on its own topic and is republished for exactly
the joint states that were (matched by stamp)."""
from __future__ import annotations

import dataclasses

from geometry_msgs.msg import PoseStamped, TwistStamped, WrenchStamped
from rclpy.node import Node
from rclpy.qos import QoSProfile
from sensor_msgs.msg import JointState

from deploy.errors import ConfigError
from deploy.graph.description import TOPICS
from deploy.nodes.common import SENSOR_QOS, declare_config, run_node
from deploy.nodes.conversions import (joint_state_from_msg, joint_state_to_msg, pose_to_msg, time_from_msg,
                                      twist_to_msg)
from deploy.robots.registry import make_model
from deploy.sensing.rate import StampDecimator, StampMatcher

# Best effort like the controller's state, 40 ms deep at 250 Hz: after a short deschedule the backlog still
# holds every sample, so the decimator fills every slot from the samples' own stamps. Not deeper: a node that
# stays behind (a starved CPU) works through a full backlog, and 100 deep made every pose it published 0.4-1 s
# old, which stops the policy; 10 deep keeps them fresh and drops samples instead.
STATE_BACKLOG_QOS = QoSProfile(depth=10, reliability=SENSOR_QOS.reliability, history=SENSOR_QOS.history)


@dataclasses.dataclass
class ProprioceptionConfig:
    robot: str = "sim"  # which kinematic model computes the TCP pose
    rate_hz: float = 100.0  # publish rate in the samples' clock [Hz]; at most the controller's state rate

    def __post_init__(self):
        if not 1.0 <= self.rate_hz <= 1000.0:
            raise ConfigError(f"rate_hz {self.rate_hz} outside [1, 1000]")


class ProprioceptionNode(Node):
    def __init__(self):
        super().__init__("proprioception")
        self.config = declare_config(self, ProprioceptionConfig)
        self.model = make_model(self.config.robot)
        self.decimator = StampDecimator(self.config.rate_hz)
        self.wrenches = StampMatcher(depth=STATE_BACKLOG_QOS.depth)
        self.joint_pub = self.create_publisher(JointState, TOPICS["joint_states"], SENSOR_QOS)
        self.pose_pub = self.create_publisher(PoseStamped, TOPICS["ee_pose"], SENSOR_QOS)
        self.twist_pub = self.create_publisher(TwistStamped, "/proprio/ee_twist", SENSOR_QOS)
        self.wrench_pub = self.create_publisher(WrenchStamped, TOPICS["ee_wrench"], SENSOR_QOS)
        self.create_subscription(JointState, "/robot/joint_states", self.on_state, STATE_BACKLOG_QOS)
        self.create_subscription(WrenchStamped, "/robot/ee_wrench", self.on_wrench, STATE_BACKLOG_QOS)

    def on_state(self, msg: JointState):
        stamp_s, q, dq, tau, gripper = joint_state_from_msg(msg)
        if not self.decimator.accept(stamp_s):
            return
        self.joint_pub.publish(joint_state_to_msg(stamp_s, q, dq, tau, gripper))
        position, quat = self.model.ee_pose(q)
        self.pose_pub.publish(pose_to_msg(position, quat, stamp_s))
        twist = self.model.jacobian(q) @ dq  # (6,) [linear; angular] in the base frame
        self.twist_pub.publish(twist_to_msg(twist, stamp_s))
        wrench = self.wrenches.accepted(stamp_s)
        if wrench is not None:
            self.wrench_pub.publish(wrench)

    def on_wrench(self, msg: WrenchStamped):
        """Republished as received (same stamp, frame and values) when its joint state was published."""
        if self.wrenches.offer(time_from_msg(msg.header.stamp), msg) is not None:
            self.wrench_pub.publish(msg)


def main():
    run_node(ProprioceptionNode)


if __name__ == "__main__":
    main()
