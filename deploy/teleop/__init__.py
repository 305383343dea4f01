"""Operator input and the authority mux (ROS-free): who commands the controller, the policy or an operator.

`make_operator(device, ...)` picks the operator from the intervention node's `device` parameter:
"none" (passthrough: the policy always has authority), "scripted" (deploy.teleop.scripted, in-process: it
judges every policy chunk and its expert's chunks are the logged corrections), or an operator heard on topics
(LISTENED: our keyboard / gamepad / spacemouse operator nodes, or "external" drivers such as joy_node and
spacenav), read through a mapping YAML (deploy.teleop.mapping).
"""
from __future__ import annotations

from pathlib import Path

from deploy.errors import ConfigError
from deploy.graph.description import config_dir
from deploy.teleop.authority import DeviceOperator, Operator, TeleopConfig
from deploy.teleop.mapping import TopicDevice, load_mapping
from deploy.teleop.scripted import ScriptedOperator, ScriptedOperatorConfig

PASSTHROUGH, SCRIPTED = "none", "scripted"
OUR_DEVICES = ("keyboard", "gamepad", "spacemouse")  # each has an operator node (nodes/operator_node.py)
LISTENED = (*OUR_DEVICES, "external")
DEVICE_CHOICES = (PASSTHROUGH, SCRIPTED, *LISTENED)


def make_operator(device: str, teleop: TeleopConfig, scripted: ScriptedOperatorConfig,
                  device_params: dict, mapping: str) -> Operator | None:
    """-> None for passthrough, else the operator (a DeviceOperator over a TopicDevice for LISTENED devices).
    `mapping`: a mapping YAML's file name in the package's config dir, or a path."""
    if device not in DEVICE_CHOICES:
        raise ConfigError(f"unknown device '{device}' (choose {'|'.join(DEVICE_CHOICES)})")
    if device != SCRIPTED and device_params:
        raise ConfigError(f"device '{device}' takes no device_params (got {', '.join(sorted(device_params))}); "
                          "device options go to the operator node")
    if device == PASSTHROUGH:
        return None
    if device == SCRIPTED:
        return ScriptedOperator(scripted, **device_params)
    path = Path(mapping)
    mapping = load_mapping(path if path.is_absolute() or path.parent != Path(".") else config_dir() / path)
    heard = " and ".join(t for t in (mapping.joy_topic, mapping.twist_topic) if t)
    return DeviceOperator(TopicDevice(mapping, f"{device} operator on {heard}"), teleop)
