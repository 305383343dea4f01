"""An arm driven by the user's own compliant controller (e.g. a C++ ros2_control Cartesian impedance controller).

ROS-free: the node reads `topic_bridge`, creates the publishers and the subscription, hands the publishers in
through `attach_publishers` and calls `feed_state` from the subscription. Topic contract (the node's side):
- `geometry_msgs/PoseStamped` (frame: the robot base) to the controller's target topic (`target_topic`, e.g.
  FZI cartesian_compliance_controller's `/cartesian_compliance_controller/target_frame`, or crisp's
  `/target_pose`), one per joint state received: the loop is paced by the controller's joint states;
- `std_msgs/Float64` gripper width [m] to `gripper_topic` ("" = no gripper), when it changes by more than
  the deadband;
- `sensor_msgs/JointState` from `state_topic` (e.g. `/joint_states` of ros2_control's joint_state_broadcaster),
  joints matched by `joint_names` in model order (the broadcaster publishes them in any order).
Pose targets are stamped with the stamp of the state the loop is answering (the last `wait_for_state`
returned): the tick's "now" on the node clock, one target per state.
"""
from __future__ import annotations

import dataclasses
import threading

import numpy as np

from deploy.errors import ConfigError, DeployError, RobotConnectionError
from deploy.robots.base import (Capability, GripperPublisher, PosePublisher, Robot, RobotModel, RobotState,
                                TopicBridge)


class ExternalControllerRobot(Robot):
    """Streams Cartesian targets to an external controller; its joint states pace `wait_for_state`."""

    capabilities = Capability.POSE_TARGET

    def __init__(self, model_name: str = "franka", state_topic: str = "/joint_states",
                 target_topic: str = "/cartesian_compliance_controller/target_frame",
                 gripper_topic: str = "/gripper/width", joint_names=(), gripper_joint: str = "gripper",
                 state_rate_hz: float = 500.0, connect_timeout_s: float = 5.0,
                 workspace_min_m=(-1.0, -1.0, 0.0), workspace_max_m=(1.0, 1.0, 1.2), max_gripper_width_m: float = 0.08,
                 gripper_deadband_m: float = 0.001, model: RobotModel | None = None):
        self._workspace_min_m = np.asarray(workspace_min_m, dtype=float)
        self._workspace_max_m = np.asarray(workspace_max_m, dtype=float)
        if (self._workspace_min_m.shape != (3,) or self._workspace_max_m.shape != (3,)
                or np.any(self._workspace_min_m >= self._workspace_max_m)):
            raise ConfigError(f"external workspace_min_m={workspace_min_m} must be 3 values below "
                              f"workspace_max_m={workspace_max_m}")
        if not 1.0 <= state_rate_hz <= 2000.0:
            raise ConfigError(f"external state_rate_hz={state_rate_hz} (the controller's joint-state rate) "
                              "must be in [1, 2000]")
        if model is None:
            from deploy.robots.registry import make_model
            model = make_model(model_name)
        self.model = model
        joint_names = tuple(joint_names) or tuple(f"joint{i}" for i in range(1, model.dof + 1))
        if len(joint_names) != model.dof or len(set(joint_names)) != len(joint_names):
            raise ConfigError(f"external joint_names={list(joint_names)} must name the {model.dof} joints of the "
                              f"'{model_name}' model once each, in model order")
        self.topic_bridge = TopicBridge(target_topic, gripper_topic, state_topic, joint_names, gripper_joint)
        self.period_s = 1.0 / state_rate_hz
        self._publish_pose_target: PosePublisher | None = None
        self._publish_gripper: GripperPublisher | None = None
        self._state_topic = state_topic
        self._connect_timeout_s = connect_timeout_s
        self._max_gripper_width_m = max_gripper_width_m
        self._gripper_deadband_m = gripper_deadband_m
        self._state: RobotState | None = None
        self._answering: RobotState | None = None  # the sample the loop's current tick answers
        self._seq = 0
        self._new_state = threading.Condition()
        self._stopped = False
        self._last_gripper_m: float | None = None

    def attach_publishers(self, publish_pose_target: PosePublisher, publish_gripper: GripperPublisher) -> None:
        self._publish_pose_target = publish_pose_target
        self._publish_gripper = publish_gripper

    def feed_state(self, state: RobotState) -> None:
        """Called from the node's joint-state callback (any thread); assigns the next `seq` and wakes waiters."""
        with self._new_state:
            self._seq += 1
            self._state = dataclasses.replace(state, seq=self._seq)
            self._new_state.notify_all()

    def connect(self) -> None:
        """Wait for the first joint state: proves the controller side is up."""
        if self._publish_pose_target is None:
            raise DeployError("external robot: attach_publishers() must come before connect()")
        if self.wait_for_state(0, self._connect_timeout_s) is None:
            raise RobotConnectionError(f"no joint state on {self._state_topic} within {self._connect_timeout_s} s: "
                                       "is the external controller running and publishing?")
        self._stopped = False

    def read_state(self) -> RobotState:
        with self._new_state:
            if self._state is None:
                raise RobotConnectionError(f"no joint state received yet on {self._state_topic}")
            return self._state

    def wait_for_state(self, after_seq: int, timeout_s: float) -> RobotState | None:
        """Block until a state newer than `after_seq` was fed; None on timeout."""
        with self._new_state:
            if self._new_state.wait_for(lambda: self._seq > after_seq, timeout=timeout_s):
                self._answering = self._state
                return self._state
            return None

    def command_pose_target(self, position_m: np.ndarray, quat_xyzw: np.ndarray):
        """Publish the target clipped to the workspace box, quaternion normalised; returns what was published.

        A non-finite or zero quaternion / position publishes nothing and returns None (the controller holds).
        """
        position_m = np.asarray(position_m, dtype=float)
        quat_xyzw = np.asarray(quat_xyzw, dtype=float)
        norm = np.linalg.norm(quat_xyzw) if quat_xyzw.shape == (4,) else 0.0
        if (self._stopped or position_m.shape != (3,) or not np.all(np.isfinite(position_m))
                or not np.isfinite(norm) or norm < 1e-6):
            return None
        position_sent_m = np.clip(position_m, self._workspace_min_m, self._workspace_max_m)
        quat_sent_xyzw = quat_xyzw / norm
        answering = self._answering if self._answering is not None else self.read_state()
        self._publish_pose_target(position_sent_m, quat_sent_xyzw, answering.stamp_s)
        return position_sent_m, quat_sent_xyzw

    def command_gripper(self, width_m: float) -> float:
        """Publish the clipped width when it moved more than the deadband (no 1 kHz flood on the topic)."""
        if not np.isfinite(width_m):
            return float("nan")
        width_sent_m = float(np.clip(width_m, 0.0, self._max_gripper_width_m))
        if not self._stopped and (self._last_gripper_m is None
                                  or abs(width_sent_m - self._last_gripper_m) > self._gripper_deadband_m):
            self._publish_gripper(width_sent_m)
            self._last_gripper_m = width_sent_m
        return width_sent_m

    def stop(self) -> None:
        """Publish the measured TCP pose once (hold here, not at a stale target), then publish nothing more."""
        if self._stopped:
            return
        with self._new_state:
            state = self._state
        if state is not None and self._publish_pose_target is not None:
            position_m, quat_xyzw = self.model.ee_pose(state.q_rad)
            self._publish_pose_target(position_m, quat_xyzw, state.stamp_s)
        self._stopped = True
