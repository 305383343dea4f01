"""Camera backends behind one interface, chosen by name (the camera node's `kind` parameter).

Backends: "sim" (the embedded MuJoCo cameras), "opencv" (a V4L2/UVC device, or a video file played as a
camera), "realsense" (pyrealsense2 colour stream of a device, or of a recording played as a camera). Real
backends capture in a background thread into a one-slot latest buffer, so `read()` never blocks; a lost device
surfaces as CameraError from `read()` naming it. Frames are stamped with the `clock` passed in (the node passes its ROS clock).
"""
from __future__ import annotations

import abc
import dataclasses
import threading
import time
from typing import Callable

import numpy as np

from deploy.errors import ConfigError, DeployError, RobotConnectionError
from deploy.registry import Registry


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
    ended = False  # a recording reached its end (no loop); the end is not an error
    waiting_for_play = False  # a recording held back until play() (see ThreadedCamera)

    @abc.abstractmethod
    def open(self) -> None:
        """Connect; raises CameraError naming what was looked for when it is not there."""

    @abc.abstractmethod
    def read(self) -> Frame | None:
        """The newest frame if it is new since the last call, else None (never blocks for long)."""

    def close(self) -> None:
        """Release the device. Idempotent."""

    def play(self) -> None:
        """Let a recording held back by `wait_for_play` start; live cameras always play."""

    def describe(self) -> str:
        """The device in a few words, for diagnostics (`hardware_id`) and error messages."""
        return type(self).__name__


CAMERAS: Registry[Camera] = Registry("camera kind")
register = CAMERAS.register
make_camera = CAMERAS.make


camera_parameters = CAMERAS.parameters


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


# --- real devices: a capture thread feeding a one-slot latest buffer -----------------------------------------
class _EndOfStream(Exception):
    """A recording played to its end without `loop`."""


class ThreadedCamera(Camera):
    """Base of the real backends. Subclasses open the device in `open()` then call `_start()`, and implement
    `_capture_one()` -> (image RGB, stamp_s) | None (a failed read) | raise _EndOfStream.

    `read()` returns the newest frame not yet returned (older ones are dropped: the policy wants the latest),
    and raises CameraError naming the device after `max_failed_reads` failed reads in a row, a driver error,
    or no frame for `frame_timeout_s` (0 = no timeout).

    Recordings (a file played as this camera) have two more knobs:
    - `wait_for_play`: deliver nothing until `play()` (the node calls it when the first subscriber appears), so
      a subscriber that starts after the camera still sees the recording from its first frame;
    - `real_time` false: hand over every frame, the next one only after `read()` took the last (lossless,
      as fast as the reader reads), instead of at the recorded rate with the latest-wins buffer."""

    def __init__(self, clock: Callable[[], float], max_failed_reads: int, frame_timeout_s: float,
                 real_time: bool = True, wait_for_play: bool = False):
        if max_failed_reads < 1:
            raise ConfigError(f"max_failed_reads {max_failed_reads} must be >= 1")
        self.clock = clock
        self.max_failed_reads = max_failed_reads
        self.frame_timeout_s = frame_timeout_s
        self.real_time = real_time
        self.wait_for_play = wait_for_play
        self._lock = threading.Lock()
        self._taken = threading.Condition(self._lock)  # read() took the frame (lossless hand-over)
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._play = threading.Event()
        self.frames_captured = 0
        self.ended = False  # a recording reached its end (no loop)

    def _check_recording_options(self, path: str) -> None:
        """`real_time` false and `wait_for_play` only mean something for a recording."""
        if not path and (self.wait_for_play or not self.real_time):
            raise ConfigError(f"{self.describe()}: real_time / wait_for_subscriber apply to recordings (path), "
                              "not to devices")

    @abc.abstractmethod
    def _capture_one(self):
        """-> (image (H, W, 3) uint8 RGB, stamp_s) | None; may block up to about a frame period."""

    def _begin(self) -> None:
        """Start the device streaming, in the capture thread once playing is allowed (default: nothing to do)."""

    @abc.abstractmethod
    def _release(self) -> None:
        """Release the device handle (called after the capture thread stopped)."""

    @property
    def waiting_for_play(self) -> bool:
        """Open, but holding the recording back until `play()`."""
        return self._thread is not None and not self._play.is_set()

    def play(self) -> None:
        """Let a recording opened with `wait_for_play` start (idempotent)."""
        with self._lock:
            self._last_frame_mono = time.monotonic()  # the frame timeout counts from here
        self._play.set()

    def _start(self) -> None:
        self._stop.clear()
        self._latest: Frame | None = None
        self._error: str | None = None
        self._seq = 0
        self.ended = False
        self._last_frame_mono = time.monotonic()
        if self.wait_for_play:
            self._play.clear()
        else:
            self._play.set()
        self._thread = threading.Thread(target=self._run, name=f"capture {self.describe()}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._play.wait(0.05):
            if self._stop.is_set():
                return
        failures = 0
        try:
            self._begin()
        except Exception as error:  # noqa: BLE001 - the driver's own error; reported by read()
            self._error = f"{self.describe()}: cannot start ({type(error).__name__}: {error})"
            return
        while not self._stop.is_set():
            try:
                got = self._capture_one()
            except _EndOfStream:
                self.ended = True
                return
            except Exception as error:  # noqa: BLE001 - the driver's own error; reported by read()
                self._error = f"{self.describe()}: lost ({type(error).__name__}: {error})"
                return
            if got is None:
                failures += 1
                if failures >= self.max_failed_reads:
                    self._error = f"{self.describe()}: lost ({failures} reads failed in a row)"
                    return
                self._stop.wait(0.01)
                continue
            failures = 0
            image, stamp_s = got
            with self._lock:
                while not self.real_time and self._latest is not None and not self._stop.is_set():
                    self._taken.wait(0.05)
                self._seq += 1
                self._latest = Frame(stamp_s=stamp_s, image=image, seq=self._seq)
                self._last_frame_mono = time.monotonic()
                self.frames_captured += 1

    def read(self) -> Frame | None:
        if self._thread is None:
            raise CameraError(f"{self.describe()} is not open")
        with self._lock:
            frame, self._latest = self._latest, None
            self._taken.notify()
            silent_s = time.monotonic() - self._last_frame_mono
        if self._error is not None:
            raise CameraError(self._error)
        if (frame is None and self.frame_timeout_s > 0 and not self.ended and self._play.is_set()
                and silent_s > self.frame_timeout_s):
            raise CameraError(f"{self.describe()}: no frame for {silent_s:.1f} s")
        return frame

    def close(self) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join(timeout=2.0)
            self._thread = None
        self._release()


# The real backends register themselves on import (they build on ThreadedCamera above).
from deploy.sensing import opencv_camera, realsense_camera  # noqa: E402,F401
