"""RealSense camera backend (pyrealsense2 colour stream of a device, with the device clock mapped to the ROS clock,
or of a recording played as a camera)."""
from __future__ import annotations

import queue
import time
from pathlib import Path
from typing import Callable

import numpy as np

from deploy.errors import ConfigError
from deploy.sensing.cameras import CameraError, Intrinsics, ThreadedCamera, _EndOfStream, register


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


# Colour formats a recording may hold -> (H, W, 3) RGB. A live device is asked for rgb8 directly.
def _yuyv_to_rgb(data: np.ndarray) -> np.ndarray:
    """pyrealsense2 hands yuyv over as (H, W) uint16: two bytes per pixel."""
    import cv2

    return cv2.cvtColor(data.view(np.uint8).reshape(*data.shape[:2], 2), cv2.COLOR_YUV2RGB_YUYV)


_TO_RGB = {"rgb8": lambda a: a, "bgr8": lambda a: a[..., ::-1], "rgba8": lambda a: a[..., :3],
           "bgra8": lambda a: a[..., 2::-1], "yuyv": _yuyv_to_rgb}


@register("realsense")
class RealSenseCamera(ThreadedCamera):
    """Intel RealSense colour stream: a device chosen by serial ("" = the first one), or a recording (`path`:
    a `.db3` / `.bag` file as realsense-viewer or pyrealsense2's recorder write it) played as this camera.

    Device: width/height/fps 0 = 640x480 at 30 Hz; rgb8 straight from librealsense; stamps: see
    DeviceClockMapper. Recording: it replaces the device, so the device settings (serial, width, height, fps,
    exposure; e.g. from the robot's camera YAML) are not used. Its colour stream as recorded (rgb8, bgr8, rgba8,
    bgra8 or yuyv), at the recorded pace (`real_time`) or every frame as fast as read, optionally looping and
    held back until `play()`; a frame is stamped `clock()` when it is played, like a video file (the recorded
    times are in the past).
    Playback uses the playback device's sensor with a frame callback: librealsense waits for the callback when
    not in real time, so no frame is dropped (the pipeline's one-frame queue drops some)."""

    def __init__(self, camera_name: str = "", serial: str = "", path: str = "", width: int = 0, height: int = 0,
                 fps: float = 0.0, loop: bool = False, auto_exposure: bool = True, exposure_us: float = 0.0,
                 clock: Callable[[], float] = time.time, max_failed_reads: int = 3, frame_timeout_s: float = 3.0,
                 real_time: bool = True, wait_for_play: bool = False):
        super().__init__(clock, max_failed_reads, frame_timeout_s, real_time, wait_for_play)
        self.camera_name = camera_name
        self.serial = str(serial)
        self.path = str(path)
        if loop and not self.path:
            raise ConfigError(f"camera '{camera_name}': loop applies to a recording (path), not to a device")
        if not auto_exposure and not exposure_us > 0:
            raise ConfigError("auto_exposure false needs exposure_us > 0")
        self.width, self.height, self.fps = width or 640, height or 480, int(fps or 30)
        self.auto_exposure, self.exposure_us, self.loop = auto_exposure, exposure_us, loop
        self._pipeline = None
        self._sensor = None
        self._opened_serial = ""
        self._check_recording_options(self.path)

    def describe(self) -> str:
        if self.path:
            return f"RealSense recording {self.path}"
        return f"RealSense {self._opened_serial or self.serial or '(any serial)'}"

    def open(self) -> None:
        self.close()
        try:
            import pyrealsense2 as rs
        except ImportError:
            raise CameraError("camera kind 'realsense' needs pyrealsense2 (pip install pyrealsense2)") from None
        self._rs = rs
        if self.path:
            self._open_recording()
        else:
            self._open_device()
        self._start()

    def _open_device(self) -> None:
        rs = self._rs
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

    def _open_recording(self) -> None:
        """Load the file and find its colour stream; streaming starts in `_begin()` (maybe after `play()`)."""
        rs = self._rs
        if not Path(self.path).is_file():
            raise CameraError(f"{self.describe()} not found")
        try:
            device = rs.context().load_device(self.path)
            playback = device.as_playback()
            playback.set_real_time(self.real_time)
            colour = [(sensor, profile) for sensor in device.query_sensors()
                      for profile in sensor.get_stream_profiles() if profile.stream_type() == rs.stream.color]
        except RuntimeError as error:
            reason = " ".join(str(error).split())
            raise CameraError(f"{self.describe()} cannot be played ({reason})") from None
        if not colour:
            raise CameraError(f"{self.describe()} has no colour stream")
        sensor, profile = colour[0]
        format_name = profile.format().name
        if format_name not in _TO_RGB:
            raise CameraError(f"{self.describe()}: colour format {format_name} is not supported "
                              f"({', '.join(_TO_RGB)})")
        video = profile.as_video_stream_profile()
        intr = video.get_intrinsics()
        self.intrinsics = Intrinsics(video.width(), video.height(), intr.fx, intr.fy, intr.ppx, intr.ppy)
        self._device, self._playback, self._sensor, self._profile = device, playback, sensor, profile
        self._to_rgb = _TO_RGB[format_name]
        self._handoff = queue.Queue(maxsize=1)

    def _begin(self) -> None:
        if self._sensor is not None:
            self._frames_this_pass = 0
            self._sensor.open(self._profile)
            self._sensor.start(self._on_frame)

    def _on_frame(self, frame) -> None:
        """librealsense's playback thread. Real time: latest wins. Otherwise block (so playback waits) until
        the capture thread took the previous frame. An error here is handed over too (librealsense would
        swallow it), for the capture thread to raise."""
        try:
            image = self._to_rgb(np.asanyarray(frame.get_data())).copy()  # copy: the frame returns to its pool
        except Exception as error:  # noqa: BLE001 - reported by read() as the recording lost
            image = error
        if self.real_time:
            try:
                self._handoff.get_nowait()
            except queue.Empty:
                pass
            self._handoff.put_nowait(image)
            return
        while not self._stop.is_set():
            try:
                self._handoff.put(image, timeout=0.05)
                return
            except queue.Full:
                continue

    def _capture_one(self):
        if self._sensor is not None:
            return self._capture_recorded()
        ok, frames = self._pipeline.try_wait_for_frames(timeout_ms=1000)
        color = frames.get_color_frame() if ok else None
        if not color:
            return None
        domain = color.get_frame_timestamp_domain()
        on_host = domain in (self._rs.timestamp_domain.global_time, self._rs.timestamp_domain.system_time)
        stamp_s = self._clock_mapper.stamp(color.get_timestamp() / 1000.0, on_host)
        return np.asanyarray(color.get_data()).copy(), stamp_s

    def _capture_recorded(self):
        """The next played frame; None after 1 s without one while playing (a failed read)."""
        deadline, stopped_seen = time.monotonic() + 1.0, False
        while not self._stop.is_set():
            try:
                image = self._handoff.get(timeout=0.1)
            except queue.Empty:
                if self._playback.current_status() != self._rs.playback_status.stopped:
                    if time.monotonic() > deadline:
                        return None
                    continue
                if not stopped_seen:  # the last frame may still be in its callback: look once more
                    stopped_seen = True
                    continue
                if not (self.loop and self._frames_this_pass > 0):
                    raise _EndOfStream from None
                self._stop_sensor()
                self._begin()  # stop + start plays the file again from its start
                deadline, stopped_seen = time.monotonic() + 1.0, False
                continue
            if isinstance(image, Exception):
                raise image
            self._frames_this_pass += 1
            return image, self.clock()
        return None

    def _stop_sensor(self) -> None:
        for step in (self._sensor.stop, self._sensor.close):
            try:
                step()
            except RuntimeError:
                pass  # not started / not open (closed before play), or already stopped

    def _release(self) -> None:
        if self._pipeline is not None:
            try:
                self._pipeline.stop()
            except RuntimeError:
                pass  # already stopped / device gone
            self._pipeline = None
        if self._sensor is not None:
            self._stop_sensor()
            self._sensor = self._playback = self._device = None
