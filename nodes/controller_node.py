"""Impedance-controller node: runs the control loop (deploy.control.loop) at the robot's rate, by default in
its own thread paced by the robot's samples, and translates chunks, services, parameters and diagnostics to
and from ROS. A backend reached over ROS topics (`Robot.topic_bridge`: the external compliant controller) gets
its publishers and joint-state subscription from here; the node never asks which backend runs."""
from __future__ import annotations

import dataclasses
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

from deploy.control.chunks import CARTESIAN, JOINT, ChunkError, ChunkExecutorConfig
from deploy.control.impedance import CartesianImpedanceConfig, JointImpedanceConfig
from deploy.control.loop import ControlLoop, TickRecord, request_realtime_priority
from deploy.control.safety import SafetyConfig
from deploy.errors import ConfigError
from deploy.graph.description import TOPICS
from deploy.nodes.common import COMMAND_QOS, SENSOR_QOS, connect_with_retry, declare_config, declare_prefixed, run_node
from deploy.nodes.conversions import (chunk_from_msg, gripper_width_to_msg, joint_state_from_msg, joint_state_to_msg,
                                      labelled_array_to_msg, pose_to_msg, time_to_msg, wrench_to_msg)
from deploy.robots.base import RobotState
from deploy.robots.registry import make_robot

SPACES = {"cartesian": CARTESIAN, "joint": JOINT}
LOOP_RUNNERS = ("thread", "timer")


@dataclasses.dataclass
class ControllerNodeConfig:
    robot: str = "sim"  # robot backend (sim|franka|ur|external); its options come as robot_params.<name>
    action_space: str = "cartesian"  # chunks executed: cartesian (~/chunk) or joint (~/joint_chunk)
    state_publish_rate_hz: float = 250.0  # /robot/joint_states (and /robot/ee_wrench) rate [Hz]
    reference_publish_rate_hz: float = 50.0  # ~/reference and ~/chunk_status rate [Hz]
    realtime_priority: int = 0  # SCHED_FIFO priority of the control thread (0 = normal scheduling; on 2 loaded
    # cores FIFO starved the DDS threads: /robot/joint_states fell from >100 to 20 Hz. Use it with spare cores.)
    loop_runner: str = "thread"  # "thread": own thread paced by the robot's samples; "timer": an executor timer
    # at the robot's period (measured worse in the whole graph: bench/graph_loop.py --runner, README)
    connect_timeout_s: float = 60.0  # keep retrying the robot this long at start-up, then fail naming it [s]

    def __post_init__(self):
        if self.action_space not in SPACES:
            raise ConfigError(f"action_space '{self.action_space}' (choose {'|'.join(SPACES)})")
        if self.loop_runner not in LOOP_RUNNERS:
            raise ConfigError(f"loop_runner '{self.loop_runner}' (choose {'|'.join(LOOP_RUNNERS)})")
        if not 0.0 < self.connect_timeout_s <= 600.0:
            raise ConfigError(f"connect_timeout_s {self.connect_timeout_s} outside (0, 600]")
        for name in ("state_publish_rate_hz", "reference_publish_rate_hz"):
            if not 1.0 <= getattr(self, name) <= 1000.0:
                raise ConfigError(f"{name} {getattr(self, name)} outside [1, 1000]")


class ControllerNode(Node):
    def __init__(self):
        super().__init__("controller")
        self.config = declare_config(self, ControllerNodeConfig)
        executor_config = declare_config(self, ChunkExecutorConfig, "chunks.")
        impedance_config = declare_config(self, CartesianImpedanceConfig, "impedance.")
        joint_impedance_config = declare_config(self, JointImpedanceConfig, "joint_impedance.")
        safety_config = declare_config(self, SafetyConfig, "safety.")
        self.robot = make_robot(self.config.robot, **declare_prefixed(self, "robot_params."))
        self.loop = ControlLoop(self.robot, executor_config, impedance_config, safety_config,
                                space=SPACES[self.config.action_space], joint_impedance_config=joint_impedance_config)
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
        self.create_service(Trigger, "~/hold", self.on_hold)
        self.create_service(Trigger, "~/estop", self.on_estop)
        self.create_service(Trigger, "~/release", self.on_release)
        self.state_pub = self.create_publisher(JointState, "/robot/joint_states", SENSOR_QOS)
        self.wrench_pub = self.create_publisher(WrenchStamped, "/robot/ee_wrench", SENSOR_QOS)
        self.reference_pub = self.create_publisher(PoseStamped, "~/reference", SENSOR_QOS)
        self.status_pub = self.create_publisher(Float64MultiArray, "~/chunk_status", SENSOR_QOS)
        self.diagnostics_pub = self.create_publisher(DiagnosticArray, "/diagnostics", COMMAND_QOS)
        self.create_timer(1.0, self.publish_diagnostics)

        ticks_per_s = 1.0 / self.loop.period_s
        self._state_every = max(1, round(ticks_per_s / self.config.state_publish_rate_hz))
        self._reference_every = max(1, round(ticks_per_s / self.config.reference_publish_rate_hz))
        self._running = True
        self._thread = None
        if self.config.loop_runner == "thread":
            self._thread = threading.Thread(target=self.control_thread, name="control_loop", daemon=True)
            self._thread.start()
        else:
            self.create_timer(self.loop.period_s, self.on_control_timer)

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
    def control_thread(self):
        self.get_logger().info(f"control loop: {request_realtime_priority(self.config.realtime_priority)}")
        while self._running:
            record = self.loop.tick()
            if record is not None:
                self.publish_tick(record)

    def on_control_timer(self):
        record = self.loop.tick(wait_timeout_s=0.0)
        if record is not None:
            self.publish_tick(record)

    def publish_tick(self, record: TickRecord):
        ticks = self.loop.stats.ticks
        state = record.state
        if ticks % self._state_every == 0:
            self.state_pub.publish(joint_state_to_msg(state.stamp_s, state.q_rad, state.dq_rad_s,
                                                      state.tau_measured_nm, state.gripper_width_m))
            if state.ee_wrench is not None:  # the backend measures it
                self.wrench_pub.publish(wrench_to_msg(state.ee_wrench, state.stamp_s))
        if ticks % self._reference_every == 0:
            self.reference_pub.publish(pose_to_msg(record.reference_position_m, record.reference_quat_xyzw,
                                                   state.stamp_s))
            status = self.loop.chunk_status(state.stamp_s)
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

    def on_hold(self, request, response):
        self.loop.safety.hold()
        response.success, response.message = True, "holding the current reference"
        return response

    def on_estop(self, request, response):
        self.loop.safety.estop()
        response.success, response.message = True, "e-stop: holding the measured pose, softening"
        return response

    def on_estop_topic(self, msg: Bool):
        if msg.data:
            self.loop.safety.estop()

    def on_release(self, request, response):
        self.loop.safety.release_hold()
        self.loop.safety.reset_estop()
        response.success, response.message = True, "released hold and e-stop"
        return response

    def on_set_parameters(self, parameters) -> SetParametersResult:
        """Run-time gain changes, bounds-checked by the config dataclass; a bad value is refused with why."""
        updates = []
        for law, prefix in ((self.loop.impedance, "impedance."), (self.loop.joint_impedance, "joint_impedance.")):
            changes = {p.name.removeprefix(prefix): tuple(p.value) if isinstance(p.value, list) else p.value
                       for p in parameters if p.name.startswith(prefix)}
            if changes:
                try:
                    updates.append((law, law.config.with_updates(**changes)))
                except ConfigError as error:
                    return SetParametersResult(successful=False, reason=str(error))
        for law, config in updates:  # all or nothing
            law.set_config(config)
        return SetParametersResult(successful=True)

    def publish_diagnostics(self):
        stats = self.loop.stats.summary()
        tick = self.loop.last_tick
        now_s = tick.state.stamp_s if tick is not None else 0.0
        status = self.loop.chunk_status(now_s)
        trips = self.loop.safety.trips
        values = {**{k: f"{v:.3f}" for k, v in stats.items()},
                  "chunk_lag_s": f"{status.lag_s:.3f}", "chunks_received": str(status.chunks_received),
                  "chunks_rejected": str(self.loop.rejected_chunks), "last_rejection": self.loop.last_rejection,
                  "stiffness_scale": f"{tick.stiffness_scale:.2f}" if tick else "n/a",
                  "last_trip": self.loop.safety.last_trip_reason or "",
                  **{f"trips.{k}": str(v) for k, v in trips.items()},
                  "trips.bad_chunk": str(self.loop.rejected_chunks),
                  "trips.ik_unreachable": str(self.loop.ik_unreachable)}
        level = DiagnosticStatus.OK if not self.loop.safety.last_trip_reason else DiagnosticStatus.WARN
        diag = DiagnosticStatus(level=level, name="controller: loop", hardware_id=self.config.robot,
                                message=self.loop.safety.last_trip_reason or "ok",
                                values=[KeyValue(key=k, value=v) for k, v in values.items()])
        array = DiagnosticArray(status=[diag])
        array.header.stamp = time_to_msg(now_s)
        self.diagnostics_pub.publish(array)

    def close(self):
        self._running = False
        if self._thread is not None:
            self._thread.join(timeout=2.0)
        self.robot.stop()


def main():
    run_node(ControllerNode)


if __name__ == "__main__":
    main()
