"""Gamepad through Linux evdev (/dev/input/event*), Xbox-style layout as the kernel's gamepad API names it.

Sticks: left up/down -> x, left left/right -> y, right up/down -> z, right left/right -> yaw. Hold LB or RB as
the deadman. A gripper toggle, Start success, B failure, Back/Select re-record. `GamepadDecoder` is the
ROS-free, device-free part: it turns evdev events into a `DeviceSample`.
"""
from __future__ import annotations

import numpy as np

from deploy.errors import ConfigError
from deploy.teleop.devices import (
    FAILURE,
    GRIPPER,
    RERECORD,
    SUCCESS,
    DeviceError,
    DeviceSample,
    OperatorDevice,
    register,
)

# evdev codes (linux/input-event-codes.h), spelled out so decoding needs no evdev import.
EV_KEY, EV_ABS = 0x01, 0x03
ABS_X, ABS_Y, ABS_RX, ABS_RY = 0x00, 0x01, 0x03, 0x04
BTN_SOUTH, BTN_EAST, BTN_TL, BTN_TR, BTN_SELECT, BTN_START = 0x130, 0x131, 0x136, 0x137, 0x13A, 0x13B
# axis code -> (twist index, sign): stick up is a negative value, so up = +x / +z; left = +y / +yaw
AXIS_TWIST = {ABS_Y: (0, -1.0), ABS_X: (1, -1.0), ABS_RY: (2, -1.0), ABS_RX: (5, -1.0)}
DEADMAN_BUTTONS = (BTN_TL, BTN_TR)
BUTTON_EVENTS = {BTN_SOUTH: GRIPPER, BTN_START: SUCCESS, BTN_EAST: FAILURE, BTN_SELECT: RERECORD}
REQUIRED_ABS, REQUIRED_KEYS = (ABS_X, ABS_Y), (BTN_SOUTH,)
LOOKED_FOR = "/dev/input/event* devices with buttons (BTN_SOUTH) and a stick (ABS_X, ABS_Y)"


class GamepadDecoder:
    """Keeps the latest stick and button state from a stream of evdev events (objects with type/code/value)."""

    def __init__(self, absinfo: dict[int, object], deadzone: float = 0.1):
        """`absinfo`: axis code -> evdev AbsInfo (min, max, flat) for the axes the device has."""
        if not 0.0 <= deadzone < 1.0:
            raise ConfigError(f"gamepad deadzone {deadzone} outside [0, 1)")
        self.deadzone = deadzone
        self._ranges = {code: (info.min, info.max, info.flat) for code, info in absinfo.items() if code in AXIS_TWIST}
        self._twist = np.zeros(6)
        self._held: set[int] = set()
        self._events: list[str] = []

    def feed(self, event) -> None:
        if event.type == EV_ABS and event.code in self._ranges:
            index, sign = AXIS_TWIST[event.code]
            self._twist[index] = sign * self.normalise(event.code, event.value)
        elif event.type == EV_KEY:
            if event.value == 1:  # press (0 release, 2 auto-repeat)
                self._held.add(event.code)
                if event.code in BUTTON_EVENTS:
                    self._events.append(BUTTON_EVENTS[event.code])
            elif event.value == 0:
                self._held.discard(event.code)

    def normalise(self, code: int, value: int) -> float:
        """Raw axis value -> -1..1 around the centre of its range; inside the flat zone or deadzone -> 0."""
        low, high, flat = self._ranges[code]
        centre, half = 0.5 * (low + high), 0.5 * (high - low)
        offset = value - centre
        if half <= 0 or abs(offset) <= flat:
            return 0.0
        scaled = float(np.clip(offset / half, -1.0, 1.0))
        if abs(scaled) <= self.deadzone:
            return 0.0
        return float(np.sign(scaled) * (abs(scaled) - self.deadzone) / (1.0 - self.deadzone))  # no jump at the edge

    def sample(self) -> DeviceSample:
        """The current state and the presses since the last call."""
        events, self._events = tuple(self._events), []
        return DeviceSample(self._twist.copy(), any(b in self._held for b in DEADMAN_BUTTONS), events)


def is_gamepad(capabilities: dict[int, list]) -> bool:
    """`capabilities` as evdev's InputDevice.capabilities() returns them (EV_ABS entries may be (code, info))."""
    keys = set(capabilities.get(EV_KEY, []))
    axes = {entry[0] if isinstance(entry, tuple) else entry for entry in capabilities.get(EV_ABS, [])}
    return all(k in keys for k in REQUIRED_KEYS) and all(a in axes for a in REQUIRED_ABS)


@register("gamepad")
class GamepadDevice(OperatorDevice):
    """The first gamepad under /dev/input (or the one at `path`), read without blocking."""

    def __init__(self, path: str = "", deadzone: float = 0.1):
        try:
            import evdev
        except ImportError:
            raise DeviceError("gamepad: the evdev package is not installed (pip install 'deploy[teleop]')") from None
        self._device = self._open(evdev, path)
        self.name = f"gamepad '{self._device.name}' at {self._device.path}"
        absinfo = {code: info for code, info in self._device.capabilities(absinfo=True).get(EV_ABS, [])}
        self._decoder = GamepadDecoder(absinfo, deadzone)

    @staticmethod
    def _open(evdev, path: str):
        paths = [path] if path else sorted(evdev.list_devices())
        for candidate in paths:
            try:
                device = evdev.InputDevice(candidate)
            except OSError as error:
                if path:
                    raise DeviceError(f"gamepad: cannot open '{path}': {error.strerror}") from None
                continue
            if is_gamepad(device.capabilities()):
                return device
            device.close()
            if path:
                raise DeviceError(f"gamepad: '{path}' ({device.name}) is not a gamepad (looked for {LOOKED_FOR})")
        raise DeviceError(f"no gamepad found (looked for {LOOKED_FOR}; {len(paths)} input device(s) readable)")

    def read(self, now_s: float) -> DeviceSample:
        try:
            while (event := self._device.read_one()) is not None:
                self._decoder.feed(event)
        except OSError as error:
            raise DeviceError(f"{self.name} lost: {error.strerror}") from None
        return self._decoder.sample()

    def close(self) -> None:
        self._device.close()
