"""Bring-up launch arguments (robot_ip, realtime, gripper, camera_serials, params_file) resolved into the nodes'
parameters, as `deploy launch` and the launch files pass them (no processes)."""
import pytest

from deploy import cli
from deploy.errors import ConfigError
from deploy.graph.description import GRAPHS, camera_source, config_dir, effective_parameters, resolve

ROBOT_GRAPHS = ("real_robot", "robot")
SIM_GRAPHS = ("sim", "demo", "teleop_session")


def params(graph, node):
    return dict(graph.node(node).parameters)


@pytest.mark.parametrize("graph", ROBOT_GRAPHS)
def test_franka_arguments_set_the_controller_backend_parameters(graph):
    resolved = resolve(graph, {"robot": "franka", "robot_ip": "172.16.0.9", "realtime": "false",
                               "gripper": "false", "cameras": ""})
    controller = effective_parameters(resolved.node("controller"))
    assert controller["robot_params.ip"] == "172.16.0.9"  # over the YAML's 172.16.0.2
    assert controller["robot_params.realtime"] is False
    assert controller["robot_params.gripper"] is False
    assert controller["impedance.add_gravity"] is False  # the rest of controller_franka.yaml stays


def test_empty_arguments_keep_the_yaml_values():
    resolved = resolve("real_robot", {"robot": "franka", "robot_ip": "", "realtime": "", "gripper": "",
                                      "camera_serials": "", "cameras": "front"})
    controller = effective_parameters(resolved.node("controller"))
    assert controller["robot_params.ip"] == "172.16.0.2"
    assert "robot_params.realtime" not in controller and "robot_params.gripper" not in controller  # backend default
    assert not any(name.startswith("robot_params.") for name, _ in resolved.node("controller").parameters)
    assert effective_parameters(resolved.node("camera_front"))["kind"] == "realsense"
    assert "serial" not in effective_parameters(resolved.node("camera_front"))


def test_ur_takes_robot_ip_only():
    resolved = resolve("real_robot", {"robot": "ur", "robot_ip": "192.168.0.77", "cameras": ""})
    assert effective_parameters(resolved.node("controller"))["robot_params.ip"] == "192.168.0.77"
    for arg in ("realtime", "gripper"):
        with pytest.raises(ConfigError, match=f"launch argument '{arg}' does not apply to robot:=ur "
                                              r"\(only to robot:=franka\)"):
            resolve("real_robot", {"robot": "ur", arg: "true"})


@pytest.mark.parametrize("robot", ["sim", "external"])
def test_robot_ip_does_not_apply_to_sim_or_external(robot):
    with pytest.raises(ConfigError) as err:
        resolve("real_robot", {"robot": robot, "robot_ip": "10.0.0.1"})
    assert str(err.value) == (f"launch argument 'robot_ip' does not apply to robot:={robot} "
                              "(only to robot:=franka|ur)")


@pytest.mark.parametrize("graph", SIM_GRAPHS)
def test_sim_graphs_declare_no_hardware_arguments_but_cameras_and_params_file(graph):
    names = [a.name for a in GRAPHS[graph].args]
    assert "robot_ip" not in names and "realtime" not in names and "gripper" not in names
    assert "camera_serials" in names and "params_file" in names


def test_bool_arguments_refuse_other_words():
    with pytest.raises(ConfigError) as err:
        resolve("real_robot", {"robot": "franka", "realtime": "yes"})
    assert str(err.value) == "unknown realtime 'yes' (choose ''|true|false)"


@pytest.mark.parametrize("value, expected", [
    ("012345678901", {"kind": "realsense", "serial": "012345678901"}),  # leading zero kept: a string
    ("f1230450", {"kind": "realsense", "serial": "f1230450"}),
    ("/dev/video4", {"kind": "opencv", "device": "/dev/video4"}),
    ("2", {"kind": "opencv", "device": "2"}),
    ("/dev/v4l/by-id/usb-cam", {"kind": "realsense", "serial": "/dev/v4l/by-id/usb-cam"}),
])
def test_camera_source_contract(value, expected):
    assert camera_source(value) == expected


@pytest.mark.parametrize("suffix, kind", [(".bag", "realsense"), (".db3", "realsense"), (".mp4", "opencv"), (".MKV", "opencv"),
                                          (".avi", "opencv")])
def test_camera_source_files_become_absolute_paths(tmp_path, monkeypatch, suffix, kind):
    (tmp_path / f"take{suffix}").write_bytes(b"\0")
    monkeypatch.chdir(tmp_path)
    assert camera_source(f"take{suffix}") == {"kind": kind, "path": str(tmp_path / f"take{suffix}"),
                                              "width": 0, "height": 0, "fps": 0.0}  # the recording's own
    with pytest.raises(ConfigError, match=f"camera recording not found: .*/missing{suffix}"):
        camera_source(f"missing{suffix}")


def test_camera_serials_reach_each_camera_node_over_the_yaml():
    resolved = resolve("real_robot", {"robot": "franka", "cameras": "front,wrist,side",
                                      "camera_serials": "front:012345678901, wrist:/dev/video2"})
    front = effective_parameters(resolved.node("camera_front"))
    assert (front["kind"], front["serial"], front["width"]) == ("realsense", "012345678901", 640)
    wrist = effective_parameters(resolved.node("camera_wrist"))
    assert (wrist["kind"], wrist["device"]) == ("opencv", "/dev/video2")
    assert "serial" not in effective_parameters(resolved.node("camera_side"))  # not mapped: the YAML's


def test_camera_serials_replace_a_sim_camera(tmp_path):
    video = tmp_path / "table.mp4"
    video.write_bytes(b"\0")
    resolved = resolve("sim", {"cameras": "front", "camera_serials": f"front:{video}"})
    front = effective_parameters(resolved.node("camera_front"))
    assert (front["kind"], front["path"]) == ("opencv", str(video))


def test_a_recording_mapped_onto_a_real_camera_plays_at_its_own_size(tmp_path):
    video = tmp_path / "wrist.mp4"
    video.write_bytes(b"\0")
    resolved = resolve("real_robot", {"robot": "ur", "cameras": "wrist", "camera_serials": f"wrist:{video}"})
    wrist = effective_parameters(resolved.node("camera_wrist"))  # cameras_ur.yaml asks devices for 640x480@30
    assert (wrist["kind"], wrist["path"], wrist["width"], wrist["height"], wrist["fps"]) == (
        "opencv", str(video), 0, 0, 0.0)
    assert wrist["output_width"] == 128  # the config's preprocessing stays


@pytest.mark.parametrize("value, message", [
    ("front", "launch argument 'camera_serials': 'front' must be NAME:VALUE (e.g. front:123456789012)"),
    ("front:", "launch argument 'camera_serials': 'front:' must be NAME:VALUE (e.g. front:123456789012)"),
    ("front:1,front:2", "launch argument 'camera_serials' gives 'front' twice: 'front:1,front:2'"),
    ("top:123", "launch argument 'camera_serials' names 'top', which is not in cameras:=wrist,front"),
])
def test_bad_camera_serials_are_one_line(value, message):
    with pytest.raises(ConfigError) as err:
        resolve("real_robot", {"robot": "franka", "camera_serials": value})
    assert str(err.value) == message


# --- params_file ------------------------------------------------------------------------------------------
def write(path, text):
    path.write_text(text)
    return path


def test_params_file_is_layered_after_the_shipped_files_on_the_nodes_it_names(tmp_path):
    user = write(tmp_path / "mine.yaml", "controller:\n  ros__parameters:\n    impedance:\n"
                                         "      damping_ratio: 0.7\n    robot_params.ip: 10.1.1.1\n"
                                         "camera_front:\n  ros__parameters:\n    exposure_us: 500.0\n")
    resolved = resolve("real_robot", {"robot": "franka", "params_file": str(user)})
    controller = resolved.node("controller")
    assert controller.params_files == (config_dir() / "controller_franka.yaml", user)
    values = effective_parameters(controller)
    assert values["impedance.damping_ratio"] == 0.7  # nested namespace joined with '.'
    assert values["robot_params.ip"] == "10.1.1.1"
    assert values["impedance.add_gravity"] is False  # untouched shipped values stay
    assert resolved.node("camera_front").params_files[-1] == user
    assert resolved.node("camera_wrist").params_files == (config_dir() / "cameras_franka.yaml",)
    assert resolved.node("policy").params_files == (config_dir() / "policy.yaml",)
    # a launch argument wins over the file, as -p wins over --params-file in rcl
    resolved = resolve("real_robot", {"robot": "franka", "params_file": str(user), "robot_ip": "10.2.2.2"})
    assert effective_parameters(resolved.node("controller"))["robot_params.ip"] == "10.2.2.2"


def test_params_file_wildcard_section_reaches_every_node(tmp_path, monkeypatch):
    user = write(tmp_path / "all.yaml", "/**:\n  ros__parameters:\n    diagnostics_period_s: 2.0\n")
    monkeypatch.chdir(tmp_path)
    resolved = resolve("sim", {"params_file": "all.yaml"})  # relative to the working directory
    assert resolved.args["params_file"] == str(user)
    assert all(node.params_files[-1] == user for node in resolved.nodes)


def test_params_file_reaches_the_runner_command_line(tmp_path, capsys):
    user = write(tmp_path / "mine.yaml", "controller:\n  ros__parameters:\n    impedance.damping_ratio: 0.7\n")
    assert cli.main(["launch", "real_robot", "robot:=franka", "cameras:=", f"params_file:={user}",
                     "robot_ip:=10.0.0.3", "realtime:=false", "--dry-run"]) == 0
    line = next(l for l in capsys.readouterr().out.splitlines() if "controller_node" in l)
    assert (f"--params-file {config_dir() / 'controller_franka.yaml'} --params-file {user} "
            "-p use_sim_time:=false -p 'robot_params.ip:=\"10.0.0.3\"' -p robot_params.realtime:=false") in line


@pytest.mark.parametrize("text, message", [
    ("controller:\n  ros__parameters:\n    a: [1, 2\n", r"mine\.yaml:4: invalid YAML: expected ',' or ']'"),
    ("controller:\n  ros__parameters:\n  a: 1\n", r"mine\.yaml:1: section 'controller' must contain exactly "
                                                   "'ros__parameters:'"),
    ("controler:\n  ros__parameters:\n    a: 1\n", r"mine\.yaml:1: section 'controler' names no node of graph "
                                                    r"'real_robot' \(nodes: controller, camera_wrist, "),
    ("policy:\n  ros__parameters:\n    seed: 3\n", r"mine\.yaml:1: parameter 'seed' of node 'policy' is set by the "
                                                   r"graph \(seed:=\{seed\}\), which would hide this value$"),
    ("camera_front:\n  ros__parameters:\n    camera_name: x\n", r"mine\.yaml:1: parameter 'camera_name' of node "
                                                               r"'camera_front' is set by the graph \(camera_name:=\{item\}\)"),
])
def test_bad_params_file_is_one_line_naming_file_and_node(tmp_path, text, message):
    user = write(tmp_path / "mine.yaml", text)
    with pytest.raises(ConfigError, match=message) as err:
        resolve("real_robot", {"robot": "franka", "params_file": str(user)})
    assert "\n" not in str(err.value)


def test_missing_params_file_is_named(tmp_path, capsys):
    assert cli.main(["launch", "real_robot", f"params_file:={tmp_path}/nope.yaml", "--dry-run"]) == 2
    assert capsys.readouterr().err == f"deploy: error: parameter file not found: {tmp_path}/nope.yaml\n"


@pytest.mark.parametrize("graph", ["real_robot", "robot", "sim", "teleop_session"])
def test_show_args_lists_every_argument_with_its_description(graph, capsys):
    assert cli.main(["launch", graph, "--show-args"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("Arguments (pass arguments as '<name>:=<value>'):")
    for arg in GRAPHS[graph].args:
        assert f"\n    '{arg.name}':\n        {arg.description}" in out
    if graph in ("real_robot", "robot"):
        assert "'robot_ip':" in out and "'camera_serials':" in out and "'params_file':" in out
