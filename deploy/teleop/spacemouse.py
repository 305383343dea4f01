"""3Dconnexion SpaceMouse through pyspacemouse (HID via easyhid, which loads libhidapi-hidraw).

The puck is its own deadman: it springs back to centre when let go, so any deflection past the deadzone asks
for authority. Axes in pyspacemouse's ROS convention (x forward, y left, z up; roll, pitch, yaw), mapped
one-to-one to the base-frame twist. Buttons by index: 0 gripper toggle, 1 success, 2 failure, 3 re-record
(two-button models have the first two).
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

BUTTON_EVENTS = (GRIPPER, SUCCESS, FAILURE, RERECORD)
AXES = ("x", "y", "z", "roll", "pitch", "yaw")
MAX_PACKETS_PER_READ = 64  # HID reports drained per read; the puck sends a few hundred per second


def sample_from_state(state, previous_buttons: list[int], deadzone: float) -> DeviceSample:
    """A pyspacemouse SpaceMouseState -> DeviceSample; presses are buttons down now and up in `previous_buttons`."""
    raw = np.array([getattr(state, axis) for axis in AXES], dtype=float)  # (6,)
    twist = np.where(np.abs(raw) > deadzone, raw, 0.0)
    buttons = list(state.buttons)
    events = tuple(BUTTON_EVENTS[i] for i, down in enumerate(buttons[:len(BUTTON_EVENTS)])
                   if down and not (i < len(previous_buttons) and previous_buttons[i]))
    return DeviceSample(twist, bool(np.any(twist != 0.0)), events)


def supported_models() -> str:
    import pyspacemouse

    return ", ".join(f"{name} {vendor:04x}:{product:04x}" for name, vendor, product in pyspacemouse.get_supported_devices())


@register("spacemouse")
class SpaceMouseDevice(OperatorDevice):
    def __init__(self, deadzone: float = 0.05):
        if not 0.0 <= deadzone < 1.0:
            raise ConfigError(f"spacemouse deadzone {deadzone} outside [0, 1)")
        self.deadzone = deadzone
        try:
            import pyspacemouse
            from easyhid import HIDException
        except ImportError:
            raise DeviceError("spacemouse: the pyspacemouse package is not installed (pip install 'deploy[teleop]')") from None
        except OSError as error:  # easyhid dlopens hidapi at import
            raise DeviceError(f"spacemouse: the hidapi library is missing (apt install libhidapi-hidraw0): {error}") from None
        connected = pyspacemouse.get_connected_devices()
        if not connected:
            raise DeviceError(f"no SpaceMouse found (looked for 3Dconnexion HID devices: {supported_models()}; "
                              f"{len(pyspacemouse.get_all_hid_devices())} HID device(s) present)")
        try:
            self._mouse = pyspacemouse.open(device=connected[0], axis_convention=pyspacemouse.AxisConvention.ROS)
        except (RuntimeError, OSError) as error:
            raise DeviceError(f"spacemouse: cannot open {connected[0]}: {error} (check /dev/hidraw* permissions)") from None
        self.name = f"SpaceMouse {connected[0]}"
        self._buttons: list[int] = []
        self._hid_error = HIDException

    def read(self, now_s: float) -> DeviceSample:
        try:
            return self.drain(self._mouse)
        except self._hid_error as error:
            raise DeviceError(f"{self.name} lost: {error}") from None

    def drain(self, mouse) -> DeviceSample:
        """Read every pending HID report (one per `mouse.read()`; its timestamp moves only when one arrived)."""
        state = mouse.read()
        for _ in range(MAX_PACKETS_PER_READ):
            stamp = state.t
            state = mouse.read()
            if state.t == stamp:
                break
        sample = sample_from_state(state, self._buttons, self.deadzone)
        self._buttons = list(state.buttons)
        return sample

    def close(self) -> None:
        self._mouse.close()
