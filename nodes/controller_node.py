"""Impedance-controller node: a ROS shell around the control loop (deploy.control.loop) and its runner and
health (deploy.control.runner), translating chunks, services, parameters and diagnostics to and from ROS. A
lost robot ends the node: ERROR on /diagnostics naming the cause, then one line and a non-zero exit. The node
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
from deploy.control.loop import ControlLoop, TickRecord
from deploy.control.runner import SPACES, ControllerConfig, LoopRunner, apply_gain_changes
from deploy.control.safety import SafetyConfig
from deploy.errors import ConfigError
from deploy.graph.description import TOPICS
from deploy.nodes.common import COMMAND_QOS, SENSOR_QOS, connect_with_retry, declare_config, declare_prefixed, run_node
from deploy.nodes.conversions import (chunk_from_msg, diagnostics_to_msg, joint_state_to_msg, labelled_array_to_msg,
                                      pose_to_msg, wrench_to_msg)
from deploy.nodes.robot_topics import bridge_robot_topics
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
            bridge_robot_topics(self, self.robot)
        connect_with_retry(self, self.robot.connect, f"robot '{self.config.robot}'", self.config.connect_timeout_s,
                           spin=True)  # with callbacks running: a backend fed by a subscription needs its state
        self.add_on_set_parameters_callback(self.on_set_parameters)

        # The executor takes ready subscriptions in creation order: an e-stop, and the authority flag the
        # intervention node sends just before the operator's first chunk, are handled before a chunk waiting
        # beside them (a takeover's chunk handled first would splice in without the glide).
        self.create_subscription(Bool, "~/estop", lambda msg: msg.data and self.loop.safety.estop(), COMMAND_QOS)
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

    def on_set_parameters(self, parameters) -> SetParametersResult:
        """Run-time gain changes, bounds-checked; a bad value is refused with why."""
        try:
            apply_gain_changes(self.loop, {p.name: p.value for p in parameters})
        except ConfigError as error:
            return SetParametersResult(successful=False, reason=str(error))
        return SetParametersResult(successful=True)

    def publish_diagnostics(self):
        health = self.runner.health()
        self.diagnostics_pub.publish(diagnostics_to_msg("controller: loop", self.config.robot, health.level,
                                                        health.message, health.values, health.stamp_s))

    def close(self):
        self.runner.stop()


def main():
    run_node(ControllerNode)


if __name__ == "__main__":
    main()
