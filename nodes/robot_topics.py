"""The ROS side of a robot backend reached over topics (`Robot.topic_bridge`: an external compliant controller):
its target publishers and joint-state subscription, created on the controller node; the backend stays ROS-free."""
from __future__ import annotations

from geometry_msgs.msg import PoseStamped
from rclpy.node import Node
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64

from deploy.nodes.common import COMMAND_QOS, SENSOR_QOS
from deploy.nodes.conversions import gripper_width_to_msg, joint_state_from_msg, pose_to_msg
from deploy.robots.base import Robot, RobotState


def bridge_robot_topics(node: Node, robot: Robot) -> None:
    """Hand the backend its publishers (before connect) and feed it the arm's joint states as they come."""
    bridge = robot.topic_bridge
    pose_pub = node.create_publisher(PoseStamped, bridge.pose_target_topic, COMMAND_QOS)
    gripper_pub = node.create_publisher(Float64, bridge.gripper_topic, COMMAND_QOS) if bridge.gripper_topic else None
    robot.attach_publishers(
        lambda position_m, quat_xyzw, stamp_s: pose_pub.publish(pose_to_msg(position_m, quat_xyzw, stamp_s)),
        lambda width_m: gripper_pub.publish(gripper_width_to_msg(width_m)) if gripper_pub else None)

    def on_joint_state(msg: JointState):
        try:
            stamp_s, q_rad, dq_rad_s, tau_nm, gripper_m = joint_state_from_msg(msg, bridge.joint_names,
                                                                                bridge.gripper_joint)
        except ValueError as error:
            node.get_logger().error(f"{bridge.joint_state_topic}: {error}", throttle_duration_sec=5.0)
            return
        if stamp_s == 0.0:  # an unstamped state describes the moment it arrived
            stamp_s = node.get_clock().now().nanoseconds * 1e-9
        robot.feed_state(RobotState(stamp_s, q_rad, dq_rad_s, tau_nm, gripper_m))

    node.create_subscription(JointState, bridge.joint_state_topic, on_joint_state, SENSOR_QOS)
