"""Impedance-controller node: a ROS shell around the control loop (deploy.control.loop) and its runner and
health (deploy.control.runner), translating chunks, services, parameters and diagnostics to and from ROS. A
lost robot ends the node: ERROR on /diagnostics naming the cause, then one line and a non-zero exit. A backend
reached over ROS topics (`Robot.topic_bridge`: the external compliant controller) gets its publishers and
joint-state subscription from here; the node never asks which backend runs."""
from __future__ import annotations

import threading

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import PoseStamped, WrenchStamped
from rcl_interfaces.msg import SetParametersResult
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from sensor_msgs.msg import JointState
from std_msgs.msg import Bool, Float64, Float64MultiArray
from std_srvs.srv import Trigger
from trajectory_msgs.msg import JointTrajectory, MultiDOFJointTrajectory

from deploy.control.chunks import ChunkError, ChunkExecutorConfig
from deploy.control.impedance import CartesianImpedanceConfig, JointImpedanceConfig
from deploy.control.loop import ControlLoop, TickRecord
from deploy.control.runner import SPACES, ControllerConfig, LoopRunner, apply_gain_changes
from deploy.control.safety import SafetyConfig
from deploy.errors import ConfigError
from deploy.graph.description import TOPICS
from deploy.nodes.common import COMMAND_QOS, SENSOR_QOS, connect_with_retry, declare_config, declare_prefixed, run_node
from deploy.nodes.conversions import (chunk_from_msg, gripper_width_to_msg, joint_state_from_msg, joint_state_to_msg,
                                      labelled_array_to_msg, pose_to_msg, time_to_msg, wrench_to_msg)
from deploy.robots.base import RobotState
from deploy.robots.registry import make_robot


class ControllerNode(Node):
    def __init__(self):
        super().__init__("controller")
        self.config = declare_config(self, ControllerConfig)
        executor_config = declare_config(self, ChunkExecutorConfig, "chunks.")
        impedance_config = declare_config(self, CartesianImpedanceConfig, "impedance.")
        joint_impedance_config = declare_config(self, JointImpedanceConfig, "joint_impedance.")
        safety_config = declare_config(self, SafetyConfig, "safety.")
        self.robot = make_robot(self.config.robot, **declare_prefixed(self, "robot_params."))
        self.loop = ControlLoop(self.robot, executor_config, impedance_config, safety_config,
                                space=SPACES[self.config.action_space], joint_impedance_config=joint_impedance_config)
        self.runner = LoopRunner(self.loop, self.config.robot, self.config.robot_timeout_s,
                                 ((self.config.state_publish_rate_hz, self.publish_state),
                                  (self.config.reference_publish_rate_hz, self.publish_reference)))
        self._lost_reported = False
        if self.robot.topic_bridge is not None:
            self.bridge_robot_topics()
        self.connect_robot()
        self.add_on_set_parameters_callback(self.on_set_parameters)

        # The executor takes ready subscriptions in creation order: an e-stop, and the authority flag the
        # intervention node sends just before the operator's first chunk, are handled before a chunk waiting
        # beside them (a takeover's chunk handled first would splice in without the glide).
        self.create_subscription(Bool, "~/estop", self.on_estop_topic, COMMAND_QOS)
        self._operator_active = False
        self.create_subscription(Bool, TOPICS["intervention_active"], self.on_intervention_active, COMMAND_QOS)
        self.create_subscription(MultiDOFJointTrajectory, "~/chunk", self.on_chunk, COMMAND_QOS)
        self.create_subscription(JointTrajectory, "~/joint_chunk", self.on_chunk, COMMAND_QOS)
        safety = self.loop.safety
        for name, action, message in (
                ("hold", safety.hold, "holding the current reference"),
                ("estop", safety.estop, "e-stop: holding the measured pose, softening"),
                ("release", lambda: (safety.release_hold(), safety.reset_estop()), "released hold and e-stop")):
            self.create_service(Trigger, f"~/{name}", self.trigger_service(action, message))
        self.state_pub = self.create_publisher(JointState, "/robot/joint_states", SENSOR_QOS)
        self.wrench_pub = self.create_publisher(WrenchStamped, "/robot/ee_wrench", SENSOR_QOS)
        self.reference_pub = self.create_publisher(PoseStamped, "~/reference", SENSOR_QOS)
        self.status_pub = self.create_publisher(Float64MultiArray, "~/chunk_status", SENSOR_QOS)
        self.diagnostics_pub = self.create_publisher(DiagnosticArray, "/diagnostics", COMMAND_QOS)
        self.create_timer(1.0, self.publish_diagnostics)

        self.create_timer(0.25, self.watch_robot)
        if self.config.loop_runner == "thread":
            self.runner.start(self.config.realtime_priority)
        else:
            self.create_timer(self.loop.period_s, self.runner.step)

    # --- robot I/O -----------------------------------------------------------------------------------------
    def bridge_robot_topics(self):
        """Publishers and the joint-state subscription for a backend reached over ROS topics."""
        bridge = self.robot.topic_bridge
        pose_pub = self.create_publisher(PoseStamped, bridge.pose_target_topic, COMMAND_QOS)
        gripper_pub = self.create_publisher(Float64, bridge.gripper_topic, COMMAND_QOS) if bridge.gripper_topic else None
        self.robot.attach_publishers(
            lambda position_m, quat_xyzw, stamp_s: pose_pub.publish(pose_to_msg(position_m, quat_xyzw, stamp_s)),
            lambda width_m: gripper_pub.publish(gripper_width_to_msg(width_m)) if gripper_pub else None)
        self.create_subscription(JointState, bridge.joint_state_topic, self.on_robot_joint_state, SENSOR_QOS)

    def on_robot_joint_state(self, msg: JointState):
        bridge = self.robot.topic_bridge
        try:
            stamp_s, q_rad, dq_rad_s, tau_nm, gripper_m = joint_state_from_msg(msg, bridge.joint_names,
                                                                                bridge.gripper_joint)
        except ValueError as error:
            self.get_logger().error(f"{bridge.joint_state_topic}: {error}", throttle_duration_sec=5.0)
            return
        if stamp_s == 0.0:  # an unstamped state describes the moment it arrived
            stamp_s = self.get_clock().now().nanoseconds * 1e-9
        self.robot.feed_state(RobotState(stamp_s, q_rad, dq_rad_s, tau_nm, gripper_m))

    def connect_robot(self):
        """Connect with this node's callbacks running, so a backend fed by a subscription sees its first state."""
        executor = SingleThreadedExecutor(context=self.context)
        executor.add_node(self)
        connected = threading.Event()

        def spin():
            while not connected.is_set():
                executor.spin_once(timeout_sec=0.05)

        spinner = threading.Thread(target=spin, name="connect_spinner", daemon=True)
        spinner.start()
        try:
            connect_with_retry(self, self.robot.connect, f"robot '{self.config.robot}'", self.config.connect_timeout_s)
        finally:
            connected.set()
            spinner.join()
            executor.remove_node(self)
            executor.shutdown()

    # --- the loop --------------------------------------------------------------------------------------------
    def watch_robot(self):
        """Robot lost: say ERROR on /diagnostics (twice, 0.25 s apart, so it is heard), then end the node."""
        if self.runner.lost_cause is not None:
            self.publish_diagnostics()
            if self._lost_reported:
                self.runner.raise_if_lost()
            self._lost_reported = True

    def publish_state(self, record: TickRecord):
        state = record.state
        self.state_pub.publish(joint_state_to_msg(state.stamp_s, state.q_rad, state.dq_rad_s,
                                                  state.tau_measured_nm, state.gripper_width_m))
        if state.ee_wrench is not None:  # the backend measures it
            self.wrench_pub.publish(wrench_to_msg(state.ee_wrench, state.stamp_s))

    def publish_reference(self, record: TickRecord):
        stamp_s = record.state.stamp_s
        self.reference_pub.publish(pose_to_msg(record.reference_position_m, record.reference_quat_xyzw, stamp_s))
        status = self.loop.chunk_status(stamp_s)
        self.status_pub.publish(labelled_array_to_msg({
            "lag_s": status.lag_s, "committed_steps": status.committed_steps,
            "steps_remaining": status.steps_remaining, "exhausted": float(status.exhausted),
            "stiffness_scale": record.stiffness_scale}))

    # --- callbacks ---------------------------------------------------------------------------------------
    def on_chunk(self, msg: MultiDOFJointTrajectory | JointTrajectory):
        try:
            chunk, space = chunk_from_msg(msg)
        except (ChunkError, IndexError, ValueError) as error:
            self.loop.reject(str(error))
            return
        self.loop.offer_chunk(chunk, space)

    def on_intervention_active(self, msg: Bool):
        """Authority changed hands: the new writer's chunks are not averaged with the old writer's, and glide in."""
        if msg.data != self._operator_active:
            self._operator_active = msg.data
            self.loop.writer_changed()

    @staticmethod
    def trigger_service(action, message: str):
        def serve(request, response):
            action()
            response.success, response.message = True, message
            return response
        return serve

    def on_estop_topic(self, msg: Bool):
        if msg.data:
            self.loop.safety.estop()

    def on_set_parameters(self, parameters) -> SetParametersResult:
        """Run-time gain changes, bounds-checked; a bad value is refused with why."""
        try:
            apply_gain_changes(self.loop, {p.name: p.value for p in parameters})
        except ConfigError as error:
            return SetParametersResult(successful=False, reason=str(error))
        return SetParametersResult(successful=True)

    def publish_diagnostics(self):
        health = self.runner.health()
        status = DiagnosticStatus(level=bytes([health.level]), name="controller: loop", hardware_id=self.config.robot,
                                  message=health.message,
                                  values=[KeyValue(key=k, value=v) for k, v in health.values.items()])
        array = DiagnosticArray(status=[status])
        array.header.stamp = time_to_msg(health.stamp_s)
        self.diagnostics_pub.publish(array)

    def close(self):
        self.runner.stop()


def main():
    run_node(ControllerNode)


if __name__ == "__main__":
    main()
