"""Impedance-controller node: runs the 1 kHz control loop (deploy.control.loop) in its own thread, paced by
the robot's samples, and translates chunks, services, parameters and diagnostics to and from ROS."""
from __future__ import annotations

import dataclasses
import threading

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import PoseStamped
from rcl_interfaces.msg import SetParametersResult
from rclpy.node import Node
from sensor_msgs.msg import JointState
from std_msgs.msg import Bool, Float64MultiArray
from std_srvs.srv import Trigger
from trajectory_msgs.msg import JointTrajectory, MultiDOFJointTrajectory

from deploy.control.chunks import CARTESIAN, JOINT, ChunkError, ChunkExecutorConfig
from deploy.control.impedance import CartesianImpedanceConfig, JointImpedanceConfig
from deploy.control.loop import ControlLoop, request_realtime_priority
from deploy.control.safety import SafetyConfig
from deploy.errors import ConfigError
from deploy.nodes.common import COMMAND_QOS, SENSOR_QOS, connect_with_retry, declare_config, declare_prefixed, run_node
from deploy.nodes.conversions import (chunk_from_msg, joint_state_to_msg, labelled_array_to_msg, pose_to_msg,
                                      time_to_msg)
from deploy.robots.registry import make_robot

SPACES = {"cartesian": CARTESIAN, "joint": JOINT}


@dataclasses.dataclass
class ControllerNodeConfig:
    robot: str = "sim"  # robot backend (sim|franka|ur|external); its options come as robot_params.<name>
    action_space: str = "cartesian"  # chunks executed: cartesian (~/chunk) or joint (~/joint_chunk)
    state_publish_rate_hz: float = 250.0  # /robot/joint_states rate [Hz]
    reference_publish_rate_hz: float = 50.0  # ~/reference and ~/chunk_status rate [Hz]
    realtime_priority: int = 0  # SCHED_FIFO priority of the control thread (0 = normal scheduling; on 2 loaded
    # cores FIFO starved the DDS threads: /robot/joint_states fell from >100 to 20 Hz. Use it with spare cores.)

    def __post_init__(self):
        if self.action_space not in SPACES:
            raise ConfigError(f"action_space '{self.action_space}' (choose {'|'.join(SPACES)})")
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
        connect_with_retry(self, self.robot.connect, f"robot '{self.config.robot}'")
        self.add_on_set_parameters_callback(self.on_set_parameters)

        self.create_subscription(MultiDOFJointTrajectory, "~/chunk", self.on_chunk, COMMAND_QOS)
        self.create_subscription(JointTrajectory, "~/joint_chunk", self.on_chunk, COMMAND_QOS)
        self.create_subscription(Bool, "~/estop", self.on_estop_topic, COMMAND_QOS)
        self.create_service(Trigger, "~/hold", self.on_hold)
        self.create_service(Trigger, "~/estop", self.on_estop)
        self.create_service(Trigger, "~/release", self.on_release)
        self.state_pub = self.create_publisher(JointState, "/robot/joint_states", SENSOR_QOS)
        self.reference_pub = self.create_publisher(PoseStamped, "~/reference", SENSOR_QOS)
        self.status_pub = self.create_publisher(Float64MultiArray, "~/chunk_status", SENSOR_QOS)
        self.diagnostics_pub = self.create_publisher(DiagnosticArray, "/diagnostics", COMMAND_QOS)
        self.create_timer(1.0, self.publish_diagnostics)

        self._running = True
        self._thread = threading.Thread(target=self.control_thread, name="control_loop", daemon=True)
        self._thread.start()

    # --- the loop thread -------------------------------------------------------------------------------
    def control_thread(self):
        self.get_logger().info(f"control loop: {request_realtime_priority(self.config.realtime_priority)}")
        state_every = max(1, round(1000.0 / self.config.state_publish_rate_hz))
        reference_every = max(1, round(1000.0 / self.config.reference_publish_rate_hz))
        while self._running:
            record = self.loop.tick()
            if record is None:
                continue
            ticks = self.loop.stats.ticks
            state = record.state
            if ticks % state_every == 0:
                self.state_pub.publish(joint_state_to_msg(state.stamp_s, state.q_rad, state.dq_rad_s,
                                                          state.tau_measured_nm, state.gripper_width_m))
            if ticks % reference_every == 0:
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
            self.loop.rejected_chunks += 1
            self.loop.last_rejection = str(error)
            return
        self.loop.offer_chunk(chunk, space)

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
                  "trips.bad_chunk": str(self.loop.rejected_chunks)}
        level = DiagnosticStatus.OK if not self.loop.safety.last_trip_reason else DiagnosticStatus.WARN
        diag = DiagnosticStatus(level=level, name="controller: loop", hardware_id=self.config.robot,
                                message=self.loop.safety.last_trip_reason or "ok",
                                values=[KeyValue(key=k, value=v) for k, v in values.items()])
        array = DiagnosticArray(status=[diag])
        array.header.stamp = time_to_msg(now_s)
        self.diagnostics_pub.publish(array)

    def close(self):
        self._running = False
        self._thread.join(timeout=2.0)
        self.robot.stop()


def main():
    run_node(ControllerNode)


if __name__ == "__main__":
    main()
