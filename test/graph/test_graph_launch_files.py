"""The genuine ROS 2 launch files start exactly the nodes the runner starts.

`launch` and `launch_ros` cannot be installed here (DESIGN.md, "Facts measured"), so this test injects a
small fake pair of modules that records constructor arguments. This is the one place a fake is OK: it is a
unit test of one translation function (description → launch actions), not of ROS behaviour. The recorded
`Node(...)` arguments are turned back into the `--ros-args` a distro's launch would pass and compared with
the runner's own command for the same resolved node.
"""
import importlib.util
import sys
import types
from pathlib import Path

import pytest
import yaml

from deploy.graph.description import DDS_ENV_DEFAULTS, GRAPHS, resolve
from deploy.graph.runner import node_command, param_value

LAUNCH_DIR = Path(__file__).resolve().parents[2] / "launch"


class Recorded:
    """Base of the fake launch classes: remembers positional and keyword constructor arguments."""

    def __init__(self, *args, **kwargs):
        self.args = args
        self.kwargs = kwargs


def fake_launch_modules() -> dict[str, types.ModuleType]:
    names = ["LaunchDescription", "DeclareLaunchArgument", "OpaqueFunction", "SetEnvironmentVariable",
             "Shutdown", "LogInfo", "EnvironmentVariable", "LaunchConfiguration", "Node"]
    classes = {name: type(name, (Recorded,), {}) for name in names}
    modules = {name: types.ModuleType(name) for name in
               ["launch", "launch.actions", "launch.substitutions", "launch_ros", "launch_ros.actions"]}
    modules["launch"].LaunchDescription = classes["LaunchDescription"]
    for name in ["DeclareLaunchArgument", "OpaqueFunction", "SetEnvironmentVariable", "Shutdown", "LogInfo"]:
        setattr(modules["launch.actions"], name, classes[name])
    for name in ["EnvironmentVariable", "LaunchConfiguration"]:
        setattr(modules["launch.substitutions"], name, classes[name])
    modules["launch_ros.actions"].Node = classes["Node"]
    modules["launch"].actions = modules["launch.actions"]
    modules["launch"].substitutions = modules["launch.substitutions"]
    modules["launch_ros"].actions = modules["launch_ros.actions"]
    return modules


def load_and_run(launch_file: str, overrides: dict[str, str], monkeypatch):
    """Load a launch file, 'declare' its arguments like `ros2 launch` would, run its OpaqueFunction."""
    for name, module in fake_launch_modules().items():
        monkeypatch.setitem(sys.modules, name, module)
    spec = importlib.util.spec_from_file_location(f"launch_file_{launch_file.replace('.', '_')}",
                                                  LAUNCH_DIR / launch_file)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    entities = module.generate_launch_description().args[0]
    declared = [e for e in entities if type(e).__name__ == "DeclareLaunchArgument"]
    configurations = {e.args[0]: e.kwargs["default_value"] for e in declared}
    configurations.update(overrides)
    context = types.SimpleNamespace(launch_configurations=configurations)
    opaque = [e for e in entities if type(e).__name__ == "OpaqueFunction"]
    assert len(opaque) == 1
    nodes = opaque[0].kwargs["function"](context, *opaque[0].kwargs.get("args", []))
    return module.GRAPH, entities, nodes


def ros_args_of(node) -> list[str]:
    """The `--ros-args` a distro's launch_ros passes for a recorded Node: the shipped params files, then the
    inline parameters' file, read back here as the runner's `-p` arguments."""
    kw = node.kwargs
    out = ["--ros-args", "-r", f"__node:={kw['name']}"]
    for item in kw["parameters"]:
        if Path(item).name.startswith(f"deploy_{kw['name']}_"):
            for name, value in yaml.safe_load(Path(item).read_text())[kw["name"]]["ros__parameters"].items():
                out += ["-p", f"{name}:={param_value(value)}"]
        else:
            out += ["--params-file", item]
    for src, dst in kw["remappings"]:
        out += ["-r", f"{src}:={dst}"]
    return out


CASES = [
    ("sim.launch.py", {}),
    ("sim.launch.py", {"sim_mode": "lockstep", "cameras": "wrist", "policy": "/x/p.safetensors", "seed": "4"}),
    ("real_robot.launch.py", {}),
    ("real_robot.launch.py", {"robot": "franka", "cameras": ""}),
    ("real_robot.launch.py", {"robot": "franka", "robot_ip": "10.0.0.2", "realtime": "false", "gripper": "false",
                              "cameras": "front,wrist", "camera_serials": "front:012345678901,wrist:/dev/video2"}),
    ("real_robot.launch.py", {"robot": "external", "cameras": "", "use_sim_time": "true"}),
    ("teleop_session.launch.py", {}),
    ("teleop_session.launch.py", {"device": "keyboard", "learn": "false", "episodes": "5"}),
    ("teleop_session.launch.py", {"device": "spacemouse"}),
    ("teleop_session.launch.py", {"device": "external", "mapping": "operator_joy.yaml"}),
]


@pytest.mark.parametrize("launch_file, overrides", CASES)
def test_launch_file_nodes_equal_the_runner_commands(launch_file, overrides, monkeypatch):
    graph_name, entities, actions = load_and_run(launch_file, overrides, monkeypatch)
    assert launch_file == f"{graph_name}.launch.py"
    resolved = resolve(graph_name, overrides)
    nodes = [a for a in actions if type(a).__name__ == "Node"]
    notes = [a.kwargs["msg"] for a in actions if type(a).__name__ == "LogInfo"]
    # device:=keyboard starts no keyboard node (no terminal under launch): the launch says what to run instead
    keyboard = overrides.get("device") == "keyboard"
    assert notes == (["deploy: device:=keyboard: start the keyboard in another terminal: deploy operator keyboard  "
                      "(on a ROS 2 distro, same ROS_DOMAIN_ID: ros2 run deploy keyboard_operator)"] if keyboard else [])
    assert ("operator" in [n.name for n in resolved.nodes]) == (overrides.get("device") in ("gamepad", "spacemouse"))
    assert [n.kwargs["name"] for n in nodes] == [n.name for n in resolved.nodes]
    for node, expected in zip(nodes, resolved.nodes):
        assert node.kwargs["package"] == "deploy"
        assert node.kwargs["executable"] == expected.executable
        assert node.kwargs["output"] == "screen"
        assert ros_args_of(node) == node_command(expected)[3:]  # after `python -m <module>`
        on_exit = node.kwargs.get("on_exit", [])
        assert [type(a).__name__ for a in on_exit] == (["Shutdown"] if expected.required else [])


@pytest.mark.parametrize("launch_file", ["sim.launch.py", "real_robot.launch.py", "teleop_session.launch.py"])
def test_launch_file_declares_every_argument_and_the_dds_transport(launch_file, monkeypatch):
    graph_name, entities, _ = load_and_run(launch_file, {}, monkeypatch)
    declared = [e for e in entities if type(e).__name__ == "DeclareLaunchArgument"]
    graph = GRAPHS[graph_name]
    assert [e.args[0] for e in declared] == [a.name for a in graph.args]
    for entity, arg in zip(declared, graph.args):
        assert entity.kwargs["default_value"] == arg.default
        assert entity.kwargs["description"] == arg.description  # what `ros2 launch --show-args` prints
        assert entity.kwargs.get("choices") == (list(arg.choices) if arg.choices else None)
    env = {e.args[0]: e.args[1] for e in entities if type(e).__name__ == "SetEnvironmentVariable"}
    assert set(env) == set(DDS_ENV_DEFAULTS)
    for name, substitution in env.items():  # keeps the caller's value, else the package default
        assert substitution.args == (name,) and substitution.kwargs == {"default_value": DDS_ENV_DEFAULTS[name]}


def test_inline_parameters_file_keeps_a_leading_zero_serial_a_string_for_rcl():
    """rcl, not PyYAML, types the values: read the file back through rclpy's own parameter overrides."""
    import rclpy
    from rclpy.parameter import Parameter

    from deploy.graph.ros_launch import inline_params_file

    node = resolve("real_robot", {"robot": "franka", "cameras": "front", "robot_ip": "172.16.0.2",
                                  "camera_serials": "front:012345678901"}).node("camera_front")
    path = Path(inline_params_file(node))
    context = rclpy.Context()
    rclpy.init(args=["--ros-args", "--params-file", str(path)], context=context)
    try:
        probe = rclpy.create_node("camera_front", context=context)
        overrides = {name: (p.type_, p.value) for name, p in probe._parameter_overrides.items()}
        probe.destroy_node()
    finally:
        rclpy.shutdown(context=context)
        path.unlink()
    assert overrides == {"use_sim_time": (Parameter.Type.BOOL, False),
                         "camera_name": (Parameter.Type.STRING, "front"),
                         "kind": (Parameter.Type.STRING, "realsense"),
                         "serial": (Parameter.Type.STRING, "012345678901")}
