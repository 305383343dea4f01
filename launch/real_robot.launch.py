"""ROS 2 launch file for the `real_robot` graph: `ros2 launch deploy real_robot.launch.py [name:=value ...]`.

The graph itself (arguments, nodes, parameter files, remappings) is described once, in
`deploy/graph/description.py`; `deploy launch real_robot` runs the same graph without a ROS 2 distro.
"""
from launch import LaunchDescription
from launch.actions import OpaqueFunction

from deploy.graph.ros_launch import declare_arguments, launch_nodes

GRAPH = "real_robot"


def generate_launch_description():
    return LaunchDescription([*declare_arguments(GRAPH), OpaqueFunction(function=launch_nodes, args=[GRAPH])])
