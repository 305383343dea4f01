"""Operator input as a topic contract: sensor_msgs/Joy (buttons, axes) + geometry_msgs/TwistStamped (6-DoF).

Any driver that publishes these drives the intervention node: ours (`keyboard_operator`, `gamepad_operator`,
`spacemouse_operator`, nodes/operator_node.py) or a distro's (`joy_node`, `spacenav`). A small YAML mapping says
which axis is which, their scale, and which buttons are the deadman, gripper, success, failure and re-record:

    joy_topic: /joy                 # sensor_msgs/Joy; "" = none
    twist_topic: ""                 # geometry_msgs/TwistStamped; "" = none
    timeout_s: 0.5                  # a stream silent this long counts as let go
    deadzone: 0.1                   # |command| at or below this reads as 0 (after scaling)
    axes:                           # command axis (x y z roll pitch yaw, base frame) -> source
      x: joy.axes[1]                # or {from: joy.axes[1], scale: -1.0}; or twist.linear.x ... twist.angular.z
    deadman: joy.buttons[4]         # or "deflection": any commanded axis past the deadzone (a SpaceMouse puck)
    buttons: {gripper: joy.buttons[0], success: joy.buttons[7]}   # presses = rising edges

Commands are normalised: scale * source, clipped to -1..1, is the fraction of teleop.max_*_speed. A silent or
stale stream (nothing received for timeout_s, by the receiver's clock) reads as released: no deadman, no
motion; the authority rules (deploy.teleop.authority) then hand back after their hold-over as for a let-go
deadman. `TopicDevice` is the `OperatorDevice` the intervention node feeds from its subscriptions.
ROS-free: messages arrive as plain lists.
"""
from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import numpy as np
import yaml

from deploy.errors import ConfigError
from deploy.teleop.devices import EVENTS, DeviceSample, OperatorDevice

AXES = ("x", "y", "z", "roll", "pitch", "yaw")  # the command's components, in DeviceSample.twist order
TWIST_FIELDS = tuple(f"{part}.{c}" for part in ("linear", "angular") for c in "xyz")  # TwistStamped order
DEFLECTION = "deflection"
_JOY = re.compile(r"^joy\.(axes|buttons)\[(\d+)\]$")
_TWIST = re.compile(r"^twist\.((?:linear|angular)\.[xyz])$")
KEYS = ("joy_topic", "twist_topic", "timeout_s", "deadzone", "axes", "deadman", "buttons")


@dataclasses.dataclass(frozen=True)
class AxisSource:
    stream: str  # "joy" | "twist"
    index: int  # Joy.axes index, or TWIST_FIELDS index
    scale: float = 1.0


@dataclasses.dataclass(frozen=True)
class InputMapping:
    joy_topic: str
    twist_topic: str
    timeout_s: float
    deadzone: float
    axes: dict[int, AxisSource]  # command index (AXES) -> source
    deadman: int | None  # Joy button index; None = deflection
    buttons: dict[str, int]  # event (devices.EVENTS) -> Joy button index


def load_mapping(path: str | Path) -> InputMapping:
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as error:
        raise ConfigError(f"operator mapping {path}: {error.strerror}") from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise ConfigError(f"operator mapping {path}{line}: invalid YAML: {problem}") from None
    return mapping_from_dict(data, str(path))


def mapping_from_dict(data, where: str = "operator mapping") -> InputMapping:
    """Validate a parsed mapping; every error is one line naming the bad key."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping with keys {', '.join(KEYS)}")
    unknown = sorted(set(data) - set(KEYS))
    if unknown:
        raise ConfigError(f"{where}: unknown key '{unknown[0]}' (known: {', '.join(KEYS)})")
    joy_topic, twist_topic = (_topic(data, key, where) for key in ("joy_topic", "twist_topic"))
    if not joy_topic and not twist_topic:
        raise ConfigError(f"{where}: joy_topic and twist_topic are both empty: nothing to listen to")
    timeout_s = _number(data, "timeout_s", 0.5, (0.01, 10.0), where)
    deadzone = _number(data, "deadzone", 0.0, (0.0, 0.99), where)

    axes_data = data.get("axes") or {}
    if not isinstance(axes_data, dict):
        raise ConfigError(f"{where}: axes must map {'/'.join(AXES)} to sources")
    axes = {}
    for name, spec in axes_data.items():
        if name not in AXES:
            raise ConfigError(f"{where}: axes.{name}: unknown axis (choose {'|'.join(AXES)})")
        axes[AXES.index(name)] = _axis(spec, f"{where}: axes.{name}")
    for source in axes.values():
        stream_topic = joy_topic if source.stream == "joy" else twist_topic
        if not stream_topic:
            raise ConfigError(f"{where}: axes read {source.stream} but {source.stream}_topic is empty")

    deadman_spec = data.get("deadman")
    if deadman_spec == DEFLECTION:
        deadman = None
        if not axes:
            raise ConfigError(f"{where}: deadman: deflection needs at least one entry under axes")
    else:
        deadman = _button(deadman_spec, f"{where}: deadman", joy_topic, extra=f" or '{DEFLECTION}'")

    buttons_data = data.get("buttons") or {}
    if not isinstance(buttons_data, dict):
        raise ConfigError(f"{where}: buttons must map {'/'.join(EVENTS)} to joy.buttons[N]")
    buttons = {}
    for event, spec in buttons_data.items():
        if event not in EVENTS:
            raise ConfigError(f"{where}: buttons.{event}: unknown event (choose {'|'.join(EVENTS)})")
        buttons[event] = _button(spec, f"{where}: buttons.{event}", joy_topic)
    return InputMapping(joy_topic, twist_topic, timeout_s, deadzone, axes, deadman, buttons)


def _topic(data, key, where) -> str:
    value = data.get(key, "")
    if value is None:
        return ""
    if not isinstance(value, str) or (value and not re.fullmatch(r"/?[A-Za-z_~][A-Za-z0-9_/]*", value)):
        raise ConfigError(f"{where}: {key}: '{value}' is not a topic name")
    return value


def _number(data, key, default, bounds, where) -> float:
    value = data.get(key, default)
    low, high = bounds
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise ConfigError(f"{where}: {key}: {value!r} outside [{low}, {high}]")
    return float(value)


def _axis(spec, where) -> AxisSource:
    scale = 1.0
    if isinstance(spec, dict):
        extra = sorted(set(spec) - {"from", "scale"})
        if extra or "from" not in spec:
            raise ConfigError(f"{where}: expected 'from' and optional 'scale', got {', '.join(sorted(spec))}")
        scale = spec.get("scale", 1.0)
        if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not 0 < abs(scale) <= 1000:
            raise ConfigError(f"{where}.scale: {scale!r} must be a non-zero number within +-1000")
        spec = spec["from"]
    text = str(spec)
    if (match := _JOY.match(text)) and match.group(1) == "axes":
        return AxisSource("joy", int(match.group(2)), float(scale))
    if match := _TWIST.match(text):
        return AxisSource("twist", TWIST_FIELDS.index(match.group(1)), float(scale))
    raise ConfigError(f"{where}: '{text}' is not joy.axes[N] or twist.linear|angular.x|y|z")


def _button(spec, where, joy_topic, extra="") -> int:
    match = _JOY.match(str(spec))
    if not match or match.group(1) != "buttons":
        raise ConfigError(f"{where}: '{spec}' is not joy.buttons[N]{extra}")
    if not joy_topic:
        raise ConfigError(f"{where}: reads a Joy button but joy_topic is empty")
    return int(match.group(2))


class TopicDevice(OperatorDevice):
    """The operator as the intervention node hears it: fed with every Joy / Twist message, read every tick."""

    def __init__(self, mapping: InputMapping, name: str):
        self.mapping, self.name = mapping, name
        self._joy_axes: list[float] = []
        self._joy_buttons: list[int] = []
        self._twist = np.zeros(6)  # (6,) TWIST_FIELDS order, as received
        self._received_s = {"joy": -np.inf, "twist": -np.inf}
        self._events: list[str] = []

    def on_joy(self, now_s: float, axes: list[float], buttons: list[int]) -> None:
        """One Joy message, received at `now_s` (the receiver's clock): presses are buttons that went down."""
        previous = self._joy_buttons
        for event, index in self.mapping.buttons.items():
            down = index < len(buttons) and buttons[index]
            if down and not (index < len(previous) and previous[index]):
                self._events.append(event)
        self._joy_axes, self._joy_buttons = list(axes), list(buttons)
        self._received_s["joy"] = now_s

    def on_twist(self, now_s: float, linear_angular: list[float]) -> None:
        self._twist = np.asarray(linear_angular, dtype=float).reshape(6)
        self._received_s["twist"] = now_s

    def fresh(self, stream: str, now_s: float) -> bool:
        return now_s - self._received_s[stream] <= self.mapping.timeout_s

    def silent_topics(self, now_s: float) -> tuple[str, ...]:
        """The mapping's topics on which nothing arrived within timeout_s (for the node to say so)."""
        m = self.mapping
        return tuple(topic for stream, topic in (("joy", m.joy_topic), ("twist", m.twist_topic))
                     if topic and not self.fresh(stream, now_s))

    def read(self, now_s: float) -> DeviceSample:
        m = self.mapping
        command = np.zeros(6)
        for index, source in m.axes.items():
            if not self.fresh(source.stream, now_s):
                continue
            values = self._joy_axes if source.stream == "joy" else self._twist
            if source.index < len(values):
                command[index] = source.scale * float(values[source.index])
        command = np.clip(command, -1.0, 1.0)
        command[np.abs(command) <= m.deadzone] = 0.0
        if m.deadman is None:
            held = bool(np.any(command != 0.0))
        else:
            held = (self.fresh("joy", now_s) and m.deadman < len(self._joy_buttons)
                    and bool(self._joy_buttons[m.deadman]))
        events, self._events = tuple(self._events), []
        return DeviceSample(command, held, events)


# Our own operator nodes publish this layout (config/operator_deploy.yaml maps it back).
CONTRACT_BUTTONS = ("deadman", *EVENTS)  # Joy.buttons of our operator nodes, in this order


class ContractEncoder:
    """A device's samples -> (TwistStamped linear+angular, Joy buttons) messages in our nodes' layout. A press is
    a button down in one message and up in the next, so the receiver sees one rising edge per press."""

    def __init__(self):
        self._last = [0] * len(CONTRACT_BUTTONS)

    def encode(self, sample: DeviceSample) -> list[tuple[list[float], list[int]]]:
        twist = [float(v) for v in sample.twist]
        buttons = [int(sample.deadman_held)] + [int(event in sample.events) for event in EVENTS]
        out = []
        if any(now and before for now, before in zip(buttons[1:], self._last[1:])):  # pressed again: release first
            out.append((twist, [buttons[0]] + [0] * len(EVENTS)))
        out.append((twist, buttons))
        self._last = buttons
        return out
