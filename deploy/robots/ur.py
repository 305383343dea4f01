"""Universal Robots arm over RTDE (ur_rtde 1.6): streamed joint targets via servoJ, paced by RTDE samples.

ur_rtde calls used (verified against the 1.6.5 wheel): `rtde_receive.RTDEReceiveInterface(ip, frequency)`,
`getTimestamp()` (controller time [s]), `getActualQ()`, `getActualQd()`, `getTargetMoment()`,
`getActualTCPForce()`, `isConnected()`, `disconnect()`; `rtde_control.RTDEControlInterface(ip, frequency)`,
`servoJ(q, speed, acceleration, time, lookahead_time, gain)` (speed/acceleration unused by ur_rtde),
`servoStop()`, `stopScript()`, `disconnect()`. Connection failures raise RuntimeError.

Why servoJ and our own IK, not servoL: the control loop turns the safe Cartesian reference into joint targets by
damped-least-squares IK on the UR5e model, seeded with the last solution (deploy.control.ik). That keeps the
arm on one IK branch, lets the joint limits and this backend's per-sample joint-speed clip act before anything
is sent, and degrades gracefully near singularities, where servoL's controller-side IK may pick large joint
motions. ur_rtde's `RTDEControlInterface.getInverseKinematics(x, qnear, ...)` exists in 1.6.5 but is a
request to the robot's control script per call (needs the connection, not a 2 ms budget item).

The arm has 6 joints: states, targets and the model are (6,) (`model.dof`), not base.ARM_DOF.
The ur_rtde wheel has no Python Robotiq driver (its RobotiqGripper is C++ only / an example script), so
`command_gripper` is a no-op: `gripper_available` is False and `gripper_width_m` reads NaN (unknown).
"""
from __future__ import annotations

import time

import numpy as np

from deploy.errors import ConfigError, DeployError, RobotConnectionError
from deploy.robots.base import Capability, Robot, RobotState
from deploy.robots.clock import RobotClockMapper
from deploy.robots.ur_model import UR_DOF, UR5eModel

POLL_S = 0.0002  # sleep between RTDE timestamp checks while waiting for the next sample


def import_rtde():
    """The optional dependency, imported on connect so the rest of `deploy` works without it."""
    try:
        import rtde_control
        import rtde_receive
    except ImportError as error:
        raise ConfigError(f"robot 'ur' needs the ur-rtde package: pip install 'deploy[ur]' ({error})") from None
    return rtde_control, rtde_receive


class URRobot(Robot):
    """Joint-target streaming to a UR e-series (500 Hz RTDE) or CB3 (125 Hz) with a UR5e kinematic model."""

    capabilities = Capability.JOINT_TARGET
    dof = UR_DOF
    gripper_available = False

    def __init__(self, ip: str, frequency_hz: float = 500.0, lookahead_time_s: float = 0.1, gain: float = 300.0,
                 max_joint_speed_rad_s: float = 1.0, tcp_offset_m: float = 0.0):
        if not ip:
            raise ConfigError("robot 'ur' needs the controller address: set the 'ip' parameter")
        if frequency_hz not in (125.0, 500.0):
            raise ConfigError(f"ur frequency_hz={frequency_hz} must be 500 (e-series) or 125 (CB3)")
        if not 0.03 <= lookahead_time_s <= 0.2 or not 100.0 <= gain <= 2000.0:
            raise ConfigError(f"ur lookahead_time_s={lookahead_time_s} must be in [0.03, 0.2] and gain={gain} "
                              "in [100, 2000] (servoJ's ranges)")
        if not 0.0 < max_joint_speed_rad_s <= np.pi:
            raise ConfigError(f"ur max_joint_speed_rad_s={max_joint_speed_rad_s} must be in (0, pi]")
        self.ip = ip
        self.model = UR5eModel(tcp_offset_m)
        self.period_s = 1.0 / frequency_hz
        self._frequency_hz = frequency_hz
        self._lookahead_time_s = lookahead_time_s
        self._gain = gain
        self._max_step_rad = max_joint_speed_rad_s * self.period_s
        self._control = None
        self._receive = None
        self._clock = RobotClockMapper()
        self._state: RobotState | None = None
        self._robot_time_s: float | None = None
        self._seq = 0
        self._last_target_rad: np.ndarray | None = None

    def connect(self) -> None:
        rtde_control, rtde_receive = import_rtde()
        try:
            self._receive = rtde_receive.RTDEReceiveInterface(self.ip, self._frequency_hz)
            self._control = rtde_control.RTDEControlInterface(self.ip, self._frequency_hz)
        except RuntimeError as error:
            self._disconnect()
            raise RobotConnectionError(f"cannot reach UR at {self.ip}: {error} — is the arm powered on, in "
                                       "remote control mode, and reachable (ping)?") from None
        self._sample()

    def _sample(self) -> RobotState:
        self._robot_time_s = self._receive.getTimestamp()
        self._seq += 1
        self._state = RobotState(stamp_s=self._clock.stamp(self._robot_time_s, time.time()),
                                 q_rad=np.array(self._receive.getActualQ(), dtype=float),
                                 dq_rad_s=np.array(self._receive.getActualQd(), dtype=float),
                                 tau_measured_nm=np.array(self._receive.getTargetMoment(), dtype=float),
                                 gripper_width_m=float("nan"), seq=self._seq,
                                 ee_wrench=np.array(self._receive.getActualTCPForce(), dtype=float))
        return self._state

    def read_state(self) -> RobotState:
        """Latest sample; `tau_measured_nm` is the controller's target moment (UR has no joint torque sensors);
        `ee_wrench` is RTDE's actual_TCP_force: [Fx, Fy, Fz N, Tx, Ty, Tz Nm] at the TCP in the base frame,
        payload compensated (e-series: the tool-flange F/T sensor, offset removed by zero_ftsensor() on the robot;
        CB3: estimated from joint currents)."""
        if self._state is None:
            raise RobotConnectionError(f"no state from UR at {self.ip} yet: call connect() first")
        return self._state

    def wait_for_state(self, after_seq: int, timeout_s: float) -> RobotState | None:
        """Poll RTDE until its controller timestamp advances (a new 2 ms / 8 ms sample), then read it.

        Pacing comes from the robot: the loop runs at the RTDE rate. Stamp: controller time mapped onto
        host wall-clock time (`RobotClockMapper`). ur_rtde refreshes its fields in its own thread, so the
        fields of one sample can, rarely, mix two consecutive packets.
        """
        if self._state is not None and self._state.seq > after_seq:
            return self._state
        if self._receive is None:
            return None
        deadline_s = time.monotonic() + timeout_s
        while True:
            if self._receive.getTimestamp() != self._robot_time_s:
                return self._sample()
            if time.monotonic() >= deadline_s:
                if not self._receive.isConnected():
                    raise RobotConnectionError(f"lost the RTDE connection to UR at {self.ip}")
                return None
            time.sleep(POLL_S)

    def command_joint_target(self, q_rad: np.ndarray) -> np.ndarray:
        """servoJ to `q_rad` clipped to the joint limits and to max_joint_speed per RTDE period; returns it."""
        q_rad = np.asarray(q_rad, dtype=float)
        if q_rad.shape != (UR_DOF,) or not np.all(np.isfinite(q_rad)):
            raise DeployError(f"UR joint target must be 6 finite angles [rad], got {q_rad!r}")
        previous_rad = self._last_target_rad if self._last_target_rad is not None else self.read_state().q_rad
        limits_rad = self.model.joint_limits_rad
        q_sent_rad = np.clip(np.clip(q_rad, previous_rad - self._max_step_rad, previous_rad + self._max_step_rad),
                             limits_rad[:, 0], limits_rad[:, 1])
        if self._control is not None:
            if not self._control.servoJ(q_sent_rad.tolist(), 0.0, 0.0, self.period_s, self._lookahead_time_s,
                                        self._gain):
                raise RobotConnectionError(f"UR at {self.ip} refused servoJ — is the control script still running "
                                           "(protective stop, e-stop, or program stopped on the pendant)?")
        self._last_target_rad = q_sent_rad
        return q_sent_rad

    def command_gripper(self, width_m: float) -> float:
        """No gripper driver in ur_rtde: nothing is commanded (see `gripper_available`)."""
        del width_m
        return float("nan")

    def stop(self) -> None:
        """servoStop decelerates, stopScript ends the RTDE control script: UR's own controller holds the arm."""
        if self._control is not None:
            try:
                self._control.servoStop()
                self._control.stopScript()
            except RuntimeError:
                pass  # connection already gone: the controller's watchdog has stopped the program
        self._last_target_rad = None
        self._disconnect()

    def _disconnect(self) -> None:
        for interface in (self._control, self._receive):
            if interface is not None:
                try:
                    interface.disconnect()
                except RuntimeError:
                    pass
        self._control = self._receive = None
