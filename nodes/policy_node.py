"""Policy node: a ROS shell around the policy runner (deploy.policies.runner), which infers in a worker thread
and hands back action chunks stamped with the time of the observation each was computed from.

A lifecycle node: configure loads and warms up the policy, activate starts chunks, deactivate stops them, cleanup
forgets the policy; `autostart: true` (default) configures and activates at startup, so graphs need no manager.
Topics: `~/chunk` (or `~/joint_chunk`); `~/chunk_version` (std_msgs/Header: the chunk's stamp and weight version,
published right before each chunk); `~/weight_version` latched; `/diagnostics` at 1 Hz. Setting `weights_path`
verifies the file and swaps it in between two inferences (a bad file is refused with the reason, the old weights
keep running); `~/load_weights` (std_srvs/Trigger) reloads that file.
"""
from __future__ import annotations

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PoseStamped
from rcl_interfaces.msg import SetParametersResult
from rclpy.lifecycle import Node as LifecycleNode
from rclpy.lifecycle import TransitionCallbackReturn
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Bool, Float64MultiArray, Header, String
from std_srvs.srv import Trigger
from trajectory_msgs.msg import JointTrajectory, MultiDOFJointTrajectory

from deploy.control.chunks import CARTESIAN, Chunk
from deploy.errors import ConfigError, DeployError
from deploy.graph.description import TOPICS
from deploy.nodes.common import COMMAND_QOS, LATCHED_QOS, SENSOR_QOS, declare_config, run_node
from deploy.nodes.conversions import (chunk_to_msg, chunk_version_to_msg, diagnostics_to_msg, image_from_msg,
                                      joint_state_from_msg, labelled_array_from_msg, pose_from_msg, time_from_msg)
from deploy.policies.runner import PolicyRunner, PolicyRunnerConfig


class PolicyNode(LifecycleNode):
    def __init__(self):
        super().__init__("policy")
        self.config = declare_config(self, PolicyRunnerConfig)
        self.version_pub = self.create_publisher(String, "~/weight_version", LATCHED_QOS)
        self.runner = PolicyRunner(self.config, self.now_s, self.get_logger(), self.publish_chunk,
                                   lambda version: self.version_pub.publish(String(data=version)))
        self._configure_error: DeployError | None = None
        self._autostarting = self.config.autostart  # its configure error is raised (one line), not logged
        self._entities: list = []  # subscriptions made at configure
        self.chunk_pub = self.chunk_version_pub = None
        self.add_on_set_parameters_callback(self.on_set_parameters)
        self.diagnostics_pub = self.create_publisher(DiagnosticArray, "/diagnostics", COMMAND_QOS)
        self.create_service(Trigger, "~/load_weights", self.on_load_weights)
        self.create_subscription(Float64MultiArray, "/controller/chunk_status",
                                 lambda msg: self.runner.on_chunk_status(labelled_array_from_msg(msg)), SENSOR_QOS)
        self.create_subscription(Bool, TOPICS["intervention_active"],
                                 lambda msg: self.runner.on_intervention(msg.data), COMMAND_QOS)
        self.create_timer(1.0, self.publish_diagnostics)
        self.create_timer(1.0 / self.config.inference_rate_hz, self.runner.on_rate_tick)
        if self.config.autostart:
            if self.trigger_configure() != TransitionCallbackReturn.SUCCESS:
                raise self._configure_error or ConfigError("policy node: configure failed")
            self.trigger_activate()
        self._autostarting = False

    def on_configure(self, state) -> TransitionCallbackReturn:
        try:
            meta = self.runner.configure()
        except DeployError as error:
            self._configure_error = error
            if not self._autostarting:
                self.get_logger().error(str(error))
            return TransitionCallbackReturn.FAILURE
        for name in meta.image_keys:
            self.subscribe(Image, f"/cameras/{name}/image_raw",
                           lambda msg, key=f"camera {name}": self.on_image(key, msg))
        if "ee_pose" in meta.state_keys:
            self.subscribe(PoseStamped, TOPICS["ee_pose"], lambda msg: self.on_pose("ee_pose", msg))
        if "cube_pose" in meta.state_keys:  # privileged sim state, read by the scripted expert; never a trigger
            self.subscribe(PoseStamped, TOPICS["cube_pose"], lambda msg: self.on_pose("cube_pose", msg, False),
                           COMMAND_QOS)
        if {"gripper_width", "joint_positions"} & set(meta.state_keys):
            self.subscribe(JointState, TOPICS["joint_states"], self.on_joints)
        cartesian = self.runner.space is CARTESIAN
        self.chunk_pub = self.create_lifecycle_publisher(MultiDOFJointTrajectory if cartesian else JointTrajectory,
                                                         "~/chunk" if cartesian else "~/joint_chunk", COMMAND_QOS)
        self.chunk_version_pub = self.create_lifecycle_publisher(Header, "~/chunk_version", COMMAND_QOS)
        return super().on_configure(state)

    def subscribe(self, msg_type, topic: str, callback, qos=SENSOR_QOS):
        self._entities.append(self.create_subscription(msg_type, topic, callback, qos))

    def on_activate(self, state) -> TransitionCallbackReturn:
        self.runner.activate()
        return super().on_activate(state)

    def on_deactivate(self, state) -> TransitionCallbackReturn:
        self.runner.deactivate()
        return super().on_deactivate(state)

    def on_cleanup(self, state) -> TransitionCallbackReturn:
        self.teardown()
        return super().on_cleanup(state)

    def on_shutdown(self, state) -> TransitionCallbackReturn:
        self.runner.deactivate()
        self.teardown()
        return super().on_shutdown(state)

    def teardown(self):
        self.runner.forget()
        for entity in self._entities:
            self.destroy_subscription(entity)
        for publisher in (self.chunk_pub, self.chunk_version_pub):
            if publisher is not None:
                self.destroy_lifecycle_publisher(publisher)
        self._entities, self.chunk_pub, self.chunk_version_pub = [], None, None

    def on_image(self, key: str, msg: Image):
        self.runner.observe({key: image_from_msg(msg)}, time_from_msg(msg.header.stamp))

    def on_pose(self, key: str, msg: PoseStamped, starts_inference: bool = True):
        stamp_s, position, quat = pose_from_msg(msg)
        self.runner.observe({key: np.concatenate([position, quat])}, stamp_s, starts_inference)

    def on_joints(self, msg: JointState):
        stamp_s, q, _, _, gripper = joint_state_from_msg(msg)
        self.runner.observe({"joint_positions": q, "gripper_width": np.array([gripper])}, stamp_s)

    def publish_chunk(self, chunk: Chunk) -> bool:
        if self.chunk_pub is None:
            return False
        self.chunk_version_pub.publish(chunk_version_to_msg(chunk.stamp_s, chunk.weight_version))
        self.chunk_pub.publish(chunk_to_msg(chunk, self.runner.space))
        return True

    def on_set_parameters(self, parameters) -> SetParametersResult:
        ok, reason = self.runner.change_parameters([(parameter.name, parameter.value) for parameter in parameters])
        return SetParametersResult(successful=ok, reason=reason)

    def on_load_weights(self, request, response):
        response.success, response.message = self.runner.reload(self.config.weights_path)
        return response

    def publish_diagnostics(self):
        now_s = self.now_s()
        health = self.runner.health(self._state_machine.current_state[1], now_s)
        self.diagnostics_pub.publish(diagnostics_to_msg("policy: inference", self.config.checkpoint or "demo",
                                                        health.level, health.message, health.values, now_s))

    def now_s(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    def close(self):
        self.runner.close()


def main():
    run_node(PolicyNode, skip_teardown=True)


if __name__ == "__main__":
    main()
