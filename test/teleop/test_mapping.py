"""The operator topic contract (deploy.teleop.mapping): mapping YAML parsing with one-line errors naming the bad
key, Joy / Twist -> the operator's command, staleness as a released deadman, and our nodes' encoding round trip."""
import re

import numpy as np
import pytest
import yaml

from deploy.errors import ConfigError
from deploy.graph.description import config_dir
from deploy.teleop import ScriptedOperatorConfig, TeleopConfig, make_operator
from deploy.teleop.devices import DeviceSample
from deploy.teleop.mapping import CONTRACT_BUTTONS, ContractEncoder, TopicDevice, load_mapping, mapping_from_dict

JOY = {"joy_topic": "/joy", "timeout_s": 0.5, "deadzone": 0.1,
       "axes": {"x": "joy.axes[1]", "y": {"from": "joy.axes[0]", "scale": -2.0}, "yaw": "joy.axes[3]"},
       "deadman": "joy.buttons[4]", "buttons": {"gripper": "joy.buttons[0]", "success": "joy.buttons[7]"}}


@pytest.mark.parametrize("name", ["operator_deploy.yaml", "operator_joy.yaml", "operator_spacenav.yaml"])
def test_shipped_mappings_parse(name):
    mapping = load_mapping(config_dir() / name)
    assert mapping.axes and mapping.timeout_s == 0.5


@pytest.mark.parametrize("change, message", [
    ({"axis": {}}, "unknown key 'axis' (known: joy_topic"),
    ({"axes": {"forward": "joy.axes[1]"}}, "axes.forward: unknown axis (choose x|y|z|roll|pitch|yaw)"),
    ({"axes": {"x": "joy.axis[1]"}}, "axes.x: 'joy.axis[1]' is not joy.axes[N] or twist.linear|angular.x|y|z"),
    ({"axes": {"x": {"from": "joy.axes[1]", "scale": 0}}}, "axes.x.scale: 0 must be a non-zero number"),
    ({"axes": {"x": {"form": "joy.axes[1]"}}}, "axes.x: expected 'from' and optional 'scale', got form"),
    ({"axes": {"x": "twist.linear.x"}}, "axes read twist but twist_topic is empty"),
    ({"deadman": "joy.axes[4]"}, "deadman: 'joy.axes[4]' is not joy.buttons[N] or 'deflection'"),
    ({"buttons": {"grip": "joy.buttons[0]"}}, "buttons.grip: unknown event (choose gripper|success|failure|rerecord)"),
    ({"buttons": {"success": 7}}, "buttons.success: '7' is not joy.buttons[N]"),
    ({"timeout_s": 0}, "timeout_s: 0 outside [0.01, 10.0]"),
    ({"joy_topic": "joy stick"}, "joy_topic: 'joy stick' is not a topic name"),
    ({"joy_topic": ""}, "joy_topic and twist_topic are both empty"),
])
def test_bad_mappings_fail_with_one_line_naming_the_key(tmp_path, change, message):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({**JOY, **change}))
    with pytest.raises(ConfigError) as error:
        load_mapping(path)
    assert message in str(error.value) and str(path) in str(error.value) and "\n" not in str(error.value)


def test_missing_or_broken_file_is_one_line(tmp_path):
    with pytest.raises(ConfigError, match=r"operator mapping .*nope.yaml: No such file"):
        load_mapping(tmp_path / "nope.yaml")
    (tmp_path / "broken.yaml").write_text("axes: [\n")
    with pytest.raises(ConfigError, match=r"broken.yaml:2: invalid YAML: expected"):
        load_mapping(tmp_path / "broken.yaml")


def test_joy_axes_and_buttons_become_the_command():
    device = TopicDevice(mapping_from_dict(JOY), "pad")
    axes = [0.3, 0.8, 0.0, -0.05, 0.0]  # axes[3] inside the deadzone
    buttons = [0] * 8
    buttons[4] = 1  # deadman
    device.on_joy(1.0, axes, buttons)
    sample = device.read(1.1)
    np.testing.assert_allclose(sample.twist, [0.8, -0.6, 0, 0, 0, 0])
    assert sample.deadman_held and sample.events == ()
    device.on_joy(1.2, [0.0, 2.0], [1, 0, 0, 0, 1, 0, 0, 1])  # gripper + success pressed; x clipped to 1
    device.on_joy(1.25, [0.0, 2.0], [1, 0, 0, 0, 1, 0, 0, 1])  # still down: no new press
    sample = device.read(1.3)
    assert sample.events == ("gripper", "success") and sample.twist[0] == 1.0
    assert device.read(1.31).events == ()
    device.on_joy(1.4, [], [0, 0, 0, 0, 0, 0, 0, 0])  # released; the short axes list reads as centred
    sample = device.read(1.4)
    assert not sample.deadman_held and not sample.twist.any()


def test_a_silent_stream_reads_as_a_released_deadman():
    device = TopicDevice(mapping_from_dict(JOY), "pad")
    assert not device.read(0.0).deadman_held  # nothing ever received
    assert device.silent_topics(0.0) == ("/joy",)
    device.on_joy(1.0, [0.0, 1.0], [0, 0, 0, 0, 1])
    assert device.read(1.5).deadman_held and device.silent_topics(1.5) == ()  # exactly timeout_s old: still fresh
    sample = device.read(1.51)
    assert not sample.deadman_held and not sample.twist.any() and device.silent_topics(1.51) == ("/joy",)


def test_deflection_deadman_and_twist_source():
    mapping = mapping_from_dict({"twist_topic": "/spacenav/twist", "deadzone": 0.05, "deadman": "deflection",
                                 "axes": {"x": "twist.linear.x", "yaw": {"from": "twist.angular.z", "scale": 0.5}}})
    device = TopicDevice(mapping, "puck")
    device.on_twist(0.0, [0.02, 0, 0, 0, 0, 0.04])  # inside the deadzone: let go
    assert not device.read(0.0).deadman_held
    device.on_twist(0.1, [0.5, 0, 0, 0, 0, -1.0])
    sample = device.read(0.1)
    assert sample.deadman_held
    np.testing.assert_allclose(sample.twist, [0.5, 0, 0, 0, 0, -0.5])
    assert not device.read(0.7).deadman_held  # silent past timeout_s


def test_our_nodes_encoding_round_trips_through_the_shipped_mapping():
    device = TopicDevice(load_mapping(config_dir() / "operator_deploy.yaml"), "ours")
    encoder = ContractEncoder()
    samples = [DeviceSample([0, 0, 1, 0, 0, 0], True, ("success",)),
               DeviceSample([0.5, 0, 0, 0, 0, 0], True, ("success", "gripper")),  # success pressed again at once
               DeviceSample([0, 0, 0, 0, 0, 0], False, ())]
    presses, held, twists = [], [], []
    for t, sample in enumerate(samples):
        messages = encoder.encode(sample)
        for twist, buttons in messages:
            assert len(buttons) == len(CONTRACT_BUTTONS)
            device.on_twist(float(t), twist)
            device.on_joy(float(t), [], buttons)
        read = device.read(float(t))
        presses += read.events
        held.append(read.deadman_held)
        twists.append(read.twist.tolist())
    assert presses == ["success", "gripper", "success"]  # every press seen, the repeat too
    assert held == [True, True, False]
    assert twists == [[0, 0, 1, 0, 0, 0], [0.5, 0, 0, 0, 0, 0], [0] * 6]


def test_operators_heard_on_topics_read_their_mapping_by_name_or_path(tmp_path):
    joy = make_operator("external", TeleopConfig(), ScriptedOperatorConfig(), {}, "operator_joy.yaml")
    assert joy.name == "external operator on /joy" and joy.device.mapping.deadman == 4
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump(JOY))
    assert make_operator("gamepad", TeleopConfig(), ScriptedOperatorConfig(), {}, str(path)).device.mapping.buttons \
        == {"gripper": 0, "success": 7}
    with pytest.raises(ConfigError, match=f"operator mapping {config_dir() / 'nope.yaml'}: No such file"):
        make_operator("keyboard", TeleopConfig(), ScriptedOperatorConfig(), {}, "nope.yaml")
    with pytest.raises(ConfigError, match="device 'keyboard' takes no device_params \\(got terminal\\); device options "
                                          "go to the operator node"):
        make_operator("keyboard", TeleopConfig(), ScriptedOperatorConfig(), {"terminal": "/dev/tty"}, "operator_deploy.yaml")
    with pytest.raises(ConfigError, match=re.escape("unknown device 'joystick' (choose none|scripted|keyboard|")):
        make_operator("joystick", TeleopConfig(), ScriptedOperatorConfig(), {}, "operator_deploy.yaml")
