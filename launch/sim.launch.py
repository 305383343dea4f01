"""ROS 2 launch file for the `sim` graph: `ros2 launch deploy sim.launch.py [name:=value ...]`.

The graph itself (arguments, nodes, parameter files, remappings) is described once, in
`deploy/graph/description.py`; `deploy launch sim` runs the same graph without a ROS 2 distro.
"""
from launch import LaunchDescription
from launch.actions import OpaqueFunction

from deploy.graph.ros_launch import declare_arguments, launch_nodes

GRAPH = "sim"


def generate_launch_description():
    return LaunchDescription([*declare_arguments(GRAPH), OpaqueFunction(function=launch_nodes, args=[GRAPH])])
