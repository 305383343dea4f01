"""Intervention node: the authority mux. Exactly one source writes the controller's chunk topic; the
intervention flag is published at the control-visible rate so every logged step knows who was in charge.

This first slice knows one source, the policy; operator devices join through deploy/teleop/.
"""
from __future__ import annotations

import dataclasses

from rclpy.node import Node
from std_msgs.msg import Bool
from trajectory_msgs.msg import JointTrajectory, MultiDOFJointTrajectory

from deploy.errors import ConfigError
from deploy.nodes.common import COMMAND_QOS, declare_config, run_node


@dataclasses.dataclass
class InterventionConfig:
    flag_rate_hz: float = 100.0  # publish rate of /intervention/active [Hz]

    def __post_init__(self):
        if not 1.0 <= self.flag_rate_hz <= 1000.0:
            raise ConfigError(f"flag_rate_hz {self.flag_rate_hz} outside [1, 1000]")


class InterventionNode(Node):
    def __init__(self):
        super().__init__("intervention")
        self.config = declare_config(self, InterventionConfig)
        self.human_has_authority = False
        self.cartesian_out = self.create_publisher(MultiDOFJointTrajectory, "~/chunk", COMMAND_QOS)
        self.joint_out = self.create_publisher(JointTrajectory, "~/joint_chunk", COMMAND_QOS)
        self.create_subscription(MultiDOFJointTrajectory, "~/policy_chunk",
                                 lambda msg: self.forward_policy(self.cartesian_out, msg), COMMAND_QOS)
        self.create_subscription(JointTrajectory, "~/policy_joint_chunk",
                                 lambda msg: self.forward_policy(self.joint_out, msg), COMMAND_QOS)
        self.flag_pub = self.create_publisher(Bool, "/intervention/active", COMMAND_QOS)
        self.create_timer(1.0 / self.config.flag_rate_hz, self.publish_flag)

    def forward_policy(self, publisher, msg):
        if not self.human_has_authority:
            publisher.publish(msg)

    def publish_flag(self):
        self.flag_pub.publish(Bool(data=self.human_has_authority))


def main():
    run_node(InterventionNode)


if __name__ == "__main__":
    main()
