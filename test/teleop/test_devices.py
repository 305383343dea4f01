"""Operator devices: keyboard through a real pseudo-terminal, gamepad decoding from evdev events, SpaceMouse
decoding through pyspacemouse's own HID parser, and one clear line when a device is absent."""
import fcntl
import os
import struct
import termios
import time

import evdev
import numpy as np
import pyspacemouse
import pytest
from evdev import ecodes

from deploy.errors import ConfigError
from deploy.teleop import gamepad
from deploy.teleop.devices import DeviceError, KeyboardDevice, make_device
from deploy.teleop.gamepad import GamepadDecoder, is_gamepad
from deploy.teleop.spacemouse import SpaceMouseDevice, sample_from_state


@pytest.fixture
def pty():
    master, slave = os.openpty()
    yield master, slave
    os.close(master)
    os.close(slave)


def type_keys(master, slave, keys: bytes):
    """Write to the terminal and wait until the keys are readable on its other side (ptys forward lazily)."""
    os.write(master, keys)
    deadline = time.monotonic() + 5.0
    while struct.unpack("i", fcntl.ioctl(slave, termios.FIONREAD, b"\0\0\0\0"))[0] < len(keys):
        assert time.monotonic() < deadline, "the pty never delivered the keys"
        time.sleep(0.005)


def test_keyboard_reads_keys_from_a_terminal_and_restores_it(pty):
    master, slave = pty
    before = termios.tcgetattr(slave)
    keyboard = KeyboardDevice(terminal=os.ttyname(slave), key_hold_s=0.25)
    assert not termios.tcgetattr(slave)[3] & termios.ICANON  # cbreak: keys arrive without Enter
    assert keyboard.read(0.0).deadman_held is False

    type_keys(master, slave, b" w")
    sample = keyboard.read(1.0)
    assert sample.deadman_held and sample.twist.tolist() == [1, 0, 0, 0, 0, 0]
    assert keyboard.read(1.2).twist[0] == 1.0  # within key_hold_s of the press
    assert keyboard.read(1.3).twist[0] == 0.0  # released (no auto-repeat came)

    type_keys(master, slave, b"dF")  # -y and -z (case-insensitive)
    assert keyboard.read(2.0).twist.tolist() == [0, -1, -1, 0, 0, 0]
    type_keys(master, slave, b"g1")
    assert keyboard.read(2.1).events == ("gripper", "success")
    type_keys(master, slave, b"0x ")
    sample = keyboard.read(2.2)
    assert sample.events == ("failure", "rerecord") and sample.deadman_held is False  # space toggles off
    assert keyboard.read(2.3).events == ()

    keyboard.close()
    assert termios.tcgetattr(slave) == before


def test_keyboard_on_standard_input_needs_a_terminal():
    read_end, write_end = os.pipe()
    saved = os.dup(0)
    os.dup2(read_end, 0)
    try:
        with pytest.raises(DeviceError, match="keyboard: standard input is not a terminal"):
            KeyboardDevice()
    finally:
        os.dup2(saved, 0)
        for fd in (saved, read_end, write_end):
            os.close(fd)
    with pytest.raises(DeviceError, match="cannot open terminal '/nonexistent/tty'"):
        KeyboardDevice(terminal="/nonexistent/tty")


def xbox_absinfo():
    stick = evdev.AbsInfo(value=0, min=-32768, max=32767, fuzz=16, flat=128, resolution=0)
    return {ecodes.ABS_X: stick, ecodes.ABS_Y: stick, ecodes.ABS_RX: stick, ecodes.ABS_RY: stick}


def event(kind, code, value, t=0.0):
    return evdev.InputEvent(int(t), int(1e6 * (t % 1)), kind, code, value)


def test_gamepad_decoder_maps_sticks_and_buttons():
    decoder = GamepadDecoder(xbox_absinfo(), deadzone=0.1)
    for e in (event(ecodes.EV_ABS, ecodes.ABS_Y, -32768), event(ecodes.EV_ABS, ecodes.ABS_X, 32767),
              event(ecodes.EV_ABS, ecodes.ABS_RY, 100), event(ecodes.EV_SYN, ecodes.SYN_REPORT, 0)):
        decoder.feed(e)
    sample = decoder.sample()
    # left stick fully up -> +x, fully right -> -y; the right stick inside its flat zone -> 0
    assert sample.twist == pytest.approx([1.0, -1.0, 0.0, 0.0, 0.0, 0.0], abs=1e-4)
    assert not sample.deadman_held and sample.events == ()

    half = int(0.55 * 32767)  # past the 10 % deadzone: rescaled so the output starts at 0 there
    decoder.feed(event(ecodes.EV_ABS, ecodes.ABS_RY, -half))
    decoder.feed(event(ecodes.EV_ABS, ecodes.ABS_RX, -half))
    assert decoder.sample().twist[[2, 5]] == pytest.approx([0.5, 0.5], abs=1e-3)

    decoder.feed(event(ecodes.EV_KEY, ecodes.BTN_TL, 1))  # LB: deadman
    decoder.feed(event(ecodes.EV_KEY, ecodes.BTN_SOUTH, 1))
    decoder.feed(event(ecodes.EV_KEY, ecodes.BTN_SOUTH, 0))
    decoder.feed(event(ecodes.EV_KEY, ecodes.BTN_START, 1))
    decoder.feed(event(ecodes.EV_KEY, ecodes.BTN_START, 2))  # auto-repeat is not a second press
    sample = decoder.sample()
    assert sample.deadman_held and sample.events == ("gripper", "success")
    decoder.feed(event(ecodes.EV_KEY, ecodes.BTN_EAST, 1))
    decoder.feed(event(ecodes.EV_KEY, ecodes.BTN_SELECT, 1))
    decoder.feed(event(ecodes.EV_KEY, ecodes.BTN_TL, 0))
    sample = decoder.sample()
    assert not sample.deadman_held and sample.events == ("failure", "rerecord")


def test_gamepad_codes_match_evdev_and_capabilities_are_recognised():
    assert (gamepad.BTN_SOUTH, gamepad.BTN_EAST, gamepad.BTN_TL, gamepad.BTN_TR, gamepad.BTN_SELECT,
            gamepad.BTN_START) == (ecodes.BTN_SOUTH, ecodes.BTN_EAST, ecodes.BTN_TL, ecodes.BTN_TR,
                                   ecodes.BTN_SELECT, ecodes.BTN_START)
    assert (gamepad.ABS_X, gamepad.ABS_Y, gamepad.ABS_RX, gamepad.ABS_RY, gamepad.EV_KEY, gamepad.EV_ABS) == (
        ecodes.ABS_X, ecodes.ABS_Y, ecodes.ABS_RX, ecodes.ABS_RY, ecodes.EV_KEY, ecodes.EV_ABS)
    pad = {ecodes.EV_KEY: [ecodes.BTN_SOUTH, ecodes.BTN_TL],
           ecodes.EV_ABS: [(code, info) for code, info in xbox_absinfo().items()]}
    keyboard = {ecodes.EV_KEY: [ecodes.KEY_A, ecodes.KEY_B]}
    mouse = {ecodes.EV_KEY: [ecodes.BTN_LEFT], ecodes.EV_REL: [ecodes.REL_X]}
    assert is_gamepad(pad) and not is_gamepad(keyboard) and not is_gamepad(mouse)


def test_absent_devices_fail_with_one_line_naming_what_was_looked_for():
    with pytest.raises(DeviceError, match=r"no gamepad found \(looked for /dev/input/event\* devices"):
        make_device("gamepad")
    with pytest.raises(DeviceError, match="cannot open '/dev/input/event99'"):
        make_device("gamepad", path="/dev/input/event99")
    with pytest.raises(DeviceError, match=r"no SpaceMouse found \(looked for 3Dconnexion HID devices: .*SpaceMouseCompact 256f:c635"):
        make_device("spacemouse")
    with pytest.raises(ConfigError, match="unknown teleop device 'joystick' "):
        make_device("joystick")
    with pytest.raises(ConfigError, match="teleop device 'keyboard': .*unexpected keyword argument 'speed'"):
        make_device("keyboard", speed=1.0)


class RecordedHid:
    """Plays HID reports back like easyhid's non-blocking Device.read (b'' when none is pending)."""

    def __init__(self, reports):
        self.reports = list(reports)

    def read(self, size):
        return bytearray(self.reports.pop(0)) if self.reports else bytearray()


def int16(value):
    return list(int(value).to_bytes(2, "little", signed=True))


def test_spacemouse_reports_are_drained_and_mapped():
    spec = pyspacemouse.get_device_specs()["SpaceMouseCompact"]
    spec = pyspacemouse.apply_axis_convention(spec, pyspacemouse.AxisConvention.ROS)
    mouse = pyspacemouse.SpaceMouseDevice(info=spec, device=RecordedHid([
        [1] + int16(0) + int16(0) + int16(0),  # translation channel
        [1] + int16(350) + int16(0) + int16(-175),  # full deflection on one axis, half on another
        [3, 0b01],  # button 0 down
    ]))
    device = object.__new__(SpaceMouseDevice)
    device.deadzone, device._buttons = 0.05, []
    sample = device.drain(mouse)
    state = mouse.read()
    expected = np.array([state.x, state.y, state.z, state.roll, state.pitch, state.yaw])
    assert np.abs(expected).max() == pytest.approx(1.0) and np.count_nonzero(expected) == 2
    assert sample.twist == pytest.approx(expected)
    assert sample.deadman_held and sample.events == ("gripper",)
    assert device.drain(mouse).events == ()  # still held: not a new press


def test_spacemouse_state_inside_the_deadzone_does_not_ask_for_authority():
    state = pyspacemouse.SpaceMouseState(x=0.03, y=-0.02, yaw=0.04, buttons=pyspacemouse.ButtonState([0, 1]))
    sample = sample_from_state(state, previous_buttons=[0, 0], deadzone=0.05)
    assert not sample.deadman_held and not sample.twist.any() and sample.events == ("success",)
    sample = sample_from_state(pyspacemouse.SpaceMouseState(z=-0.5), previous_buttons=[0, 1], deadzone=0.05)
    assert sample.deadman_held and sample.twist.tolist() == [0, 0, -0.5, 0, 0, 0]
