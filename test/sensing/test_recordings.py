"""Recordings played as cameras, without ROS: a RealSense recording made by pyrealsense2's own recorder and an
MP4 written by OpenCV, played at the recorded rate or every frame as fast as read, held back until play()."""
import time

import numpy as np
import pytest

from camera_recordings import grey_index, pattern, write_mp4, write_realsense_recording
from deploy.errors import ConfigError
from deploy.sensing.cameras import CameraError, make_camera

N_FRAMES = 30


@pytest.fixture(scope="module")
def recording(tmp_path_factory) -> str:
    return write_realsense_recording(tmp_path_factory.mktemp("rs") / "colour.db3", N_FRAMES)


def play(camera, until_end_s: float = 30.0, read_period_s: float = 0.002, count: int | None = None) -> list:
    """Read frames until the recording ends (or `count` frames), then close the camera."""
    frames, deadline = [], time.monotonic() + until_end_s
    try:
        while time.monotonic() < deadline and not camera.ended and (count is None or len(frames) < count):
            frame = camera.read()
            if frame is not None:
                frames.append(frame)
            time.sleep(read_period_s)
        while (frame := camera.read()) is not None and (count is None or len(frames) < count):
            frames.append(frame)  # the last frame, if it landed as `ended` was set
    finally:
        camera.close()
    return frames


def recorded_index(frame) -> int:
    return int(frame.image[0, 0, 0])


def test_realsense_recording_plays_at_the_recorded_rate(recording):
    camera = make_camera("realsense", path=recording)
    camera.open()
    assert (camera.intrinsics.width, camera.intrinsics.height, camera.intrinsics.fx) == (64, 48, 50.0)
    assert camera.describe() == f"RealSense recording {recording}"
    frames = play(camera)
    assert camera.ended  # the end of a recording is not an error
    indices = [recorded_index(f) for f in frames]
    assert indices[0] == 0 and np.all(np.diff(indices) > 0), indices  # real time may skip one under load
    assert len(frames) >= N_FRAMES * 0.8, indices
    for frame in frames:
        np.testing.assert_array_equal(frame.image, pattern(recorded_index(frame)))  # exact pixels, RGB
    stamps = np.array([f.stamp_s for f in frames])
    assert np.all(np.diff(stamps) > 0)
    # paced like the recording (frames 1/30 s apart), not a burst: the whole clip takes at least half its length
    assert stamps[-1] - stamps[0] > 0.5 * (indices[-1] - indices[0]) / 30


def test_not_real_time_hands_over_every_frame_to_a_slow_reader(recording):
    camera = make_camera("realsense", path=recording, real_time=False)
    camera.open()
    frames = play(camera, read_period_s=0.05)  # a reader slower than the recorded 30 Hz
    assert [recorded_index(f) for f in frames] == list(range(N_FRAMES))
    assert [f.seq for f in frames] == list(range(1, N_FRAMES + 1))
    assert np.all(np.diff([f.stamp_s for f in frames]) > 0)


def test_recording_waits_for_play(recording):
    camera = make_camera("realsense", path=recording, wait_for_play=True, frame_timeout_s=0.3)
    camera.open()
    try:
        assert camera.waiting_for_play
        deadline = time.monotonic() + 1.5  # longer than the clip and the frame timeout: nothing, no error
        while time.monotonic() < deadline:
            assert camera.read() is None
            time.sleep(0.05)
        assert not camera.ended
        camera.play()
        assert not camera.waiting_for_play
    except BaseException:
        camera.close()
        raise
    frames = play(camera)
    assert [recorded_index(f) for f in frames][0] == 0


def test_recording_loops(recording):
    camera = make_camera("realsense", path=recording, real_time=False, loop=True)
    camera.open()
    frames = play(camera, count=2 * N_FRAMES + 5)
    assert [recorded_index(f) for f in frames] == [i % N_FRAMES for i in range(2 * N_FRAMES + 5)]
    assert np.all(np.diff([f.stamp_s for f in frames]) > 0)


@pytest.mark.parametrize("fmt", ["bgr8", "rgba8", "bgra8"])
def test_other_colour_formats_are_delivered_rgb(tmp_path, fmt):
    camera = make_camera("realsense", path=write_realsense_recording(tmp_path / "c.db3", 3, fmt=fmt),
                         real_time=False)
    camera.open()
    frames = play(camera)
    assert len(frames) == 3
    for i, frame in enumerate(frames):
        np.testing.assert_array_equal(frame.image, pattern(i))


def test_yuyv_recording_is_delivered_rgb(tmp_path):
    camera = make_camera("realsense", path=write_realsense_recording(tmp_path / "y.db3", 4, fmt="yuyv"),
                         real_time=False)
    camera.open()
    frames = play(camera)
    assert [f.image.shape for f in frames] == [(48, 64, 3)] * 4
    for i, frame in enumerate(frames):  # grey (U = V = 128), at the recorded luma (BT.601 studio range)
        assert np.ptp(frame.image.astype(int), axis=2).max() <= 1
        assert abs(frame.image.mean() - i * 255 / 219) <= 1.5


def test_missing_or_corrupt_recording_names_the_file(tmp_path, recording):
    with pytest.raises(CameraError, match=r"^RealSense recording .*nope\.db3 not found$"):
        make_camera("realsense", path=str(tmp_path / "nope.db3")).open()
    junk = tmp_path / "junk.db3"
    junk.write_bytes(b"not a recording" * 100)
    truncated = tmp_path / "truncated.db3"
    truncated.write_bytes(open(recording, "rb").read()[:8192])
    old_bag = tmp_path / "junk.bag"
    old_bag.write_bytes(b"not a ROS 1 bag")
    for bad in (junk, truncated, old_bag):
        camera = make_camera("realsense", path=str(bad))
        with pytest.raises(CameraError, match=rf"^RealSense recording {bad} cannot be played \(.+\)$") as caught:
            camera.open()
        assert "\n" not in str(caught.value)
        camera.close()  # idempotent after a failed open


def test_recording_replaces_the_device_settings(recording):
    """The robot's camera YAML sets the device's serial and mode; a recording given as `path` plays as recorded."""
    camera = make_camera("realsense", path=recording, serial="123456", width=640, height=480, fps=30.0,
                         real_time=False)
    camera.open()
    frames = play(camera)
    assert len(frames) == N_FRAMES and frames[0].image.shape == (48, 64, 3)


def test_recording_settings_are_checked():
    with pytest.raises(ConfigError, match="loop applies to a recording"):
        make_camera("realsense", loop=True)
    with pytest.raises(ConfigError, match="apply to recordings"):
        make_camera("realsense", real_time=False)
    with pytest.raises(ConfigError, match="apply to recordings"):
        make_camera("opencv", device="0", wait_for_play=True)


def test_mp4_waits_for_play_then_plays_from_its_first_frame(tmp_path):
    camera = make_camera("opencv", path=write_mp4(tmp_path / "clip.mp4", 12), wait_for_play=True,
                         frame_timeout_s=0.3)
    camera.open()
    try:
        time.sleep(0.8)  # longer than the 0.4 s clip: without the hold it would be over
        assert camera.read() is None and camera.waiting_for_play and not camera.ended
        camera.play()
    except BaseException:
        camera.close()
        raise
    frames = play(camera)
    assert [grey_index(f.image) for f in frames] == list(range(12))


def test_mp4_not_real_time_hands_over_every_frame(tmp_path):
    camera = make_camera("opencv", path=write_mp4(tmp_path / "clip.mp4", 20), real_time=False)
    camera.open()
    frames = play(camera, read_period_s=0.06)  # slower than the file's 30 Hz
    assert [grey_index(f.image) for f in frames] == [i % 16 for i in range(20)]


def test_a_frame_that_cannot_be_converted_is_reported_not_swallowed(recording, monkeypatch):
    """librealsense swallows exceptions in frame callbacks; the backend hands them to read() instead."""
    from deploy.sensing import realsense_camera

    def broken(image):
        raise ValueError("bad frame layout")

    monkeypatch.setitem(realsense_camera._TO_RGB, "rgb8", broken)
    camera = make_camera("realsense", path=recording)
    camera.open()
    try:
        with pytest.raises(CameraError, match=r"recording .*colour\.db3: lost \(ValueError: bad frame layout\)"):
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                camera.read()
                time.sleep(0.01)
    finally:
        camera.close()
