"""Who commands the controller: the policy or an operator, never both (the authority mux).

- A takeover is bumpless: the operator's target starts at the measured TCP pose and moves from there.
- A device operator drives while its deadman is held, plus `hold_over_s` after it is let go (holding still).
- Handing back: the policy's chunks are forwarded again only if computed from an observation taken after the
  hand-back (stamp > hand-back time); older ones were computed while the operator drove and are dropped.
Time is passed in everywhere; nothing here reads a clock or touches ROS.
"""
from __future__ import annotations

import abc
import dataclasses
import math

import numpy as np
from scipy.spatial.transform import Rotation

from deploy.control.chunks import Chunk
from deploy.errors import ConfigError
from deploy.sensing.observation import Observation
from deploy.teleop.devices import GRIPPER, OperatorDevice


@dataclasses.dataclass
class TeleopConfig:
    """How a device operator's input becomes Cartesian chunks."""

    max_linear_speed_m_s: float = 0.1  # TCP speed at full deflection [m/s]
    max_angular_speed_rad_s: float = 0.5  # TCP angular speed at full deflection [rad/s]
    hold_over_s: float = 0.3  # authority stays this long after the deadman is let go [s]
    chunk_rate_hz: float = 25.0  # operator chunks per second [Hz]
    chunk_points: int = 3  # points per operator chunk
    chunk_dt_s: float = 0.04  # spacing of those points [s]; points * dt should exceed 1 / chunk_rate_hz
    max_lead_m: float = 0.05  # the target never runs further than this ahead of the measured TCP [m]
    gripper_open_m: float = 0.08  # widths the gripper key toggles between [m]
    gripper_closed_m: float = 0.0

    def __post_init__(self):
        bounds = {"max_linear_speed_m_s": (0.001, 1.0), "max_angular_speed_rad_s": (0.01, 3.0),
                  "hold_over_s": (0.0, 5.0), "chunk_rate_hz": (1.0, 200.0), "chunk_points": (1, 50),
                  "chunk_dt_s": (0.001, 0.5), "max_lead_m": (0.001, 0.5), "gripper_open_m": (0.0, 0.2),
                  "gripper_closed_m": (0.0, 0.2)}
        for name, (low, high) in bounds.items():
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and low <= value <= high):
                raise ConfigError(f"teleop.{name} {value} outside [{low}, {high}]")
        if self.chunk_points * self.chunk_dt_s < 1.0 / self.chunk_rate_hz:
            raise ConfigError(f"teleop chunks cover {self.chunk_points * self.chunk_dt_s:.3f} s, less than their "
                              f"period 1/chunk_rate_hz = {1.0 / self.chunk_rate_hz:.3f} s: the controller would starve")


class Deadman:
    """Authority while held, and for `hold_over_s` after the last time it was held."""

    def __init__(self, hold_over_s: float):
        self.hold_over_s = hold_over_s
        self._last_held_s = -math.inf

    def update(self, held: bool, now_s: float) -> bool:
        if held:
            self._last_held_s = now_s
        return now_s - self._last_held_s <= self.hold_over_s


class Operator(abc.ABC):
    """Something that can take authority from the policy and command chunks while it has it."""

    name: str  # for the log, e.g. "keyboard on /dev/pts/3"
    state_keys: tuple[str, ...]  # observation inputs it needs (names as in the policies' observations)
    chunk_period_s: float  # how often it commands a chunk while it has authority [s]

    def judge(self, chunk: Chunk, observation: Observation | None, now_s: float) -> None:
        """Sees every chunk the policy proposes (the scripted operator decides on them)."""

    @abc.abstractmethod
    def step(self, now_s: float, observation: Observation | None) -> tuple[str, ...]:
        """Poll the operator's input every tick; -> events to publish (success / failure / rerecord)."""

    @abc.abstractmethod
    def wants_authority(self) -> bool:
        """The operator asks for authority now (it also stops the policy's chunks before a takeover starts)."""

    def start(self, observation: Observation, now_s: float) -> None:
        """Authority is the operator's from now on (start from the measured state)."""

    def stop(self, now_s: float) -> None:
        """Authority went back to the policy."""

    def forget(self) -> None:
        """Between episodes: drop any wish for authority (the next episode starts with the policy in charge)."""

    @abc.abstractmethod
    def command(self, now_s: float, observation: Observation | None) -> Chunk | None:
        """The chunk to execute now while the operator has authority (None: nothing new)."""

    def status(self) -> str:
        """One line for the log when authority changes hands (why it did)."""
        return ""

    def close(self) -> None:
        """Release the device."""


class DeviceOperator(Operator):
    """A human on a device: the target starts at the measured pose and integrates the device's twist."""

    state_keys = ("ee_pose", "gripper_width")

    def __init__(self, device: OperatorDevice, config: TeleopConfig):
        self.device, self.config, self.name = device, config, device.name
        self.chunk_period_s = 1.0 / config.chunk_rate_hz
        self.deadman = Deadman(config.hold_over_s)
        self._speeds = np.repeat([config.max_linear_speed_m_s, config.max_angular_speed_rad_s], 3)  # (6,)
        self._wants = False
        self._velocity = np.zeros(6)  # [m/s, rad/s] base frame
        self._last_s: float | None = None
        self.position_m: np.ndarray | None = None  # target while in authority
        self.quat_xyzw: np.ndarray | None = None
        self.gripper_m = 0.0

    def step(self, now_s: float, observation: Observation | None) -> tuple[str, ...]:
        sample = self.device.read(now_s)
        self._wants = self.deadman.update(sample.deadman_held, now_s)
        # During the hold-over the target stands still: the operator has let go.
        self._velocity = sample.twist * self._speeds if sample.deadman_held else np.zeros(6)
        dt_s = 0.0 if self._last_s is None else min(max(now_s - self._last_s, 0.0), 0.1)
        self._last_s = now_s
        if self.position_m is not None:
            self.position_m, self.quat_xyzw = self._advance(self.position_m, self.quat_xyzw, dt_s)
            if observation is not None:
                self.position_m = self._within_lead(self.position_m, np.asarray(observation["ee_pose"])[:3])
            if GRIPPER in sample.events:
                c = self.config
                more_open = self.gripper_m > 0.5 * (c.gripper_open_m + c.gripper_closed_m)
                self.gripper_m = c.gripper_closed_m if more_open else c.gripper_open_m
        return tuple(e for e in sample.events if e != GRIPPER)

    def wants_authority(self) -> bool:
        return self._wants

    def start(self, observation: Observation, now_s: float) -> None:
        pose = np.asarray(observation["ee_pose"], dtype=float)
        self.position_m, self.quat_xyzw = pose[:3].copy(), pose[3:7] / np.linalg.norm(pose[3:7])
        self.gripper_m = float(np.asarray(observation["gripper_width"]).reshape(-1)[0])

    def command(self, now_s: float, observation: Observation | None) -> Chunk | None:
        """Points ahead on the current velocity, so consecutive chunks agree and the blend stays smooth."""
        times_s = self.config.chunk_dt_s * np.arange(1, self.config.chunk_points + 1)  # (P,)
        actions = np.empty((len(times_s), 8))
        for row, t_s in zip(actions, times_s):
            position_m, quat_xyzw = self._advance(self.position_m, self.quat_xyzw, t_s)
            row[:] = [*position_m, *quat_xyzw, self.gripper_m]
        return Chunk(stamp_s=now_s, times_s=times_s, actions=actions, weight_version="operator")

    def stop(self, now_s: float) -> None:
        self.position_m = self.quat_xyzw = None  # the next takeover starts afresh from the measured pose

    def _advance(self, position_m, quat_xyzw, dt_s):
        position_m = position_m + self._velocity[:3] * dt_s
        quat_xyzw = (Rotation.from_rotvec(self._velocity[3:] * dt_s) * Rotation.from_quat(quat_xyzw)).as_quat()
        return position_m, quat_xyzw

    def _within_lead(self, target_m, measured_m):
        lead_m = target_m - measured_m
        distance_m = np.linalg.norm(lead_m)
        if distance_m <= self.config.max_lead_m:
            return target_m
        return measured_m + lead_m * (self.config.max_lead_m / distance_m)

    def close(self) -> None:
        self.device.close()


@dataclasses.dataclass(frozen=True)
class MuxTick:
    human: bool  # the operator has authority after this tick
    chunk: Chunk | None  # the operator's chunk to execute now (also the logged human action)
    events: tuple[str, ...]  # success / failure / rerecord presses
    switched: bool  # authority changed hands in this tick


class AuthorityMux:
    """Exactly one writer: forwards the policy's chunks or commands the operator's, never both at once."""

    def __init__(self, operator: Operator | None):
        self.operator = operator  # None = passthrough (the policy always has authority)
        self.human = False
        self.handback_s = -math.inf  # when the operator last handed back [s]
        self._last_command_s = -math.inf

    def policy_chunk(self, chunk: Chunk, now_s: float, observation: Observation | None) -> bool:
        """-> whether to forward this policy chunk to the controller."""
        if self.operator is not None and chunk.stamp_s > self.handback_s:  # older: computed while the operator drove
            self.operator.judge(chunk, observation, now_s)
        return self.policy_may_write(chunk.stamp_s)

    def policy_may_write(self, stamp_s: float) -> bool:
        """A policy chunk stamped `stamp_s` may reach the controller (the judge-free check, e.g. joint chunks)."""
        if self.operator is None:
            return True
        return not (self.human or self.operator.wants_authority()) and stamp_s > self.handback_s

    def pause(self, now_s: float) -> bool:
        """No episode is running (the arm is homed, the scene reset): the operator lets go and stands by.
        -> whether authority changed hands."""
        if self.operator is None:
            return False
        self.operator.forget()
        if not self.human:
            return False
        self.operator.stop(now_s)
        self.human, self.handback_s = False, now_s
        return True

    def tick(self, now_s: float, observation: Observation | None) -> MuxTick:
        if self.operator is None:
            return MuxTick(False, None, (), False)
        events = self.operator.step(now_s, observation)
        wants = self.operator.wants_authority()
        switched = False
        if wants and not self.human and observation is not None:  # a takeover needs the measured pose
            self.operator.start(observation, now_s)
            self.human, switched, self._last_command_s = True, True, -math.inf
        elif not wants and self.human:
            self.operator.stop(now_s)
            self.human, switched, self.handback_s = False, True, now_s
        chunk = None
        if self.human and now_s - self._last_command_s >= self.operator.chunk_period_s - 1e-6:
            chunk = self.operator.command(now_s, observation)
            if chunk is not None:
                self._last_command_s = now_s
        return MuxTick(self.human, chunk, events, switched)

