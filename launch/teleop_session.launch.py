"""ROS 2 launch file for the `teleop_session` graph (sim + operator + episode log + learner):
`ros2 launch deploy teleop_session.launch.py [name:=value ...]`.

The graph itself (arguments, nodes, parameter files, remappings) is described once, in
`deploy/graph/description.py`; `deploy launch teleop_session` runs the same graph without a ROS 2 distro.
"""
from launch import LaunchDescription
from launch.actions import OpaqueFunction

from deploy.graph.ros_launch import declare_arguments, launch_nodes

GRAPH = "teleop_session"


def generate_launch_description():
    return LaunchDescription([*declare_arguments(GRAPH), OpaqueFunction(function=launch_nodes, args=[GRAPH])])
