"""launch/replay.launch.py starts exactly the nodes `deploy launch replay` starts (checked with the fake
`launch` modules of test/graph/test_graph_launch_files.py: the real ones exist only on a ROS 2 distro)."""
import importlib.util
from pathlib import Path

import pytest

from deploy.graph.description import GRAPHS, resolve
from deploy.graph.runner import node_command

_spec = importlib.util.spec_from_file_location(
    "graph_launch_files", Path(__file__).resolve().parents[1] / "graph" / "test_graph_launch_files.py")
launch_files = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(launch_files)


@pytest.mark.parametrize("overrides", [{"bag": "/data/run1"},
                                       {"bag": "/b", "policy": "/c", "rate": "2.0", "loop": "true", "seed": "3"}])
def test_replay_launch_file_nodes_equal_the_runner_commands(overrides, monkeypatch):
    graph_name, entities, nodes = launch_files.load_and_run("replay.launch.py", overrides, monkeypatch)
    assert graph_name == "replay"
    resolved = resolve("replay", overrides)
    assert [n.kwargs["name"] for n in nodes] == ["replay", "policy"] == [n.name for n in resolved.nodes]
    for node, expected in zip(nodes, resolved.nodes):
        assert node.kwargs["executable"] == expected.executable
        assert launch_files.ros_args_of(node) == node_command(expected)[3:]
    declared = [e.args[0] for e in entities if type(e).__name__ == "DeclareLaunchArgument"]
    assert declared == [a.name for a in GRAPHS["replay"].args]
    policy = dict(resolved.node("policy").parameters)
    assert policy["use_sim_time"] is True  # the replay publishes /clock; the policy runs on bag time
    assert dict(resolved.node("replay").parameters)["preset"] == "observations"


def test_record_argument_adds_the_recorder_to_the_robot_graphs():
    for graph in ("real_robot", "sim", "robot"):
        assert "recorder" not in [n.name for n in resolve(graph, {}).nodes]
        recording = resolve(graph, {"record": "true", "bag": "/data/session"})
        assert recording.nodes[0].name == "recorder"  # first to start, last to stop
        assert dict(recording.nodes[0].parameters)["output"] == "/data/session"
