"""Camera backends behind one interface, chosen by name (the camera node's `kind` parameter)."""
from __future__ import annotations

import abc
import dataclasses
from typing import Callable

import numpy as np

from deploy.errors import ConfigError, DeployError, RobotConnectionError


class CameraError(DeployError):
    """The device is absent, lost, or does not have what was asked for; the message names it."""


@dataclasses.dataclass(frozen=True)
class Intrinsics:
    width: int
    height: int
    fx: float
    fy: float
    cx: float
    cy: float


@dataclasses.dataclass(frozen=True)
class Frame:
    stamp_s: float  # capture time on the ROS clock [s]
    image: np.ndarray  # (H, W, 3) uint8 RGB
    seq: int


class Camera(abc.ABC):
    intrinsics: Intrinsics

    @abc.abstractmethod
    def open(self) -> None:
        """Connect; raises CameraError naming what was looked for when it is not there."""

    @abc.abstractmethod
    def read(self) -> Frame | None:
        """The newest frame if it is new since the last call, else None (never blocks for long)."""

    def close(self) -> None:
        """Release the device. Idempotent."""


_REGISTRY: dict[str, Callable[..., Camera]] = {}


def register(kind: str):
    def decorate(factory):
        _REGISTRY[kind] = factory
        return factory
    return decorate


def make_camera(kind: str, **params) -> Camera:
    if kind not in _REGISTRY:
        raise ConfigError(f"unknown camera kind '{kind}' (choose {'|'.join(sorted(_REGISTRY))})")
    try:
        return _REGISTRY[kind](**params)
    except TypeError as error:
        raise ConfigError(f"camera kind '{kind}': {error}") from None


@register("sim")
class SimCamera(Camera):
    """A camera of the embedded MuJoCo robot, read from the sim's link (frames are stamped by the sim)."""

    def __init__(self, camera_name: str, link_name: str | None = None):
        self.camera_name = camera_name
        self.link_name = link_name
        self._link = None
        self._last_seq = 0

    def open(self) -> None:
        from deploy.sim.link import LinkClient
        from deploy.sim.scene import camera_intrinsics

        try:
            self._link = LinkClient(self.link_name)
        except RobotConnectionError as error:
            raise CameraError(f"sim camera '{self.camera_name}': {error}") from None
        if self.camera_name not in self._link.camera_names:
            names = ", ".join(self._link.camera_names)
            self.close()
            raise CameraError(f"the sim has no camera '{self.camera_name}' (it has: {names})")
        self.intrinsics = camera_intrinsics(self.camera_name, self._link.width, self._link.height)

    def read(self) -> Frame | None:
        latest = self._link.read_frame(self.camera_name)
        if latest is None or latest[0] == self._last_seq:
            return None
        self._last_seq = latest[0]
        return Frame(stamp_s=latest[1], image=latest[2], seq=latest[0])

    def close(self) -> None:
        if self._link is not None:
            self._link.close()
            self._link = None

