"""Camera backends without ROS: the OpenCV backend on generated video files, the RealSense backend with no
device, the device-clock mapping, and crop + resize (image and intrinsics)."""
import time

import cv2
import numpy as np
import pytest

from deploy.errors import ConfigError
from deploy.sensing.cameras import CameraError, Intrinsics, make_camera
from deploy.sensing.preprocess import crop_box, parse_crop, preprocess, preprocess_intrinsics
from deploy.sensing.realsense_camera import DeviceClockMapper

FPS = 30.0


def write_video(path, n_frames: int, fps: float = FPS, size=(160, 120)) -> str:
    """MJPG .avi (no ffmpeg needed); frame i is uniformly grey level 15·(i mod 16), so its index can be read back."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, size)
    assert writer.isOpened()
    for i in range(n_frames):
        writer.write(np.full((size[1], size[0], 3), 15 * (i % 16), np.uint8))
    writer.release()
    return str(path)


def frame_index(frame) -> int:
    return int(round(frame.image.mean() / 15))


def read_frames(camera, count: int, timeout_s: float) -> list:
    frames, deadline = [], time.monotonic() + timeout_s
    while len(frames) < count and time.monotonic() < deadline:
        frame = camera.read()
        if frame is not None:
            frames.append(frame)
        time.sleep(0.002)
    return frames


def test_video_file_plays_at_its_rate_with_monotonic_stamps(tmp_path):
    camera = make_camera("opencv", camera_name="t", path=write_video(tmp_path / "v.avi", 15))
    camera.open()
    try:
        assert (camera.intrinsics.width, camera.intrinsics.height) == (160, 120)
        frames = read_frames(camera, 15, timeout_s=5.0)
        time.sleep(0.2)
        assert camera.read() is None and camera.ended  # no loop: the end is not an error
    finally:
        camera.close()
    assert [frame_index(f) for f in frames] == list(range(15))
    assert frames[0].image.shape == (120, 160, 3) and frames[0].image.dtype == np.uint8
    stamps = np.array([f.stamp_s for f in frames])
    assert np.all(np.diff(stamps) > 0)
    # Paced by the file's fps: each stamp within one frame period of the source's schedule.
    period = 1.0 / FPS
    assert np.max(np.abs(stamps - stamps[0] - np.arange(len(stamps)) * period)) < period


def test_frames_are_rgb(tmp_path):
    path = str(tmp_path / "red.avi")
    writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"MJPG"), FPS, (64, 48))
    for _ in range(3):
        writer.write(np.full((48, 64, 3), (0, 0, 255), np.uint8))  # BGR red
    writer.release()
    camera = make_camera("opencv", path=path)
    camera.open()
    try:
        frame = read_frames(camera, 1, timeout_s=3.0)[0]
    finally:
        camera.close()
    r, g, b = frame.image.reshape(-1, 3).mean(axis=0)
    assert r > 200 and g < 40 and b < 40


def test_video_file_loops(tmp_path):
    camera = make_camera("opencv", path=write_video(tmp_path / "v.avi", 10, fps=50.0), loop=True)
    camera.open()
    try:
        frames = read_frames(camera, 25, timeout_s=5.0)
    finally:
        camera.close()
    assert [frame_index(f) for f in frames] == [i % 10 for i in range(25)]
    assert [f.seq for f in frames] == list(range(1, 26))
    assert np.all(np.diff([f.stamp_s for f in frames]) > 0)


def test_stamps_come_from_the_given_clock(tmp_path):
    camera = make_camera("opencv", path=write_video(tmp_path / "v.avi", 3), clock=lambda: 1000.0 + time.monotonic())
    camera.open()
    try:
        frames = read_frames(camera, 3, timeout_s=3.0)
    finally:
        camera.close()
    assert all(abs(f.stamp_s - 1000.0 - time.monotonic()) < 1.0 for f in frames)


def test_missing_file_names_it(tmp_path):
    camera = make_camera("opencv", path=str(tmp_path / "nope.avi"))
    with pytest.raises(CameraError, match="nope.avi not found"):
        camera.open()
    camera.close()  # idempotent after a failed open


def test_unreadable_file_and_absent_device_are_named(tmp_path):
    junk = tmp_path / "junk.avi"
    junk.write_bytes(b"not a video")
    with pytest.raises(CameraError, match="junk.avi"):
        make_camera("opencv", path=str(junk)).open()
    with pytest.raises(CameraError, match="/dev/video99"):
        make_camera("opencv", device="/dev/video99").open()


def test_bad_opencv_settings_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="exactly one of device"):
        make_camera("opencv", device="0", path="x.avi")
    with pytest.raises(ConfigError, match="not to video file"):
        make_camera("opencv", path="x.avi", width=640, height=480)
    with pytest.raises(ConfigError, match="fourcc 'MJPEG'"):
        make_camera("opencv", device="0", fourcc="MJPEG")


class VanishingDevice:
    """A cv2.VideoCapture stand-in for a device that delivers two frames, then is unplugged."""

    def __init__(self):
        self.reads = 0

    def set(self, prop, value):
        return True

    def get(self, prop):
        return {cv2.CAP_PROP_FRAME_WIDTH: 64.0, cv2.CAP_PROP_FRAME_HEIGHT: 48.0}.get(prop, 0.0)

    def read(self):
        self.reads += 1
        time.sleep(0.005)
        return (True, np.zeros((48, 64, 3), np.uint8)) if self.reads <= 2 else (False, None)

    def release(self):
        pass


def test_vanished_device_raises_from_read_naming_it(monkeypatch):
    from deploy.sensing.opencv_camera import OpenCVCamera

    monkeypatch.setattr(OpenCVCamera, "_open_capture", lambda self: VanishingDevice())
    camera = make_camera("opencv", device="/dev/video7", max_failed_reads=3)
    camera.open()
    try:
        frames = []
        with pytest.raises(CameraError, match=r"camera device /dev/video7: lost \(3 reads failed in a row\)"):
            deadline = time.monotonic() + 3.0
            while time.monotonic() < deadline:
                frames.append(camera.read())
                time.sleep(0.01)
        assert sum(f is not None for f in frames) >= 1
    finally:
        camera.close()


def test_silent_device_times_out_naming_it(monkeypatch):
    from deploy.sensing.opencv_camera import OpenCVCamera

    class Silent(VanishingDevice):
        def read(self):
            time.sleep(0.05)
            return False, None

    monkeypatch.setattr(OpenCVCamera, "_open_capture", lambda self: Silent())
    camera = make_camera("opencv", device="1", max_failed_reads=10_000, frame_timeout_s=0.3)
    camera.open()
    try:
        time.sleep(0.4)
        with pytest.raises(CameraError, match=r"camera device 1: no frame for 0\.\d s"):
            camera.read()
    finally:
        camera.close()


def test_realsense_without_device_is_a_clear_error():
    camera = make_camera("realsense", serial="123456")  # pyrealsense2 is a pinned dependency: the real library
    with pytest.raises(CameraError, match=r"no RealSense device found \(looked for serial 123456"):
        camera.open()
    with pytest.raises(CameraError, match=r"no RealSense device found \(looked for serial any"):
        make_camera("realsense").open()
    camera.close()


def test_realsense_without_pyrealsense2(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "pyrealsense2", None)  # import fails as if not installed
    with pytest.raises(CameraError, match=r"camera kind 'realsense' needs pyrealsense2 \(pip install pyrealsense2\)"):
        make_camera("realsense").open()


def test_device_clock_mapping():
    host = {"t": 1_700_000_000.0}
    ros = {"t": 50.0}  # e.g. sim time: a different epoch than the host
    mapper = DeviceClockMapper(clock=lambda: ros["t"], host_clock=lambda: host["t"])
    # Host-clock domain: a frame exposed 30 ms before now is stamped 30 ms before the ROS now.
    assert mapper.stamp(host["t"] - 0.030, on_host_clock=True) == pytest.approx(50.0 - 0.030)
    # Device clock: offset fixed by the least-delayed frame (5 ms), not by a late first frame (40 ms).
    device_epoch = 123.0  # device counter reading when the host reads 1.7e9
    arrivals = [(0.000, 0.040), (0.033, 0.005), (0.066, 0.012)]  # (exposure since epoch, transport delay)
    stamps = []
    for exposure, delay in arrivals:
        host["t"] = 1_700_000_000.0 + exposure + delay
        ros["t"] = 50.0 + exposure + delay
        stamps.append(mapper.stamp(device_epoch + exposure, on_host_clock=False))
    assert stamps[2] == pytest.approx(50.066 + 0.005)  # late by the minimal delay only
    assert np.all(np.diff(stamps[1:]) > 0)


# --- preprocessing ---------------------------------------------------------------------------------------
def pattern(width=640, height=480):
    image = np.zeros((height, width, 3), np.uint8)
    image[220:260, 300:340] = (255, 0, 0)  # red 40x40 square centred at pixel (319.5, 239.5)
    image[50:90, 100:140] = (0, 255, 0)  # green square at x 100..139, y 50..89
    return image


def test_center_crop_then_resize_puts_the_square_where_expected():
    out = preprocess(pattern(), "center", (96, 96))
    assert out.shape == (96, 96, 3)
    # center crop of 640x480 to 1:1 = x 80..559; scale 0.2: red square -> x, y 44..51
    red = (out[..., 0] > 128) & (out[..., 1] < 64)
    ys, xs = np.nonzero(red)
    assert (xs.min(), xs.max(), ys.min(), ys.max()) == (44, 51, 44, 51)
    # the green square at x 100..139 survives the crop at (100-80)*0.2 = 4..11, y 10..17
    green = (out[..., 1] > 128) & (out[..., 0] < 64)
    ys, xs = np.nonzero(green)
    assert (xs.min(), xs.max(), ys.min(), ys.max()) == (4, 11, 10, 17)


def test_box_crop_then_resize():
    out = preprocess(pattern(), (80, 40, 160, 120), (80, 60))  # scale 0.5
    green = (out[..., 1] > 128) & (out[..., 0] < 64)
    ys, xs = np.nonzero(green)
    assert (xs.min(), xs.max(), ys.min(), ys.max()) == (10, 29, 5, 24)
    assert not ((out[..., 0] > 128) & (out[..., 1] < 64)).any()  # red square is outside the box


def test_preprocess_without_resize_is_a_plain_crop():
    image = pattern()
    assert np.array_equal(preprocess(image, (100, 50, 40, 40)), image[50:90, 100:140])
    assert preprocess(image).shape == image.shape


def test_intrinsics_follow_crop_and_resize():
    intr = Intrinsics(640, 480, fx=500.0, fy=500.0, cx=319.5, cy=239.5)
    out = preprocess_intrinsics(intr, "center", (96, 96))
    assert (out.width, out.height) == (96, 96)
    assert out.fx == pytest.approx(100.0) and out.fy == pytest.approx(100.0)
    # The principal point sat on the red square's centre: it must still sit on its centre after preprocessing.
    assert (out.cx, out.cy) == (pytest.approx(47.5), pytest.approx(47.5))
    assert preprocess_intrinsics(Intrinsics(640, 480, 0, 0, 0, 0), "center", (96, 96)) == Intrinsics(96, 96, 0, 0, 0, 0)


def test_crop_parsing_and_bounds():
    assert parse_crop("none") is None and parse_crop("") is None and parse_crop("center") == "center"
    assert parse_crop("1, 2, 30, 40") == (1, 2, 30, 40)
    with pytest.raises(ConfigError, match="crop 'middle'"):
        parse_crop("middle")
    with pytest.raises(ConfigError, match=r"exceeds the 640x480 image"):
        crop_box(640, 480, (600, 0, 100, 100), None)
    with pytest.raises(ConfigError, match="needs an output size"):
        crop_box(640, 480, "center", None)
    assert crop_box(640, 480, "center", (640, 240)) == (0, 120, 640, 240)  # 8:3 band
    assert crop_box(640, 480, "center", (96, 96)) == (80, 0, 480, 480)
