"""Intervention node: the authority mux. Exactly one source writes the controller's chunk topic - the policy or
the operator (deploy.teleop) - and the intervention flag is published every tick so every logged step knows
who was in charge.

Parameters: `device` ("none" passthrough | scripted | keyboard | gamepad | spacemouse | external), `mapping`
(the operator input mapping YAML: a file name in the package's config dir, or a path), `teleop.*`
(deploy.teleop.authority.TeleopConfig), `scripted.*` (deploy.teleop.scripted.ScriptedOperatorConfig) and the
scripted expert's options as `device_params.<name>`. Operator devices are their own nodes (operator_node); this
node hears them on the mapping's sensor_msgs/Joy and geometry_msgs/TwistStamped topics (deploy.teleop.mapping).
Topics: `~/policy_chunk` / `~/policy_joint_chunk` in, `~/chunk` / `~/joint_chunk` out (remapped by the graph);
`/intervention/active` (Bool, every tick), `/intervention/human_chunk` (what the operator commanded, the
logged human action), `/intervention/event` (String: success | failure | rerecord). Operator chunks are
Cartesian, stamped when commanded.
"""
from __future__ import annotations

import dataclasses

import numpy as np
from geometry_msgs.msg import PoseStamped, TwistStamped
from rclpy.node import Node
from sensor_msgs.msg import JointState, Joy
from std_msgs.msg import Bool, String
from trajectory_msgs.msg import JointTrajectory, MultiDOFJointTrajectory

from deploy.control.chunks import CARTESIAN, ChunkError
from deploy.errors import ConfigError
from deploy.graph.description import STATE_TOPICS, TOPICS
from deploy.nodes.common import COMMAND_QOS, LATCHED_QOS, SENSOR_QOS, declare_config, declare_prefixed, run_node
from deploy.nodes.conversions import (
    chunk_from_msg,
    chunk_to_msg,
    joint_state_from_msg,
    joy_from_msg,
    pose_from_msg,
    time_from_msg,
    twist_from_msg,
)
from deploy.sensing.observation import ObservationAssembler
from deploy.teleop import DEVICE_CHOICES, ScriptedOperatorConfig, TeleopConfig, make_operator
from deploy.teleop.authority import AuthorityMux
from deploy.teleop.mapping import TopicDevice


@dataclasses.dataclass
class InterventionConfig:
    device: str = "none"  # none (passthrough) | scripted | keyboard | gamepad | spacemouse | external
    mapping: str = "operator_deploy.yaml"  # operator input mapping: file name in the config dir, or a path
    flag_rate_hz: float = 100.0  # tick rate: device polled, /intervention/active published [Hz]
    state_max_age_s: float = 0.2  # older proprioception / cube pose cannot start a takeover [s]

    def __post_init__(self):
        if self.device not in DEVICE_CHOICES:
            raise ConfigError(f"unknown device '{self.device}' (choose {'|'.join(DEVICE_CHOICES)})")
        if not 1.0 <= self.flag_rate_hz <= 1000.0:
            raise ConfigError(f"flag_rate_hz {self.flag_rate_hz} outside [1, 1000]")
        if not self.state_max_age_s > 0:
            raise ConfigError(f"state_max_age_s {self.state_max_age_s} must be > 0")


class InterventionNode(Node):
    def __init__(self):
        super().__init__("intervention")
        self.config = declare_config(self, InterventionConfig)
        teleop = declare_config(self, TeleopConfig, "teleop.")
        scripted = declare_config(self, ScriptedOperatorConfig, "scripted.")
        self.operator = make_operator(self.config.device, teleop, scripted, declare_prefixed(self, "device_params."),
                                      self.config.mapping)
        self.mux = AuthorityMux(self.operator)
        keys = self.operator.state_keys if self.operator is not None else ()
        unknown = sorted(set(keys) - set(STATE_TOPICS))
        if unknown:
            raise ConfigError(f"device '{self.config.device}' needs inputs {unknown} this node cannot subscribe")
        self.assembler = ObservationAssembler({k: self.config.state_max_age_s for k in keys}, "ee_pose") if keys else None
        self._blocked = self._verdict = ""

        self.cartesian_out = self.create_publisher(MultiDOFJointTrajectory, "~/chunk", COMMAND_QOS)
        self.joint_out = self.create_publisher(JointTrajectory, "~/joint_chunk", COMMAND_QOS)
        self.flag_pub = self.create_publisher(Bool, TOPICS["intervention_active"], COMMAND_QOS)
        self.deadman_pub = self.create_publisher(Bool, TOPICS["intervention_deadman"], COMMAND_QOS)  # the console's
        self.human_pub = self.create_publisher(MultiDOFJointTrajectory, "/intervention/human_chunk", COMMAND_QOS)
        self.event_pub = self.create_publisher(String, "/intervention/event", COMMAND_QOS)
        self.create_subscription(MultiDOFJointTrajectory, "~/policy_chunk", self.on_policy_chunk, COMMAND_QOS)
        self.create_subscription(JointTrajectory, "~/policy_joint_chunk", self.on_policy_joint_chunk, COMMAND_QOS)
        if "ee_pose" in keys:
            self.create_subscription(PoseStamped, STATE_TOPICS["ee_pose"], self.on_pose("ee_pose"), SENSOR_QOS)
        if "cube_pose" in keys:
            self.create_subscription(PoseStamped, STATE_TOPICS["cube_pose"], self.on_pose("cube_pose"), SENSOR_QOS)
        if "gripper_width" in keys:
            self.create_subscription(JointState, STATE_TOPICS["gripper_width"], self.on_joints, SENSOR_QOS)
        device = getattr(self.operator, "device", None)
        self.heard = device if isinstance(device, TopicDevice) else None
        self._silent: tuple[str, ...] = ()
        if self.heard is not None:  # the operator's own node (or joy_node, spacenav) publishes these
            if device.mapping.joy_topic:
                self.create_subscription(Joy, device.mapping.joy_topic, self.on_joy, COMMAND_QOS)
            if device.mapping.twist_topic:
                self.create_subscription(TwistStamped, device.mapping.twist_topic, self.on_twist, COMMAND_QOS)
        self.episode_running = True  # without an episode runner every moment is "in an episode"
        self.create_subscription(Bool, "/episode/active", self.on_episode_active, LATCHED_QOS)
        self.create_timer(1.0 / self.config.flag_rate_hz, self.on_tick)
        self.get_logger().info(f"operator: {self.operator.name}" if self.operator
                               else "passthrough: the policy always has authority")

    # --- inputs ------------------------------------------------------------------------------------------
    def on_pose(self, key: str):
        def store(msg: PoseStamped):
            stamp_s, position, quat = pose_from_msg(msg)
            self.assembler.update(key, stamp_s, np.concatenate([position, quat]))
        return store

    def on_joy(self, msg: Joy):
        """Freshness is judged by arrival on this node's clock (a driver's stamps may come from another clock)."""
        _, axes, buttons = joy_from_msg(msg)
        self.operator.device.on_joy(self.now_s(), axes, buttons)

    def on_twist(self, msg: TwistStamped):
        self.operator.device.on_twist(self.now_s(), twist_from_msg(msg)[1])

    def on_episode_active(self, msg: Bool):
        """The episode runner homes the arm and resets the scene between episodes: the operator stands by."""
        self.episode_running = msg.data

    def on_joints(self, msg: JointState):
        stamp_s, _, _, _, gripper_m = joint_state_from_msg(msg)
        self.assembler.update("gripper_width", stamp_s, np.array([gripper_m]))

    def observe(self, now_s: float):
        if self.assembler is None:
            return None
        observation, verdict = self.assembler.assemble(now_s)
        self._verdict = verdict
        return observation

    def on_policy_chunk(self, msg: MultiDOFJointTrajectory):
        if self.operator is None or not self.episode_running:  # between episodes: the runner's homing chunks
            self.cartesian_out.publish(msg)
            return
        now_s = self.now_s()
        try:
            chunk, _ = chunk_from_msg(msg)
        except (ChunkError, IndexError, ValueError):  # not judgeable; the controller counts and reports it
            forward = self.mux.policy_may_write(time_from_msg(msg.header.stamp))
        else:
            forward = self.mux.policy_chunk(chunk, now_s, self.observe(now_s))
        if forward:
            self.cartesian_out.publish(msg)

    def on_policy_joint_chunk(self, msg: JointTrajectory):
        if self.mux.policy_may_write(time_from_msg(msg.header.stamp)):
            self.joint_out.publish(msg)

    # --- the tick ----------------------------------------------------------------------------------------
    def on_tick(self):
        now_s = self.now_s()
        self.report_operator_input(now_s)
        observation = self.observe(now_s)
        self.deadman_pub.publish(Bool(data=self.operator is not None and self.operator.wants_authority()))
        if not self.episode_running:
            if self.mux.pause(now_s):
                self.get_logger().info("episode over: authority back to the policy")
            self.flag_pub.publish(Bool(data=False))
            return
        tick = self.mux.tick(now_s, observation)
        self.flag_pub.publish(Bool(data=tick.human))  # first: the controller restarts its blending on an edge
        if tick.chunk is not None:
            msg = chunk_to_msg(tick.chunk, CARTESIAN)
            self.cartesian_out.publish(msg)
            self.human_pub.publish(msg)
        for event in tick.events:
            self.event_pub.publish(String(data=event))
            self.get_logger().info(f"operator event: {event}")
        if tick.switched:
            why = self.operator.status()
            self.get_logger().info(("operator took over" if tick.human else "authority back to the policy")
                                   + (f": {why}" if why else ""))
        self.report_blocked_operator(tick.human, observation)

    def report_operator_input(self, now_s: float):
        """Say when the operator's topics go silent (read as a released deadman) and when they are heard again."""
        if self.heard is None:
            return
        silent = self.heard.silent_topics(now_s)
        if silent != self._silent:
            if silent:
                self.get_logger().info(f"no operator input on {', '.join(silent)} for "
                                       f"{self.heard.mapping.timeout_s:g} s: the deadman reads as released")
            else:
                self.get_logger().info(f"hearing the operator on {', '.join(self._silent)}")
        self._silent = silent

    def report_blocked_operator(self, human: bool, observation):
        """The operator asks for (or holds) authority but cannot act without the measured state: say why, once
        per stretch. While it holds authority the controller holds the last commanded pose."""
        blocked = ""
        if self.operator is not None and observation is None and (human or self.operator.wants_authority()):
            blocked = "holds authority, but cannot command" if human else "asks for authority, but cannot take over"
        if blocked and blocked != self._blocked:
            self.get_logger().warning(f"operator {blocked}: {self._verdict}")
        self._blocked = blocked

    def now_s(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    def close(self):
        if self.operator is not None:
            self.operator.close()


def main():
    run_node(InterventionNode)


if __name__ == "__main__":
    main()
