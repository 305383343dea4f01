"""OpenCV camera backend: a V4L2/UVC device, or a video file played as a camera at its own rate."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable


from deploy.errors import ConfigError
from deploy.sensing.cameras import CameraError, Intrinsics, ThreadedCamera, _EndOfStream, register


@register("opencv")
class OpenCVCamera(ThreadedCamera):
    """A V4L2/UVC device through OpenCV (`device` = index "0" or "/dev/video0"), or a video file (`path`)
    played as a camera at its own frame rate (or `fps` when given; `real_time` false: every frame, as fast as
    read), optionally looping, optionally held back until `play()` (`wait_for_play`).

    Stamps: a file frame is stamped with `clock()` when it is "captured" (released on its schedule). A device
    frame is stamped `clock()` at grab minus the age of the V4L2 buffer timestamp (CLOCK_MONOTONIC, read via
    CAP_PROP_POS_MSEC) when that age is plausible (0..0.5 s); otherwise the grab time itself.
    `intrinsics` = (fx, fy, cx, cy) from your calibration, or all zeros (uncalibrated)."""

    def __init__(self, camera_name: str = "", device: str | int = "", path: str = "", width: int = 0,
                 height: int = 0, fps: float = 0.0, fourcc: str = "", loop: bool = False,
                 intrinsics: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0),
                 clock: Callable[[], float] = time.time, max_failed_reads: int = 10, frame_timeout_s: float = 3.0,
                 real_time: bool = True, wait_for_play: bool = False):
        super().__init__(clock, max_failed_reads, frame_timeout_s, real_time, wait_for_play)
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
        self._check_recording_options(path)

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
            if self.real_time:
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
