"""resolve(): arguments, conditions, substitution, topic wiring, and every bad-input case (no processes)."""
import subprocess
import sys
from pathlib import Path

import pytest

from deploy import cli
from deploy.errors import ConfigError
from deploy.graph import description as d
from deploy.graph.description import (GRAPHS, TOPICS, Graph, InlineParam, LaunchArg, NodeSpec, config_dir,
                                      parse_launch_args, register_graph, resolve)

REPO = Path(__file__).resolve().parents[2]


def names(graph):
    return [n.name for n in graph.nodes]


def test_defaults_give_the_sim_graph_in_start_order():
    graph = resolve("real_robot", {})
    assert graph.args == {"robot": "sim", "policy": "", "cameras": "wrist,front", "use_sim_time": "false",
                          "sim_mode": "realtime", "seed": "0", "record": "false", "bag": "", "robot_ip": "",
                          "realtime": "", "gripper": "", "camera_serials": "", "params_file": ""}
    assert names(graph) == ["sim", "controller", "camera_wrist", "camera_front", "proprioception", "policy",
                            "intervention"]
    assert [n.name for n in graph.nodes if n.required] == ["sim", "controller", "intervention"]
    assert names(resolve("sim", {})) == names(graph)


def test_condition_drops_sim_node_on_real_robots_and_robot_is_substituted():
    graph = resolve("real_robot", {"robot": "ur", "cameras": ""})
    assert names(graph) == ["controller", "proprioception", "policy", "intervention"]
    assert graph.node("controller").params_files == (config_dir() / "controller_ur.yaml",)


def test_cameras_list_makes_one_node_each_with_its_name():
    graph = resolve("sim", {"cameras": " wrist , side,"})
    cams = [n for n in graph.nodes if n.executable == "camera_node"]
    assert [n.name for n in cams] == ["camera_wrist", "camera_side"]
    assert dict(cams[1].parameters)["camera_name"] == "side"
    assert cams[1].params_files == (config_dir() / "cameras_sim.yaml",)
    assert cams[1].module == "deploy.nodes.camera_node"


def test_inline_parameters_are_typed_and_use_sim_time_reaches_every_node():
    graph = resolve("sim", {"policy": "/ckpt/model.safetensors", "seed": "7", "use_sim_time": "true"})
    assert dict(graph.node("policy").parameters) == {"use_sim_time": True, "checkpoint": "/ckpt/model.safetensors",
                                                     "seed": 7}
    assert dict(graph.node("sim").parameters) == {"use_sim_time": True, "seed": 7, "mode": "realtime",
                                                  "cameras": "wrist,front"}  # the sim renders only these
    assert all(dict(n.parameters)["use_sim_time"] is True for n in graph.nodes)


def test_lockstep_implies_sim_time():
    graph = resolve("sim", {"sim_mode": "lockstep"})
    assert graph.args["use_sim_time"] == "true"
    assert all(dict(n.parameters)["use_sim_time"] is True for n in graph.nodes)


def test_topic_wiring_one_writer_to_the_controller():
    graph = resolve("sim", {})
    assert dict(graph.node("policy").remappings) == {"~/chunk": TOPICS["policy_chunk"],
                                                     "~/joint_chunk": TOPICS["policy_joint_chunk"]}
    assert dict(graph.node("intervention").remappings) == {
        "~/policy_chunk": TOPICS["policy_chunk"], "~/policy_joint_chunk": TOPICS["policy_joint_chunk"],
        "~/chunk": TOPICS["controller_chunk"], "~/joint_chunk": TOPICS["controller_joint_chunk"]}
    assert dict(graph.node("controller").remappings) == {"~/chunk": TOPICS["controller_chunk"],
                                                         "~/joint_chunk": TOPICS["controller_joint_chunk"]}
    # one writer to the controller: only the intervention node's outputs map onto the controller's topics
    controller_topics = {TOPICS["controller_chunk"], TOPICS["controller_joint_chunk"]}
    writers = [n.name for n in graph.nodes if n.name != "controller"
               and controller_topics & set(dict(n.remappings).values())]
    assert writers == ["intervention"]


@pytest.mark.parametrize("robot", ["sim", "franka", "ur", "external"])
def test_every_shipped_config_file_has_the_ros_parameters_shape(robot):
    cameras = "wrist,front" if robot == "sim" else ""  # only cameras_sim.yaml ships so far
    graph = resolve("real_robot", {"robot": robot, "cameras": cameras})
    assert all(path.is_file() for node in graph.nodes for path in node.params_files)


@pytest.mark.parametrize("args, message", [
    ({"foo": "1"}, "unknown launch argument 'foo' for graph 'real_robot' "
                   "(known: robot, policy, cameras, use_sim_time, sim_mode, seed, record, bag, robot_ip, realtime, "
                   "gripper, camera_serials, params_file)"),
    ({"robot": "kuka"}, "unknown robot 'kuka' (choose sim|franka|ur|external)"),
    ({"use_sim_time": "yes"}, "unknown use_sim_time 'yes' (choose true|false)"),
    ({"sim_mode": "fast"}, "unknown sim_mode 'fast' (choose realtime|lockstep)"),
    ({"seed": "1.5"}, "launch argument 'seed' must be an integer, got '1.5'"),
    ({"cameras": "wrist,wrist"}, "launch argument 'cameras' lists a name twice: 'wrist,wrist'"),
    ({"cameras": "wrist-2"}, "launch argument 'cameras': 'wrist-2' is not a valid name (letters, digits, _)"),
])
def test_bad_arguments_raise_one_line_naming_them(args, message):
    with pytest.raises(ConfigError) as err:
        resolve("real_robot", args)
    assert str(err.value) == message


def test_sim_graph_only_allows_the_sim_robot():
    with pytest.raises(ConfigError, match=r"^unknown robot 'franka' \(choose sim\)$"):
        resolve("sim", {"robot": "franka"})


def test_unknown_graph():
    with pytest.raises(ConfigError, match=r"^unknown graph 'nope' \(choose .*real_robot.*\)$"):
        resolve("nope", {})


def test_missing_params_file_is_named(tmp_path):
    name = _one_node_graph(tmp_path, "solo:\n  ros__parameters: {}\n", template="missing_{x}.yaml")
    with pytest.raises(ConfigError, match=r"parameter file not found: .*missing_1\.yaml"):
        resolve(name, {})


def _one_node_graph(tmp_path, yaml_text, name="solo", template="solo.yaml", params=()):
    (tmp_path / "solo.yaml").write_text(yaml_text)
    graph = Graph(name=f"test_{tmp_path.name}", description="test", args=(LaunchArg("x", "1", "x"),),
                  nodes=(NodeSpec(name, "solo_node", "solo_module", (template,), parameters=params),),
                  config_dir=str(tmp_path))
    register_graph(graph)
    return graph.name


@pytest.mark.parametrize("text, message", [
    ("solo:\n  ros__parameters:\n    a: [1, 2\n", r"solo\.yaml:4: invalid YAML"),
    ("solo:\n\tros__parameters: {}\n", r"solo\.yaml:2: invalid YAML"),
    ("- solo\n", r"solo\.yaml:1: expected '<node name>: ros__parameters:'"),
    ("", r"solo\.yaml:1: expected '<node name>: ros__parameters:'"),
    ("other:\n  ros__parameters:\n    a: 1\n", r"solo\.yaml:1: no 'solo:' or '/\*\*:' section"),
    ("solo:\n  ros__parameters:\n    a: 1\nother:\n  params:\n    a: 1\n",
     r"solo\.yaml:4: section 'other' must contain exactly 'ros__parameters:'"),
    ("solo:\n  ros__parameters: 3\n", r"solo\.yaml:2: 'solo: ros__parameters' must be a mapping"),
])
def test_bad_yaml_names_file_and_line(tmp_path, text, message):
    graph = _one_node_graph(tmp_path, text)
    with pytest.raises(ConfigError, match=message):
        resolve(graph, {})


@pytest.mark.parametrize("key", ["solo", "/solo", "/**", "/**/solo"])
def test_yaml_section_keys_accepted(tmp_path, key):
    graph = _one_node_graph(tmp_path, f"{key}:\n  ros__parameters:\n    a: 1\n")
    assert resolve(graph, {}).nodes[0].params_files == (tmp_path / "solo.yaml",)


def test_template_naming_an_unknown_argument_is_a_config_error(tmp_path):
    graph = _one_node_graph(tmp_path, "solo:\n  ros__parameters: {}\n", template="solo_{robot}.yaml")
    with pytest.raises(ConfigError, match=r"template 'solo_\{robot\}\.yaml' references unknown argument 'robot'"):
        resolve(graph, {})


def test_inline_parameter_of_wrong_type(tmp_path):
    graph = _one_node_graph(tmp_path, "solo:\n  ros__parameters: {}\n", params=(InlineParam("n", "{x}", "int"),))
    assert resolve(graph, {"x": "4"}).nodes[0].parameters == (("n", 4),)
    with pytest.raises(ConfigError, match=r"^node 'solo': parameter 'n' must be a int, got 'four'$"):
        resolve(graph, {"x": "four"})


def test_parse_launch_args():
    assert parse_launch_args(["robot:=ur", "policy:=", "x:=a:=b"]) == {"robot": "ur", "policy": "", "x": "a:=b"}
    with pytest.raises(ConfigError, match=r"^launch argument 'robot=ur' must be written name:=value$"):
        parse_launch_args(["robot=ur"])


def test_config_dir_prefers_the_ament_share_directory(tmp_path, monkeypatch):
    monkeypatch.delenv("AMENT_PREFIX_PATH", raising=False)
    assert config_dir() == REPO / "config"
    (tmp_path / "share/ament_index/resource_index/packages").mkdir(parents=True)
    (tmp_path / "share/ament_index/resource_index/packages/deploy").write_text("")
    (tmp_path / "share/deploy/config").mkdir(parents=True)
    monkeypatch.setenv("AMENT_PREFIX_PATH", str(tmp_path))
    assert config_dir() == tmp_path / "share/deploy/config"


def test_graph_modules_import_neither_rclpy_nor_launch():
    code = ("import sys, deploy.graph.description, deploy.graph.runner, deploy.graph.ros_launch, deploy.cli\n"
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('rclpy', 'launch', 'launch_ros'))\n"
            "assert not bad, bad\n")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_cli_dry_run_prints_the_commands(capsys):
    assert cli.main(["launch", "sim", "cameras:=wrist", "--dry-run", "--domain-id", "9"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert "ROS_DOMAIN_ID=9" in out[0] and "ROS_AUTOMATIC_DISCOVERY_RANGE=SYSTEM_DEFAULT" in out[0]
    assert "FASTDDS_DEFAULT_PROFILES_FILE=" in out[0] and "fastdds_localhost.xml" in out[0]
    assert out[1].startswith("required ") and "-m deploy.nodes.sim_node --ros-args -r __node:=sim" in out[1]
    assert len(out) == 1 + 6


@pytest.mark.parametrize("argv, message", [
    (["launch", "real_robot", "robot:=kuka"], "deploy: error: unknown robot 'kuka' (choose sim|franka|ur|external)"),
    (["launch", "real_robot", "--domain-id", "999"], "deploy: error: --domain-id 999 is out of range (0..232)"),
    (["launch", "sim", "seed"], "deploy: error: launch argument 'seed' must be written name:=value"),
])
def test_cli_config_errors_are_one_line_exit_2(capsys, argv, message):
    assert cli.main(argv) == 2
    captured = capsys.readouterr()
    assert captured.err == message + "\n" and captured.out == ""


def test_graphs_registered():
    assert {"real_robot", "sim"} <= set(GRAPHS)
    assert d.SIM.arg("robot").choices == ("sim",)
