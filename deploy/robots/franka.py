"""Franka Panda / FR3 over FCI with pylibfranka (0.21): torque control paced by the robot's 1 kHz clock.

pylibfranka calls used (verified against the 0.21.3 wheel): `Robot(ip, RealtimeConfig)`, `Robot.read_once()`,
`Robot.start_torque_control() -> ActiveControlBase`, `ActiveControlBase.readOnce() -> (RobotState, Duration)`,
`ActiveControlBase.writeOnce(Torques)`, `Torques.motion_finished`, `Robot.stop()`, `Gripper(ip)`,
`Gripper.move(width, speed)`, `Gripper.grasp(width, speed, force, epsilon_inner, epsilon_outer)`,
`Gripper.read_once().width`; every exception derives from RuntimeError or `FrankaException`.
`RobotState.O_F_ext_hat_K` (6,) [N, N, N, Nm, Nm, Nm], libfranka's estimated external wrench acting on the
stiffness frame K (the EE frame unless `setK` moved it; torque about K's origin), in the base frame, becomes
`RobotState.ee_wrench` as is. Users report the real arm giving it the opposite sign (libfranka#26,
franka_ros#254): before a controller relies on the sign, push the hand down once — fz must go negative.

Franka compensates gravity inside its own controller: the controller config for franka must use
`add_gravity: false`, or gravity is applied twice. We do not count on libfranka's torque-rate limiter or
low-pass filter (options of its callback `control()` API; not verified for `writeOnce`): the impedance law's
per-tick rate limit must keep the command within Franka's 1000 Nm/s.

Model: `pylibfranka.Model` evaluates only a `RobotState` read from the robot (RobotState has no constructor)
and exposes no forward kinematics, so it cannot answer `ee_pose(q)` for an arbitrary q. The backend uses
`MujocoRobotModel` (the same Panda kinematics and link inertias, from gym-hil's MJCF). Its TCP is the
Robotiq 2F-85 pinch point; with a Franka Hand the TCP differs, so `tcp_model_error_m` reports, at connect, how
far the model's TCP is from the robot's own `O_T_EE` (compare before trusting Cartesian targets).
"""
from __future__ import annotations

import socket
import threading
import time
from typing import Callable

import numpy as np

from deploy.errors import ConfigError, DeployError, PermanentRobotError, RobotConnectionError
from deploy.robots.base import ARM_DOF, Capability, Robot, RobotState
from deploy.robots.clock import RobotClockMapper

FRANKA_HAND_MAX_WIDTH_M = 0.08
GRIPPER_POLL_S = 0.1  # width read-back period while the gripper is idle
DESK_PORT = 443  # Desk (https) answers whenever the control unit is up, with or without FCI


def desk_answers(ip: str, timeout_s: float = 1.0) -> bool:
    """Whether the robot's Desk web server accepts a TCP connection (the control unit is up)."""
    try:
        with socket.create_connection((ip, DESK_PORT), timeout=timeout_s):
            return True
    except OSError:
        return False


def classify_connect_error(ip: str, error: Exception, is_realtime_error: bool,
                           desk_up: Callable[[], bool]) -> DeployError:
    """libfranka's start-up failure as an error that says whether retrying can help, and the fix.

    Permanent (fail once): no real-time kernel (`RealtimeException`), a robot system version this pylibfranka
    does not speak (`IncompatibleVersionException`: also a Panda/FER behind an FR3 library), and FCI off: libfranka
    says "Connection to FCI refused" both for FCI off and for a robot (or simulator) not up yet, so a refusal
    is permanent only when Desk answers on the same address. Anything else (timeouts, unreachable) is
    transient and retried.
    """
    text = str(error)
    where = f"Franka at {ip}"
    if is_realtime_error or "realtime capabilities" in text:
        return PermanentRobotError(f"{where}: {text} — run on a PREEMPT_RT kernel, or set realtime:=false "
                                   "(robot_params.realtime: false; more jitter, fine for a first test)")
    if "Incompatible library version" in text:
        return PermanentRobotError(f"{where}: {text} — install the pylibfranka release that matches the robot "
                                   "system version (Franka's compatibility table)")
    if "Connection to FCI refused" in text and desk_up():
        return PermanentRobotError(f"{where}: {text} — Desk answers but FCI does not: activate FCI in Desk "
                                   "(and release the joint brakes)")
    return RobotConnectionError(f"cannot reach {where}: {text} — is the robot powered on, its cable in, and FCI "
                                "enabled in Desk?")


def import_pylibfranka():
    """The optional dependency, imported on connect so the rest of `deploy` works without it."""
    try:
        import pylibfranka
    except ImportError as error:
        raise ConfigError(f"robot 'franka' needs the pylibfranka package: pip install 'deploy[franka]' "
                          f"({error})") from None
    return pylibfranka


class FrankaRobot(Robot):
    """Torque-controlled Franka arm; `wait_for_state` blocks on the robot's clock, so it paces the 1 kHz loop."""

    capabilities = Capability.TORQUE

    def __init__(self, ip: str, gripper: bool = True, realtime: bool = True, gripper_speed_m_s: float = 0.1,
                 grasp_force_n: float = 40.0, gripper_deadband_m: float = 0.001, model=None):
        if not ip:
            raise ConfigError("robot 'franka' needs its FCI address: set the 'ip' parameter (e.g. 172.16.0.2)")
        if not 0.0 < gripper_speed_m_s <= 0.1 or not 0.0 <= grasp_force_n <= 70.0:
            raise ConfigError(f"franka gripper_speed_m_s={gripper_speed_m_s} must be in (0, 0.1], "
                              f"grasp_force_n={grasp_force_n} in [0, 70]")
        if model is None:
            from deploy.robots.mujoco_model import MujocoRobotModel
            model = MujocoRobotModel()
        self.model = model
        self.ip = ip
        self.tcp_model_error_m: float | None = None
        self._use_gripper = gripper
        self._realtime = realtime
        self._gripper_speed_m_s = gripper_speed_m_s
        self._grasp_force_n = grasp_force_n
        self._gripper_deadband_m = gripper_deadband_m
        self._franka = None  # the pylibfranka module once connected
        self._robot = None
        self._control = None
        self._gripper: FrankaGripperWorker | None = None
        self._clock = RobotClockMapper()
        self._state: RobotState | None = None
        self._seq = 0

    def connect(self) -> None:
        franka = import_pylibfranka()
        self._franka = franka
        mode = franka.RealtimeConfig.kEnforce if self._realtime else franka.RealtimeConfig.kIgnore
        try:
            self._robot = franka.Robot(self.ip, mode)
            if self._use_gripper:
                self._gripper = FrankaGripperWorker(franka.Gripper(self.ip), self._gripper_speed_m_s,
                                                    self._grasp_force_n)
            initial = self._robot.read_once()
            self._state = self._to_state(initial)
            position_m, _ = self.model.ee_pose(self._state.q_rad)
            self.tcp_model_error_m = float(np.linalg.norm(position_m - np.asarray(initial.O_T_EE)[12:15]))
            self._control = self._robot.start_torque_control()
        except (RuntimeError, franka.FrankaException) as error:
            self._close_gripper()
            raise classify_connect_error(self.ip, error, isinstance(error, franka.RealtimeException),
                                         lambda: desk_answers(self.ip)) from None

    def _to_state(self, sample) -> RobotState:
        self._seq += 1
        width_m = self._gripper.width_m if self._gripper is not None else float("nan")
        return RobotState(stamp_s=self._clock.stamp(sample.time.to_sec(), time.time()),
                          q_rad=np.array(sample.q, dtype=float), dq_rad_s=np.array(sample.dq, dtype=float),
                          tau_measured_nm=np.array(sample.tau_J, dtype=float), gripper_width_m=width_m,
                          seq=self._seq, ee_wrench=np.array(sample.O_F_ext_hat_K, dtype=float))

    def read_state(self) -> RobotState:
        if self._state is None:
            raise RobotConnectionError(f"no state from Franka at {self.ip} yet: call connect() first")
        return self._state

    def wait_for_state(self, after_seq: int, timeout_s: float) -> RobotState | None:
        """One `readOnce`: blocks until the robot's next 1 ms sample (libfranka's own timeouts apply, not ours).

        Stamp: the robot's sample clock (`RobotState.time`) mapped onto host wall-clock time by
        `RobotClockMapper` (least-delayed arrival), so consecutive stamps are exactly 1 ms apart.
        """
        del timeout_s
        if self._state is not None and self._state.seq > after_seq:
            return self._state
        if self._control is None:
            return None
        try:
            sample, _ = self._control.readOnce()
        except (RuntimeError, self._franka.FrankaException) as error:
            self._control = None
            if isinstance(error, self._franka.NetworkException):
                raise DeployError(f"lost the connection to Franka at {self.ip}: {error} — is the robot powered "
                                  "on and its cable in?") from None
            raise DeployError(f"Franka at {self.ip} stopped torque control: {error} — clear the reflex "
                              "(Desk or automatic error recovery) and restart the controller") from None
        self._state = self._to_state(sample)
        return self._state

    def command_torque(self, tau_nm: np.ndarray) -> np.ndarray:
        """Write torques without gravity (Franka adds it); non-finite entries become 0, then clipped to limits."""
        limits_nm = self.model.torque_limits_nm
        tau_sent_nm = np.clip(np.nan_to_num(np.asarray(tau_nm, dtype=float), nan=0.0, posinf=0.0, neginf=0.0),
                              -limits_nm, limits_nm)
        if self._control is not None:
            try:
                self._control.writeOnce(self._franka.Torques(tau_sent_nm.tolist()))
            except (RuntimeError, self._franka.FrankaException) as error:
                self._control = None
                raise DeployError(f"Franka at {self.ip} rejected the torque command: {error}") from None
        return tau_sent_nm

    def command_gripper(self, width_m: float) -> float:
        """Queue a gripper move; never blocks (the worker thread runs the slow call)."""
        width_m = float(np.clip(width_m, 0.0, FRANKA_HAND_MAX_WIDTH_M)) if np.isfinite(width_m) else float("nan")
        if self._gripper is not None and np.isfinite(width_m):
            self._gripper.request(width_m, self._gripper_deadband_m)
        return width_m

    def stop(self) -> None:
        """Finish the torque motion (zero torque, motion_finished): the robot's own controller holds/brakes."""
        control, self._control = self._control, None
        if control is not None:
            try:
                finish = self._franka.Torques([0.0] * ARM_DOF)
                finish.motion_finished = True
                control.writeOnce(finish)
            except (RuntimeError, self._franka.FrankaException):
                try:
                    self._robot.stop()
                except (RuntimeError, self._franka.FrankaException):
                    pass  # already stopped by a reflex: the brakes are in
        self._close_gripper()

    def _close_gripper(self) -> None:
        if self._gripper is not None:
            self._gripper.close()


class FrankaGripperWorker:
    """Runs the blocking Franka Hand calls in a thread; the newest target wins (one-slot buffer)."""

    def __init__(self, gripper, speed_m_s: float, grasp_force_n: float):
        self._gripper = gripper
        self._speed_m_s = speed_m_s
        self._grasp_force_n = grasp_force_n
        self.width_m = float(gripper.read_once().width)
        self.failed_moves = 0
        self.last_error = ""
        self._commanded_m: float | None = None
        self._pending_m: float | None = None
        self._closed = False
        self._wake = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="franka-gripper", daemon=True)
        self._thread.start()

    def request(self, width_m: float, deadband_m: float) -> None:
        """Only a change larger than `deadband_m` from the last commanded width starts a new move."""
        with self._wake:
            if self._commanded_m is not None and abs(width_m - self._commanded_m) <= deadband_m:
                return
            self._commanded_m = self._pending_m = width_m
            self._wake.notify()

    def _run(self) -> None:
        while True:
            with self._wake:
                self._wake.wait_for(lambda: self._closed or self._pending_m is not None, timeout=GRIPPER_POLL_S)
                if self._closed:
                    return
                target_m, self._pending_m = self._pending_m, None
            try:
                if target_m is not None:
                    self._move(target_m)
                self.width_m = float(self._gripper.read_once().width)
            except RuntimeError as error:  # CommandException / NetworkException: count it, keep serving
                self.failed_moves += 1
                self.last_error = str(error)

    def _move(self, target_m: float) -> None:
        """Closing grasps with force (holds an object whatever its width); opening is a plain move."""
        if target_m < self.width_m and self._grasp_force_n > 0.0:
            self._gripper.grasp(target_m, self._speed_m_s, self._grasp_force_n, FRANKA_HAND_MAX_WIDTH_M,
                                FRANKA_HAND_MAX_WIDTH_M)
        else:
            self._gripper.move(target_m, self._speed_m_s)

    def close(self) -> None:
        with self._wake:
            self._closed = True
            self._wake.notify()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout=5.0)
