"""Impedance-controller node: a ROS shell around the control loop (deploy.control.loop), which runs on a thread
of this process (deploy.control.runner, the default) or in a child process of its own (`loop_runner: process`,
deploy.control.loop_process), translating chunks, services, parameters and diagnostics to and from ROS. A lost robot ends the node: ERROR on /diagnostics naming the cause, then one line and a non-zero exit. The node
never asks which backend runs (one reached over ROS topics is wired by deploy.nodes.robot_topics)."""
from __future__ import annotations

from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PoseStamped, WrenchStamped
from rcl_interfaces.msg import SetParametersResult
from rclpy.node import Node
from sensor_msgs.msg import JointState
from std_msgs.msg import Bool, Float64MultiArray
from std_srvs.srv import Trigger
from trajectory_msgs.msg import JointTrajectory, MultiDOFJointTrajectory

from deploy.control.chunks import ChunkError, ChunkExecutorConfig
from deploy.control.impedance import CartesianImpedanceConfig, JointImpedanceConfig
from deploy.control.loop_process import LoopProcess
from deploy.control.runner import ControllerConfig, LoopSpec, LoopThread, ReferenceReport
from deploy.control.safety import SafetyConfig
from deploy.errors import ConfigError
from deploy.graph.description import TOPICS
from deploy.nodes.common import COMMAND_QOS, SENSOR_QOS, connect_with_retry, declare_config, declare_prefixed, run_node
from deploy.nodes.conversions import (chunk_from_msg, diagnostics_to_msg, joint_state_to_msg, labelled_array_to_msg,
                                      pose_to_msg, wrench_to_msg)
from deploy.nodes.robot_topics import bridge_robot_topics
from deploy.robots.base import RobotState
from deploy.robots.registry import make_robot


class ControllerNode(Node):
    def __init__(self):
        super().__init__("controller")
        self.config = declare_config(self, ControllerConfig)
        spec = LoopSpec(self.config, declare_prefixed(self, "robot_params."),
                        declare_config(self, ChunkExecutorConfig, "chunks."),
                        declare_config(self, CartesianImpedanceConfig, "impedance."),
                        declare_config(self, JointImpedanceConfig, "joint_impedance."),
                        declare_config(self, SafetyConfig, "safety."))
        robot = make_robot(self.config.robot, **spec.robot_params)  # (not connected: only says how it is reached)
        self.state_pub = self.create_publisher(JointState, "/robot/joint_states", SENSOR_QOS)
        self.wrench_pub = self.create_publisher(WrenchStamped, "/robot/ee_wrench", SENSOR_QOS)
        self.reference_pub = self.create_publisher(PoseStamped, "~/reference", SENSOR_QOS)
        self.status_pub = self.create_publisher(Float64MultiArray, "~/chunk_status", SENSOR_QOS)
        self.diagnostics_pub = self.create_publisher(DiagnosticArray, "/diagnostics", COMMAND_QOS)
        if self.config.loop_runner == "process" and robot.topic_bridge is None:
            self.control = LoopProcess(spec, self.publish_state, self.publish_reference)
            self.control.start()  # the child connects to the robot (retrying) and starts its loop
        else:  # the default, and always for a backend fed by this node's subscriptions
            if robot.topic_bridge is not None:
                bridge_robot_topics(self, robot)
            connect_with_retry(self, robot.connect, f"robot '{self.config.robot}'", self.config.connect_timeout_s,
                               spin=True)  # with callbacks running: a backend fed by a subscription needs its state
            self.control = LoopThread(spec, robot, self.publish_state, self.publish_reference)
            self.control.start()
        self._lost_reported = False
        self.add_on_set_parameters_callback(self.on_set_parameters)

        # The executor takes ready subscriptions in creation order: an e-stop, and the authority flag the
        # intervention node sends just before the operator's first chunk, are handled before a chunk waiting
        # beside them (a takeover's chunk handled first would splice in without the glide).
        self.create_subscription(Bool, "~/estop", lambda msg: msg.data and self.control.estop(), COMMAND_QOS)
        self._operator_active = False
        self.create_subscription(Bool, TOPICS["intervention_active"], self.on_intervention_active, COMMAND_QOS)
        self.create_subscription(MultiDOFJointTrajectory, "~/chunk", self.on_chunk, COMMAND_QOS)
        self.create_subscription(JointTrajectory, "~/joint_chunk", self.on_chunk, COMMAND_QOS)
        for name, action, message in (
                ("hold", self.control.hold, "holding the current reference"),
                ("estop", self.control.estop, "e-stop: holding the measured pose, softening"),
                ("release", self.control.release, "released hold and e-stop")):
            self.create_service(Trigger, f"~/{name}", self.trigger_service(action, message))
        self.create_timer(1.0, self.publish_diagnostics)
        self.create_timer(0.25, self.watch_robot)

    # --- the loop --------------------------------------------------------------------------------------------
    def watch_robot(self):
        """Robot lost: say ERROR on /diagnostics (twice, 0.25 s apart, so it is heard), then end the node."""
        if self.control.lost_cause is not None:
            self.publish_diagnostics()
            if self._lost_reported:
                self.control.raise_if_lost()
            self._lost_reported = True

    def publish_state(self, state: RobotState):
        self.state_pub.publish(joint_state_to_msg(state.stamp_s, state.q_rad, state.dq_rad_s,
                                                  state.tau_measured_nm, state.gripper_width_m))
        if state.ee_wrench is not None:  # the backend measures it
            self.wrench_pub.publish(wrench_to_msg(state.ee_wrench, state.stamp_s))

    def publish_reference(self, report: ReferenceReport):
        self.reference_pub.publish(pose_to_msg(report.position_m, report.quat_xyzw, report.stamp_s))
        self.status_pub.publish(labelled_array_to_msg({
            "lag_s": report.lag_s, "committed_steps": report.committed_steps,
            "steps_remaining": report.steps_remaining, "exhausted": float(report.exhausted),
            "stiffness_scale": report.stiffness_scale}))

    # --- callbacks ---------------------------------------------------------------------------------------
    def on_chunk(self, msg: MultiDOFJointTrajectory | JointTrajectory):
        try:
            chunk, space = chunk_from_msg(msg)
        except (ChunkError, IndexError, ValueError) as error:
            self.control.reject(str(error))
            return
        self.control.offer_chunk(chunk, space)

    def on_intervention_active(self, msg: Bool):
        """Authority changed hands: the new writer's chunks are not averaged with the old writer's, and glide in."""
        if msg.data != self._operator_active:
            self._operator_active = msg.data
            self.control.writer_changed()

    @staticmethod
    def trigger_service(action, message: str):
        def serve(request, response):
            action()
            response.success, response.message = True, message
            return response
        return serve

    def on_set_parameters(self, parameters) -> SetParametersResult:
        """Run-time gain changes, bounds-checked; a bad value is refused with why."""
        try:
            self.control.apply_gain_changes({p.name: p.value for p in parameters})
        except ConfigError as error:
            return SetParametersResult(successful=False, reason=str(error))
        return SetParametersResult(successful=True)

    def publish_diagnostics(self):
        health = self.control.health()
        self.diagnostics_pub.publish(diagnostics_to_msg("controller: loop", self.config.robot, health.level,
                                                        health.message, health.values, health.stamp_s))

    def close(self):
        self.control.stop()


def main():
    run_node(ControllerNode)


if __name__ == "__main__":
    main()
