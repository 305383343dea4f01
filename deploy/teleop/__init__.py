"""Operator devices and the authority mux (ROS-free): who commands the controller, the policy or an operator.

`make_operator(device, ...)` picks the operator from the intervention node's `device` parameter:
"none" (passthrough: the policy always has authority), "scripted" (deploy.teleop.scripted), or a device
backend by name ("keyboard", "gamepad", "spacemouse"; deploy.teleop.devices).
"""
from __future__ import annotations

from deploy.errors import ConfigError
from deploy.teleop.authority import DeviceOperator, Operator, TeleopConfig
from deploy.teleop.devices import make_device
from deploy.teleop.scripted import ScriptedOperator, ScriptedOperatorConfig

PASSTHROUGH, SCRIPTED = "none", "scripted"


def make_operator(device: str, teleop: TeleopConfig, scripted: ScriptedOperatorConfig,
                  device_params: dict) -> Operator | None:
    """-> None for passthrough, else the operator; DeviceError (one line) when the device is absent."""
    if device == PASSTHROUGH:
        if device_params:
            raise ConfigError(f"device 'none' takes no device_params (got {', '.join(sorted(device_params))})")
        return None
    if device == SCRIPTED:
        return ScriptedOperator(scripted, **device_params)
    return DeviceOperator(make_device(device, **device_params), teleop)
