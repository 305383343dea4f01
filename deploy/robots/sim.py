"""The sim backend: reaches the MuJoCo Panda process over its shared-memory link, like a driver reaching a
real arm over its fieldbus. Kinematics and dynamics come from MuJoCo (the stand-in for libfranka's model)."""
from __future__ import annotations

import time

import numpy as np
from numba import njit

from deploy.errors import RobotConnectionError
from deploy.robots.base import Capability, Robot, RobotState
from deploy.robots.mujoco_model import MujocoRobotModel
from deploy.sim.link import STALE_AFTER_S, LinkClient
from deploy.sim.physics import GRIPPER_OPEN_WIDTH_M

SPIN_BEFORE_SLEEP = 20  # polls before falling back to 50 µs sleeps (spinning starves DDS threads)
# Real-time link: the next sample comes one period after the latest one's stamp (the sim paces itself on the
# wall clock), so the wait sleeps through this much of the period before it polls: one wake-up instead of ~15
# 50 µs polls per tick (the loop process's CPU: 33 % -> see README). The rest is left for late wake-ups.
SLEEP_THROUGH_PERIOD = 0.75


@njit(nogil=True, cache=True)
def _finite_clipped(tau_nm, limits_nm):
    """NaN -> 0, everything else clipped to +-limits: what the link may carry to the sim."""
    out = np.empty(tau_nm.shape[0])
    for i in range(tau_nm.shape[0]):
        out[i] = 0.0 if np.isnan(tau_nm[i]) else min(max(tau_nm[i], -limits_nm[i]), limits_nm[i])
    return out


class SimRobot(Robot):
    capabilities = Capability.TORQUE

    def __init__(self, link_name: str | None = None):
        self.link_name = link_name
        self.model = MujocoRobotModel()
        self._link: LinkClient | None = None
        self._latest: RobotState | None = None
        self._gripper_width_m = GRIPPER_OPEN_WIDTH_M
        _finite_clipped(np.zeros(len(self.model.torque_limits_nm)), self.model.torque_limits_nm)  # compile now

    def connect(self) -> None:
        self._link = LinkClient(self.link_name)

    def _read(self) -> RobotState | None:
        sample = self._connected_link().read_state()
        if sample is None:
            return self._latest
        self._latest = RobotState(sample.stamp_s, sample.q_rad, sample.dq_rad_s, sample.tau_nm,
                                  sample.gripper_width_m, seq=sample.seq, ee_wrench=sample.ee_wrench)
        return self._latest

    def read_state(self) -> RobotState:
        return self._read()

    def wait_for_state(self, after_seq: int, timeout_s: float) -> RobotState | None:
        """Block until the sim publishes a sample newer than `after_seq` (its 1 kHz clock paces the loop).

        Raises RobotConnectionError once the sim's heartbeat is older than STALE_AFTER_S (process gone)."""
        link = self._connected_link()
        deadline = time.monotonic() + timeout_s
        latest = self._latest
        if not link.lockstep and latest is not None and latest.seq == after_seq:
            time.sleep(min(max(0.0, latest.stamp_s + SLEEP_THROUGH_PERIOD * self.period_s - time.time()), timeout_s))
        polls = 0
        while True:
            if link.state_seq() > after_seq:
                state = self._read()
                if state is not None and state.seq > after_seq:
                    return state
            remaining_s = deadline - time.monotonic()
            if remaining_s < 0:
                if link.heartbeat_age_s() > STALE_AFTER_S:
                    raise RobotConnectionError(f"the sim on link '{link.name}' stopped: no state for "
                                               f"{link.heartbeat_age_s():.1f} s (sim process gone?)")
                return None
            if link.lockstep:
                link.wait_for_state_bell(remaining_s)
                continue
            polls += 1
            if polls > SPIN_BEFORE_SLEEP:
                time.sleep(0.00005)

    def _connected_link(self) -> LinkClient:
        if self._link is None:
            raise RobotConnectionError(f"sim robot on link '{self.link_name}' is not connected (call connect())")
        return self._link

    def command_torque(self, tau_nm: np.ndarray) -> np.ndarray:
        sent = _finite_clipped(np.asarray(tau_nm, dtype=float), self.model.torque_limits_nm)
        answers = self._latest.seq if self._latest is not None else 0
        self._connected_link().write_command(answers, sent, self._gripper_width_m)
        return sent

    def command_gripper(self, width_m: float) -> float:
        """Takes effect with the next torque command (both travel in one link message)."""
        self._gripper_width_m = min(max(float(width_m), 0.0), GRIPPER_OPEN_WIDTH_M)
        return self._gripper_width_m

    def stop(self) -> None:
        if self._link is not None:
            self._link.close()
            self._link = None

    def clock_now_s(self) -> float | None:
        return self._link.sim_time_s() if self._link is not None and self._link.lockstep else None
