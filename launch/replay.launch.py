"""ROS 2 launch file for the `replay` graph: `ros2 launch deploy replay.launch.py bag:=DIR [policy:=CKPT ...]`.

Replays a bag's observations (cameras, proprioception) and /clock into the policy node, which runs on bag
time; no robot, no cameras. The graph is described once, in `deploy/graph/description.py`; `deploy launch
replay bag:=DIR` runs the same graph without a ROS 2 distro.
"""
from launch import LaunchDescription
from launch.actions import OpaqueFunction

from deploy.graph.ros_launch import declare_arguments, launch_nodes

GRAPH = "replay"


def generate_launch_description():
    return LaunchDescription([*declare_arguments(GRAPH), OpaqueFunction(function=launch_nodes, args=[GRAPH])])
