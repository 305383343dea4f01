"""The one `Robot` interface every backend implements (sim, Franka, UR, external controller).

Nodes talk only to this interface and never branch on which backend runs. Times are seconds on the
robot's clock, which the backend maps to ROS time (wall clock for real robots and the real-time sim,
simulated time for the lockstep sim, so `use_sim_time` nodes agree with it).
"""
from __future__ import annotations

import abc
import dataclasses
import enum
from typing import Callable

import numpy as np

ARM_DOF = 7  # the Panda's joints; other arms say theirs through `RobotModel.dof`

PosePublisher = Callable[[np.ndarray, np.ndarray, float], None]  # position (3,) [m], quat (4,) xyzw, stamp [s]
GripperPublisher = Callable[[float], None]  # width [m]


class Capability(enum.Flag):
    """What a backend accepts as a command."""

    TORQUE = enum.auto()  # joint torques at the control rate (Franka, sim)
    JOINT_TARGET = enum.auto()  # streamed joint position targets (UR servoJ)
    POSE_TARGET = enum.auto()  # streamed Cartesian targets to an external compliant controller


@dataclasses.dataclass
class RobotState:
    """One sample of the arm, all arrays (dof,) in joint order, SI units."""

    stamp_s: float  # sample time, robot clock mapped to ROS time [s]
    q_rad: np.ndarray
    dq_rad_s: np.ndarray
    tau_measured_nm: np.ndarray
    gripper_width_m: float
    seq: int = 0  # increments with every new sample from the hardware
    # (6,) [fx, fy, fz N; tx, ty, tz N m]: the external wrench acting on the end effector, in the base frame,
    # torque about the TCP (libfranka's O_F_ext_hat_K convention); None = the backend cannot measure it.
    ee_wrench: np.ndarray | None = None


@dataclasses.dataclass(frozen=True)
class TopicBridge:
    """How the node reaches an arm that another ROS controller drives (e.g. a ros2_control Cartesian
    impedance controller): the node creates these publishers / the subscription and wires them to the backend
    with `Robot.attach_publishers` and `Robot.feed_state`, so the backend itself stays ROS-free."""

    pose_target_topic: str  # geometry_msgs/PoseStamped out: the target pose in the robot's base frame
    gripper_topic: str  # std_msgs/Float64 out: gripper width [m]; "" = the arm has no gripper
    joint_state_topic: str  # sensor_msgs/JointState in
    joint_names: tuple[str, ...]  # the arm's joints in model order, as the JointState names them
    gripper_joint: str  # the JointState entry holding the gripper width [m] (absent: width unknown)


@dataclasses.dataclass
class Dynamics:
    """What one torque tick needs of the model at (q, dq). A model may hand out the same arrays again at the
    next call (no per-tick allocation): read them before asking again."""

    position_m: np.ndarray  # (3,) TCP in the base frame
    quat_xyzw: np.ndarray  # (4,)
    jacobian: np.ndarray  # (6, dof) [linear; angular]
    mass_matrix: np.ndarray  # (dof, dof) [kg m^2]
    gravity_nm: np.ndarray  # (dof,)
    coriolis_nm: np.ndarray  # (dof,) C(q, dq) dq


class RobotModel(abc.ABC):
    """Kinematics and dynamics of the arm (libfranka's model library, or MuJoCo for the sim)."""

    def dynamics(self, q_rad: np.ndarray, dq_rad_s: np.ndarray) -> Dynamics:
        """Everything a torque tick needs at (q, dq); models on the 1 kHz path override it with one evaluation."""
        gravity_nm = self.bias_torque(q_rad, np.zeros_like(q_rad))
        return Dynamics(*self.ee_pose(q_rad), self.jacobian(q_rad), self.mass_matrix(q_rad), gravity_nm,
                        self.bias_torque(q_rad, dq_rad_s) - gravity_nm)

    @property
    def dof(self) -> int:
        """Number of arm joints: the length of every joint-space array of this arm."""
        return len(self.joint_limits_rad)

    @abc.abstractmethod
    def ee_pose(self, q_rad: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Tool-centre-point pose in the base frame: position (3,) [m], quaternion (4,) xyzw."""

    @abc.abstractmethod
    def jacobian(self, q_rad: np.ndarray) -> np.ndarray:
        """Geometric Jacobian (6, 7) of the TCP in the base frame, rows = [linear; angular]."""

    @abc.abstractmethod
    def mass_matrix(self, q_rad: np.ndarray) -> np.ndarray:
        """Joint-space inertia (7, 7) [kg m^2]."""

    @abc.abstractmethod
    def bias_torque(self, q_rad: np.ndarray, dq_rad_s: np.ndarray) -> np.ndarray:
        """Coriolis + centrifugal + gravity torque (7,) [Nm]."""

    @property
    @abc.abstractmethod
    def joint_limits_rad(self) -> np.ndarray:
        """(7, 2) lower/upper joint position limits."""

    @property
    @abc.abstractmethod
    def torque_limits_nm(self) -> np.ndarray:
        """(7,) absolute torque limit per joint."""


class Robot(abc.ABC):
    """A connection to one arm. `command_*` return what was actually sent (after the backend's clipping)."""

    capabilities: Capability
    model: RobotModel
    period_s: float = 0.001  # the sample period that paces the control loop (UR e-series: 0.002)
    topic_bridge: TopicBridge | None = None  # set by backends whose arm is reached over ROS topics

    @abc.abstractmethod
    def connect(self) -> None:
        """Open the connection; raises RobotConnectionError with a message naming what was not reachable."""

    @abc.abstractmethod
    def read_state(self) -> RobotState:
        """Latest state sample (non-blocking)."""

    def wait_for_state(self, after_seq: int, timeout_s: float) -> RobotState | None:
        """Block until a sample newer than `after_seq` exists (paces lockstep / hardware-clocked loops).

        Backends without a hardware clock return the latest sample immediately.
        """
        del after_seq, timeout_s
        return self.read_state()

    def command_torque(self, tau_nm: np.ndarray) -> np.ndarray:
        raise NotImplementedError(f"{type(self).__name__} does not accept torque commands")

    def command_joint_target(self, q_rad: np.ndarray) -> np.ndarray:
        raise NotImplementedError(f"{type(self).__name__} does not accept joint targets")

    def command_pose_target(self, position_m: np.ndarray, quat_xyzw: np.ndarray) -> None:
        raise NotImplementedError(f"{type(self).__name__} does not accept pose targets")

    @abc.abstractmethod
    def command_gripper(self, width_m: float) -> float:
        """Command the gripper opening [m]; returns the width actually commanded (clipped)."""

    def attach_publishers(self, publish_pose_target: PosePublisher, publish_gripper: GripperPublisher) -> None:
        """Backends with a `topic_bridge`: the node hands in its publishers before `connect()`."""
        raise NotImplementedError(f"{type(self).__name__} is not reached over ROS topics")

    def feed_state(self, state: RobotState) -> None:
        """Backends with a `topic_bridge`: the node's joint-state subscription delivers samples here."""
        raise NotImplementedError(f"{type(self).__name__} is not reached over ROS topics")

    @abc.abstractmethod
    def stop(self) -> None:
        """Stop commanding: the arm brakes/holds on its own (hardware safe state). Idempotent."""

    def clock_now_s(self) -> float | None:
        """The robot clock, if the backend has its own (lockstep sim); None means use the node clock."""
        return None
