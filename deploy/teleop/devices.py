"""Operator input devices behind one small interface, chosen by name from a registry.

A device turns whatever the operator touches into a `DeviceSample`: a normalised twist, whether the deadman is
held, and the button presses since the last read. Devices never read a clock (`read` takes `now_s`) and
never block: the intervention node polls them every tick. Backends: `keyboard` (this module), `gamepad`
(deploy.teleop.gamepad, evdev), `spacemouse` (deploy.teleop.spacemouse, pyspacemouse/hidapi).
"""
from __future__ import annotations

import abc
import dataclasses
import os
import select
import termios
import tty

import numpy as np

from deploy.errors import ConfigError, DeployError
from deploy.registry import Registry

# Button presses a device reports; all but GRIPPER are published on /intervention/event.
GRIPPER, SUCCESS, FAILURE, RERECORD = "gripper", "success", "failure", "rerecord"
EVENTS = (GRIPPER, SUCCESS, FAILURE, RERECORD)


class DeviceError(DeployError):
    """An operator device is absent, unusable or lost; the message names the device and where it looked."""


@dataclasses.dataclass(frozen=True)
class DeviceSample:
    """What the operator does right now."""

    twist: np.ndarray  # (6,) [vx vy vz wx wy wz] in the robot base frame, each normalised to -1..1
    deadman_held: bool  # the operator asks for authority
    events: tuple[str, ...] = ()  # presses since the last read, oldest first (values of EVENTS)

    def __post_init__(self):
        twist = np.clip(np.asarray(self.twist, dtype=float).reshape(6), -1.0, 1.0)
        object.__setattr__(self, "twist", twist)


class OperatorDevice(abc.ABC):
    """One operator device, opened at construction (DeviceError when absent), polled without blocking."""

    name: str  # for messages, e.g. "keyboard on /dev/pts/3"

    @abc.abstractmethod
    def read(self, now_s: float) -> DeviceSample:
        """Everything that arrived since the last call; never blocks."""

    def close(self) -> None:
        """Release the device (restore the terminal, close the file)."""


DEVICES: Registry[OperatorDevice] = Registry("teleop device")
register = DEVICES.register


def make_device(name: str, **params) -> OperatorDevice:
    """Import the backends (lazily: each imports its own library only when opened) and build `name`."""
    from deploy.teleop import gamepad, spacemouse  # noqa: F401  (register themselves)

    return DEVICES.make(name, **params)


# --------------------------------------------------------------------------------------------- keyboard ---
# key -> (twist index, sign). Base frame: x away from the robot base, y to its left, z up.
KEY_AXES = {"w": (0, 1.0), "s": (0, -1.0), "a": (1, 1.0), "d": (1, -1.0), "r": (2, 1.0), "f": (2, -1.0)}
KEY_EVENTS = {"g": GRIPPER, "1": SUCCESS, "0": FAILURE, "x": RERECORD}
DEADMAN_KEY = " "


def keyboard_help() -> str:
    """The key map, printed when the keyboard operator starts."""
    return ("keyboard operator (keys in this terminal; Ctrl-C quits):\n"
            "  space  deadman on/off (on: take over from the policy; off: hand back)\n"
            "  w / s  +x / -x (away from / towards the robot base)   a / d  +y / -y (left / right)\n"
            "  r / f  +z / -z (up / down)                            hold a key to keep moving\n"
            "  g  gripper open/close    1  success    0  failure    x  re-record the episode")


@register("keyboard")
class KeyboardDevice(OperatorDevice):
    """Keys from the terminal the session runs in (cbreak mode, restored on close).

    A terminal reports key presses, not releases, so space toggles the deadman and a motion key moves its
    axis for `key_hold_s` after each press; the terminal's auto-repeat keeps a held key moving.
    """

    def __init__(self, terminal: str = "", key_hold_s: float = 0.25):
        if not 0.01 <= key_hold_s <= 2.0:
            raise ConfigError(f"keyboard key_hold_s {key_hold_s} outside [0.01, 2]")
        self.key_hold_s = key_hold_s
        if terminal:
            try:
                self._fd, self._owns_fd = os.open(terminal, os.O_RDWR | os.O_NOCTTY), True
            except OSError as error:
                raise DeviceError(f"keyboard: cannot open terminal '{terminal}': {error.strerror}") from None
        else:
            self._fd, self._owns_fd = 0, False
        if not os.isatty(self._fd):
            where = f"'{terminal}'" if terminal else "standard input"
            self._release_fd()
            raise DeviceError(f"keyboard: {where} is not a terminal (start keyboard_operator in a terminal, "
                              "or set device_params.terminal to one, e.g. the output of `tty`)")
        self.name = f"keyboard on {os.ttyname(self._fd)}"
        self._saved = termios.tcgetattr(self._fd)
        tty.setcbreak(self._fd, termios.TCSANOW)  # keys one at a time, no echo; Ctrl-C still interrupts
        self._deadman = False
        self._pressed_s = np.full(6, -np.inf)  # last press per twist index [s]
        self._sign = np.zeros(6)

    def read(self, now_s: float) -> DeviceSample:
        events = []
        for key in self._pending_keys():
            if key in KEY_AXES:
                index, sign = KEY_AXES[key]
                self._pressed_s[index], self._sign[index] = now_s, sign
            elif key == DEADMAN_KEY:
                self._deadman = not self._deadman
            elif key in KEY_EVENTS:
                events.append(KEY_EVENTS[key])
        moving = now_s - self._pressed_s < self.key_hold_s  # (6,)
        return DeviceSample(np.where(moving, self._sign, 0.0), self._deadman, tuple(events))

    def _pending_keys(self) -> str:
        data = b""
        while select.select([self._fd], [], [], 0.0)[0]:
            chunk = os.read(self._fd, 1024)
            if not chunk:  # the terminal hung up
                raise DeviceError(f"{self.name}: the terminal closed")
            data += chunk
        return data.decode("utf-8", errors="ignore").lower()

    def close(self) -> None:
        if self._fd is None:
            return
        try:
            termios.tcsetattr(self._fd, termios.TCSAFLUSH, self._saved)
        except termios.error:
            pass  # the terminal is gone: nothing to restore
        self._release_fd()

    def _release_fd(self):
        if self._owns_fd:
            os.close(self._fd)
        self._fd = None

