"""Operator node: one of our operator devices (keyboard, gamepad, spacemouse; deploy.teleop.devices) published as
the operator topic contract (deploy.teleop.mapping, config/operator_deploy.yaml), which the intervention node
hears. Like teleop_twist_keyboard, the keyboard reads the terminal it is started in:

    ros2 run deploy keyboard_operator        (or: deploy operator keyboard)

Parameters: `device` (keyboard | gamepad | spacemouse; fixed by the keyboard_operator / gamepad_operator /
spacemouse_operator entry points), `rate_hz` (publish rate), the device's options as `device_params.<name>`.
Topics out: /operator/twist (TwistStamped, each component -1..1 of full speed), /operator/joy (Joy buttons:
deadman, gripper, success, failure, rerecord). It republishes every period, so its silence means it is gone.
An absent device stops the node with one line naming it.
"""
from __future__ import annotations

import dataclasses

from geometry_msgs.msg import TwistStamped
from rclpy.node import Node
from rclpy.parameter import Parameter
from sensor_msgs.msg import Joy

from deploy.errors import ConfigError
from deploy.nodes.common import COMMAND_QOS, declare_config, declare_prefixed, run_node
from deploy.nodes.conversions import joy_to_msg, twist_to_msg
from deploy.teleop import OUR_DEVICES
from deploy.teleop.devices import keyboard_help, make_device
from deploy.teleop.mapping import ContractEncoder

JOY_TOPIC, TWIST_TOPIC = "/operator/joy", "/operator/twist"  # as config/operator_deploy.yaml maps them


@dataclasses.dataclass
class OperatorNodeConfig:
    device: str = "keyboard"  # keyboard | gamepad | spacemouse
    rate_hz: float = 25.0  # Joy + TwistStamped per second, also while nothing changes (joy_node: 20) [Hz]

    def __post_init__(self):
        if self.device not in OUR_DEVICES:
            raise ConfigError(f"unknown operator device '{self.device}' (choose {'|'.join(OUR_DEVICES)}; "
                              "other drivers publish the topics themselves: device:=external)")
        if not 5.0 <= self.rate_hz <= 1000.0:
            raise ConfigError(f"rate_hz {self.rate_hz} outside [5, 1000]")


class OperatorNode(Node):
    def __init__(self, device: str | None = None, name: str = "operator"):
        super().__init__(name)
        if device is not None:  # an entry point that names its device
            given = self._parameter_overrides.get("device")
            if given is not None and given.value != device:
                raise ConfigError(f"{name} is the {device} operator (got device:={given.value})")
            self._parameter_overrides["device"] = Parameter("device", value=device)
        self.config = declare_config(self, OperatorNodeConfig)
        self.device = make_device(self.config.device, **declare_prefixed(self, "device_params."))
        self.encoder = ContractEncoder()
        self.joy_pub = self.create_publisher(Joy, JOY_TOPIC, COMMAND_QOS)
        self.twist_pub = self.create_publisher(TwistStamped, TWIST_TOPIC, COMMAND_QOS)
        self._held: bool | None = None
        self.create_timer(1.0 / self.config.rate_hz, self.on_tick)
        self.get_logger().info(f"{self.device.name} -> {JOY_TOPIC}, {TWIST_TOPIC}")
        if self.config.device == "keyboard":
            print(keyboard_help(), flush=True)

    def on_tick(self):
        now_s = self.get_clock().now().nanoseconds * 1e-9
        sample = self.device.read(now_s)
        for twist, buttons in self.encoder.encode(sample):
            self.twist_pub.publish(twist_to_msg(twist, now_s))
            self.joy_pub.publish(joy_to_msg([], buttons, now_s))
        if sample.deadman_held != self._held:
            self._held = sample.deadman_held
            self.get_logger().info("deadman held: asking for authority" if self._held else "deadman released")
        for event in sample.events:
            self.get_logger().info(f"pressed: {event}")

    def close(self):
        self.device.close()


def main():
    run_node(OperatorNode)


def keyboard_main():
    run_node(lambda: OperatorNode("keyboard", "keyboard_operator"))


def gamepad_main():
    run_node(lambda: OperatorNode("gamepad", "gamepad_operator"))


def spacemouse_main():
    run_node(lambda: OperatorNode("spacemouse", "spacemouse_operator"))


if __name__ == "__main__":
    main()
