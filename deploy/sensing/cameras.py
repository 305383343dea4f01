"""Camera backends behind one interface, chosen by name (the camera node's `kind` parameter), and the
ROS-free image preprocessing (crop + resize to the policy's input) with its effect on the intrinsics.

Backends: "sim" (the embedded MuJoCo cameras), "opencv" (a V4L2/UVC device, or a video file played as a
camera at its own rate), "realsense" (pyrealsense2 colour stream). Real backends capture in a background
thread into a one-slot latest buffer, so `read()` never blocks; a lost device surfaces as CameraError from
`read()` naming it. Frames are stamped with the `clock` passed in (the node passes its ROS clock).
"""
from __future__ import annotations

import abc
import dataclasses
import threading
import time
from pathlib import Path
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

    @abc.abstractmethod
    def open(self) -> None:
        """Connect; raises CameraError naming what was looked for when it is not there."""

    @abc.abstractmethod
    def read(self) -> Frame | None:
        """The newest frame if it is new since the last call, else None (never blocks for long)."""

    def close(self) -> None:
        """Release the device. Idempotent."""

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



# --- preprocessing: crop, then resize to the policy's input --------------------------------------------------



def parse_crop(text: str) -> str | tuple[int, int, int, int] | None:
    """The camera node's `crop` parameter: "" / "none" | "center" | "x,y,w,h" (pixels of the device image)."""
    text = text.strip().lower()
    if text in ("", "none"):
        return None
    if text == "center":
        return "center"
    try:
        box = tuple(int(v) for v in text.split(","))
    except ValueError:
        box = ()
    if len(box) != 4 or box[0] < 0 or box[1] < 0 or box[2] <= 0 or box[3] <= 0:
        raise ConfigError(f"crop '{text}' is not 'none', 'center' or 'x,y,w,h' with x,y >= 0 and w,h > 0")
    return box


def crop_box(width: int, height: int, crop, output_size: tuple[int, int] | None) -> tuple[int, int, int, int]:
    """(x, y, w, h) of the crop in a width x height image; "center" = the largest centred box with the
    aspect ratio of `output_size` (width, height)."""
    if crop is None:
        return 0, 0, width, height
    if crop == "center":
        if not output_size:
            raise ConfigError("crop 'center' needs an output size (output_width/output_height) for its aspect ratio")
        out_w, out_h = output_size
        w = min(width, round(height * out_w / out_h))
        h = min(height, round(width * out_h / out_w))
        return (width - w) // 2, (height - h) // 2, w, h
    x, y, w, h = crop
    if x + w > width or y + h > height:
        raise ConfigError(f"crop box {tuple(crop)} (x, y, w, h) exceeds the {width}x{height} image")
    return x, y, w, h


def preprocess(image: np.ndarray, crop=None, output_size: tuple[int, int] | None = None) -> np.ndarray:
    """(H, W, C) uint8 -> crop (see `crop_box`) -> resize to output_size (width, height) with INTER_AREA."""
    import cv2

    x, y, w, h = crop_box(image.shape[1], image.shape[0], crop, output_size)
    out = image[y:y + h, x:x + w]
    if output_size and (w, h) != tuple(output_size):
        out = cv2.resize(out, tuple(output_size), interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(out)


def preprocess_intrinsics(intr: Intrinsics, crop=None, output_size: tuple[int, int] | None = None) -> Intrinsics:
    """The pinhole model of `preprocess`'s output. Pixel centres are at integer coordinates, so a resize by s
    maps u -> (u + 0.5)·s − 0.5. An uncalibrated camera (fx = fy = 0) stays all zeros (CameraInfo convention)."""
    x, y, w, h = crop_box(intr.width, intr.height, crop, output_size)
    out_w, out_h = output_size if output_size else (w, h)
    if intr.fx == 0.0 and intr.fy == 0.0:
        return Intrinsics(out_w, out_h, 0.0, 0.0, 0.0, 0.0)
    sx, sy = out_w / w, out_h / h
    return Intrinsics(out_w, out_h, intr.fx * sx, intr.fy * sy,
                      (intr.cx - x + 0.5) * sx - 0.5, (intr.cy - y + 0.5) * sy - 0.5)


# --- real devices: a capture thread feeding a one-slot latest buffer -----------------------------------------
class _EndOfStream(Exception):
    """A video file played to its end without `loop`."""


class ThreadedCamera(Camera):
    """Base of the real backends. Subclasses open the device in `open()` then call `_start()`, and implement
    `_capture_one()` -> (image RGB, stamp_s) | None (a failed read) | raise _EndOfStream.

    `read()` returns the newest frame not yet returned (older ones are dropped: the policy wants the latest),
    and raises CameraError naming the device after `max_failed_reads` failed reads in a row, a driver error,
    or no frame for `frame_timeout_s` (0 = no timeout)."""

    def __init__(self, clock: Callable[[], float], max_failed_reads: int, frame_timeout_s: float):
        if max_failed_reads < 1:
            raise ConfigError(f"max_failed_reads {max_failed_reads} must be >= 1")
        self.clock = clock
        self.max_failed_reads = max_failed_reads
        self.frame_timeout_s = frame_timeout_s
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self.frames_captured = 0
        self.ended = False  # a video file reached its end (no loop)

    @abc.abstractmethod
    def _capture_one(self):
        """-> (image (H, W, 3) uint8 RGB, stamp_s) | None; may block up to about a frame period."""

    @abc.abstractmethod
    def _release(self) -> None:
        """Release the device handle (called after the capture thread stopped)."""

    def _start(self) -> None:
        self._stop.clear()
        self._latest: Frame | None = None
        self._error: str | None = None
        self._seq = 0
        self.ended = False
        self._last_frame_mono = time.monotonic()
        self._thread = threading.Thread(target=self._run, name=f"capture {self.describe()}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        failures = 0
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
                self._seq += 1
                self._latest = Frame(stamp_s=stamp_s, image=image, seq=self._seq)
                self._last_frame_mono = time.monotonic()
                self.frames_captured += 1

    def read(self) -> Frame | None:
        if self._thread is None:
            raise CameraError(f"{self.describe()} is not open")
        with self._lock:
            frame, self._latest = self._latest, None
            silent_s = time.monotonic() - self._last_frame_mono
        if self._error is not None:
            raise CameraError(self._error)
        if frame is None and self.frame_timeout_s > 0 and not self.ended and silent_s > self.frame_timeout_s:
            raise CameraError(f"{self.describe()}: no frame for {silent_s:.1f} s")
        return frame

    def close(self) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join(timeout=2.0)
            self._thread = None
        self._release()


@register("opencv")
class OpenCVCamera(ThreadedCamera):
    """A V4L2/UVC device through OpenCV (`device` = index "0" or "/dev/video0"), or a video file (`path`)
    played as a camera at its own frame rate (or `fps` when given), optionally looping.

    Stamps: a file frame is stamped with `clock()` when it is "captured" (released on its schedule). A device
    frame is stamped `clock()` at grab minus the age of the V4L2 buffer timestamp (CLOCK_MONOTONIC, read via
    CAP_PROP_POS_MSEC) when that age is plausible (0..0.5 s); otherwise the grab time itself.
    `intrinsics` = (fx, fy, cx, cy) from your calibration, or all zeros (uncalibrated)."""

    def __init__(self, camera_name: str = "", device: str | int = "", path: str = "", width: int = 0,
                 height: int = 0, fps: float = 0.0, fourcc: str = "", loop: bool = False,
                 intrinsics: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0),
                 clock: Callable[[], float] = time.time, max_failed_reads: int = 10, frame_timeout_s: float = 3.0):
        super().__init__(clock, max_failed_reads, frame_timeout_s)
        device = str(device).strip()
        if bool(device) == bool(path):
            raise ConfigError(f"camera '{camera_name}': set exactly one of device (index or /dev/video*) and "
                              f"path (video file); got device='{device}' path='{path}'")
        if path and (width or height or fourcc):
            raise ConfigError(f"camera '{camera_name}': width/height/fourcc apply to devices, not to video file "
                              f"{path} (resize with output_width/output_height)")
        if fourcc and len(fourcc) != 4:
            raise ConfigError(f"fourcc '{fourcc}' must be 4 characters (e.g. MJPG, YUYV)")
        if len(intrinsics) != 4:
            raise ConfigError(f"intrinsics {list(intrinsics)} must be [fx, fy, cx, cy]")
        self.camera_name = camera_name
        self.device = int(device) if device.isdigit() else device
        self.path = path
        self.width, self.height, self.fps, self.fourcc, self.loop = width, height, fps, fourcc, loop
        self._calibration = tuple(float(v) for v in intrinsics)
        self._cap = None

    def describe(self) -> str:
        return f"video file {self.path}" if self.path else f"camera device {self.device}"

    def _open_capture(self):
        import cv2

        if self.path:
            if not Path(self.path).is_file():
                raise CameraError(f"video file {self.path} not found")
            cap = cv2.VideoCapture(self.path)
        else:
            cap = cv2.VideoCapture(self.device, cv2.CAP_V4L2 if isinstance(self.device, int) else cv2.CAP_ANY)
        if not cap.isOpened():
            cap.release()
            raise CameraError(f"cannot open {self.describe()}")
        return cap

    def open(self) -> None:
        import cv2

        self.close()
        cap = self._open_capture()
        if not self.path:
            cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)  # the newest frame, not a queue of old ones
            if self.fourcc:
                cap.set(cv2.CAP_PROP_FOURCC, cv2.VideoWriter_fourcc(*self.fourcc))
            if self.width and self.height:
                cap.set(cv2.CAP_PROP_FRAME_WIDTH, self.width)
                cap.set(cv2.CAP_PROP_FRAME_HEIGHT, self.height)
            if self.fps:
                cap.set(cv2.CAP_PROP_FPS, self.fps)
        width, height = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        if self.width and self.height and (width, height) != (self.width, self.height):
            cap.release()
            raise CameraError(f"{self.describe()} gives {width}x{height}, not the requested {self.width}x{self.height}")
        self._period_s = 0.0
        if self.path:
            fps = self.fps or cap.get(cv2.CAP_PROP_FPS)
            if not fps > 0:
                cap.release()
                raise CameraError(f"video file {self.path} does not state its frame rate: set fps")
            self._period_s = 1.0 / fps
        fx, fy, cx, cy = self._calibration
        self.intrinsics = Intrinsics(width, height, fx, fy, cx, cy)
        self._cap = cap
        self._due_mono: float | None = None
        self._frames_this_pass = 0
        self._start()

    def _capture_one(self):
        import cv2

        ok, bgr = self._cap.read()
        if not ok and self.path:
            if not (self.loop and self._frames_this_pass > 0):
                raise _EndOfStream
            self._cap.release()  # reopening rewinds every container/codec; seeking does not
            self._cap = self._open_capture()
            self._frames_this_pass = 0
            ok, bgr = self._cap.read()
            if not ok:
                raise _EndOfStream
        if not ok:
            return None
        self._frames_this_pass += 1
        if self.path:
            self._wait_until_due()
            stamp_s = self.clock()
        else:
            stamp_s = self.clock()
            buffer_age_s = time.monotonic() - self._cap.get(cv2.CAP_PROP_POS_MSEC) / 1000.0
            if 0.0 <= buffer_age_s < 0.5:
                stamp_s -= buffer_age_s
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), stamp_s

    def _wait_until_due(self) -> None:
        """Release file frames one period apart; after a stall (slow decode) restart the schedule, no burst."""
        now = time.monotonic()
        if self._due_mono is None or now > self._due_mono + self._period_s:
            self._due_mono = now
        self._stop.wait(max(0.0, self._due_mono - now))
        self._due_mono += self._period_s

    def _release(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None


class DeviceClockMapper:
    """Maps a device frame timestamp to a stamp on `clock` (the ROS clock), via the host wall clock.

    - If the device stamps on the host clock (RealSense `global_time`: device clock continuously aligned to
      the host; `system_time`: host time at arrival), capture_host = the timestamp itself.
    - Otherwise (`hardware_clock`: the device's own counter), capture_host = device_s + offset, with
      offset = min over frames of (host arrival − device_s): the least-delayed frame fixes it, so stamps lag
      exposure by the smallest transport delay only (constant); clock drift is not tracked within a session.
    The stamp is then clock() − (host_now − capture_host), which also works under sim time."""

    def __init__(self, clock: Callable[[], float], host_clock: Callable[[], float] = time.time):
        self.clock = clock
        self.host_clock = host_clock
        self.offset_s: float | None = None

    def stamp(self, device_s: float, on_host_clock: bool) -> float:
        now_host, now = self.host_clock(), self.clock()
        if on_host_clock:
            capture_host = device_s
        else:
            offset = now_host - device_s
            self.offset_s = offset if self.offset_s is None else min(self.offset_s, offset)
            capture_host = device_s + self.offset_s
        return now - max(0.0, now_host - capture_host)


@register("realsense")
class RealSenseCamera(ThreadedCamera):
    """Intel RealSense colour stream (rgb8 straight from librealsense), chosen by serial ("" = the first one).
    Width/height/fps 0 = 640x480 at 30 Hz. Stamps: see DeviceClockMapper."""

    def __init__(self, camera_name: str = "", serial: str = "", width: int = 0, height: int = 0, fps: float = 0.0,
                 auto_exposure: bool = True, exposure_us: float = 0.0, clock: Callable[[], float] = time.time,
                 max_failed_reads: int = 3, frame_timeout_s: float = 3.0):
        super().__init__(clock, max_failed_reads, frame_timeout_s)
        if not auto_exposure and not exposure_us > 0:
            raise ConfigError("auto_exposure false needs exposure_us > 0")
        self.camera_name = camera_name
        self.serial = str(serial)
        self.width, self.height, self.fps = width or 640, height or 480, int(fps or 30)
        self.auto_exposure, self.exposure_us = auto_exposure, exposure_us
        self._pipeline = None
        self._opened_serial = ""

    def describe(self) -> str:
        return f"RealSense {self._opened_serial or self.serial or '(any serial)'}"

    def open(self) -> None:
        self.close()
        try:
            import pyrealsense2 as rs
        except ImportError:
            raise CameraError("camera kind 'realsense' needs pyrealsense2 (pip install pyrealsense2)") from None
        self._rs = rs
        context = rs.context()
        serials = [d.get_info(rs.camera_info.serial_number) for d in context.query_devices()]
        wanted = self.serial or (serials[0] if serials else "")
        if wanted not in serials:
            others = f"; connected: {', '.join(serials)}" if serials else ""
            raise CameraError(f"no RealSense device found (looked for serial {self.serial or 'any'}{others})")
        config = rs.config()
        config.enable_device(wanted)
        config.enable_stream(rs.stream.color, self.width, self.height, rs.format.rgb8, self.fps)
        pipeline = rs.pipeline(context)
        try:
            profile = pipeline.start(config)
            sensor = profile.get_device().first_color_sensor()
            if sensor.supports(rs.option.enable_auto_exposure):
                sensor.set_option(rs.option.enable_auto_exposure, 1.0 if self.auto_exposure else 0.0)
            if not self.auto_exposure:
                sensor.set_option(rs.option.exposure, float(self.exposure_us))
            intr = profile.get_stream(rs.stream.color).as_video_stream_profile().get_intrinsics()
        except RuntimeError as error:
            raise CameraError(f"RealSense {wanted}: cannot stream colour {self.width}x{self.height} at "
                              f"{self.fps} Hz ({error})") from None
        self.intrinsics = Intrinsics(intr.width, intr.height, intr.fx, intr.fy, intr.ppx, intr.ppy)
        self._pipeline, self._opened_serial = pipeline, wanted
        self._clock_mapper = DeviceClockMapper(self.clock)
        self._start()

    def _capture_one(self):
        ok, frames = self._pipeline.try_wait_for_frames(timeout_ms=1000)
        color = frames.get_color_frame() if ok else None
        if not color:
            return None
        domain = color.get_frame_timestamp_domain()
        on_host = domain in (self._rs.timestamp_domain.global_time, self._rs.timestamp_domain.system_time)
        stamp_s = self._clock_mapper.stamp(color.get_timestamp() / 1000.0, on_host)
        return np.asanyarray(color.get_data()).copy(), stamp_s

    def _release(self) -> None:
        if self._pipeline is not None:
            try:
                self._pipeline.stop()
            except RuntimeError:
                pass  # already stopped / device gone
            self._pipeline = None
