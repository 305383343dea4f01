"""An arm driven by the user's own compliant controller (e.g. a C++ ros2_control Cartesian impedance controller).

ROS-free: the node injects two publishers and feeds joint states. Topic contract (the node's side):
- it publishes `geometry_msgs/PoseStamped` (frame: the robot base) to the controller's target topic, e.g.
  `/external_controller/target_pose`, from `publish_pose_target(position_m, quat_xyzw, stamp_s)`;
- it publishes the gripper width [m] from `publish_gripper(width_m)` (e.g. a `std_msgs/Float64` or a
  gripper action goal; the controller's choice);
- it subscribes `sensor_msgs/JointState` (e.g. `/joint_states`) and calls `feed_state(RobotState)` with the
  message's header stamp, positions, velocities, efforts and finger width, in joint order.
Pose targets are stamped with the newest state's stamp: the tick's "now" on the node clock.
"""
from __future__ import annotations

import dataclasses
import threading
from typing import Callable

import numpy as np

from deploy.errors import ConfigError, RobotConnectionError
from deploy.robots.base import Capability, Robot, RobotModel, RobotState

PosePublisher = Callable[[np.ndarray, np.ndarray, float], None]  # position (3,) [m], quat (4,) xyzw, stamp [s]
GripperPublisher = Callable[[float], None]  # width [m]


class ExternalControllerRobot(Robot):
    """Streams Cartesian targets to an external controller; its joint states pace `wait_for_state`."""

    capabilities = Capability.POSE_TARGET

    def __init__(self, publish_pose_target: PosePublisher, publish_gripper: GripperPublisher,
                 model_name: str = "franka", state_topic: str = "/joint_states", connect_timeout_s: float = 5.0,
                 workspace_min_m=(-1.0, -1.0, 0.0), workspace_max_m=(1.0, 1.0, 1.2), max_gripper_width_m: float = 0.08,
                 gripper_deadband_m: float = 0.001, model: RobotModel | None = None):
        self._workspace_min_m = np.asarray(workspace_min_m, dtype=float)
        self._workspace_max_m = np.asarray(workspace_max_m, dtype=float)
        if (self._workspace_min_m.shape != (3,) or self._workspace_max_m.shape != (3,)
                or np.any(self._workspace_min_m >= self._workspace_max_m)):
            raise ConfigError(f"external workspace_min_m={workspace_min_m} must be 3 values below "
                              f"workspace_max_m={workspace_max_m}")
        if model is None:
            from deploy.robots.registry import make_model
            model = make_model(model_name)
        self.model = model
        self._publish_pose_target = publish_pose_target
        self._publish_gripper = publish_gripper
        self._state_topic = state_topic
        self._connect_timeout_s = connect_timeout_s
        self._max_gripper_width_m = max_gripper_width_m
        self._gripper_deadband_m = gripper_deadband_m
        self._state: RobotState | None = None
        self._seq = 0
        self._new_state = threading.Condition()
        self._stopped = False
        self._last_gripper_m: float | None = None

    def feed_state(self, state: RobotState) -> None:
        """Called from the node's joint-state callback (any thread); assigns the next `seq` and wakes waiters."""
        with self._new_state:
            self._seq += 1
            self._state = dataclasses.replace(state, seq=self._seq)
            self._new_state.notify_all()

    def connect(self) -> None:
        """Wait for the first joint state: proves the controller side is up."""
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
        self._publish_pose_target(position_sent_m, quat_sent_xyzw, self.read_state().stamp_s)
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
        if state is not None:
            position_m, quat_xyzw = self.model.ee_pose(state.q_rad)
            self._publish_pose_target(position_m, quat_xyzw, state.stamp_s)
        self._stopped = True
