"""RealSense camera backend (pyrealsense2 colour stream), with the device clock mapped to the ROS clock."""
from __future__ import annotations

import time
from typing import Callable

import numpy as np

from deploy.errors import ConfigError
from deploy.sensing.cameras import CameraError, Intrinsics, ThreadedCamera, register


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
