"""The camera node as a real process: a generated video file played as a camera (crop + resize, JPEG,
CameraInfo matching the image), recordings (pyrealsense2's, an MP4) played to a subscriber that starts after
the node, and a RealSense node with no device or a bad recording that reports on /diagnostics and lives."""
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from sensor_msgs.msg import CameraInfo, CompressedImage, Image

from deploy.nodes.common import SENSOR_QOS
from deploy.nodes.conversions import compressed_image_from_msg, compressed_image_to_msg, image_from_msg, time_from_msg
from camera_recordings import grey_index, pattern, write_mp4, write_realsense_recording
from harness import ros_environment, wait_until
from test_cameras import write_video


def start_node(domain_id: int, *params: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "deploy.nodes.camera_node", "--ros-args", "-r", "__node:=camera_test"]
    for param in params:
        cmd += ["-p", param]
    return subprocess.Popen(cmd, env=ros_environment(domain_id), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)


def stop(proc: subprocess.Popen) -> str:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
    return proc.stdout.read()


def test_compressed_image_round_trip():
    image = np.zeros((48, 64, 3), np.uint8)
    image[:, :32] = (255, 0, 0)
    msg = compressed_image_to_msg(image, 12.5, "cam_optical_frame", quality=95)
    assert msg.format == "rgb8; jpeg compressed bgr8" and time_from_msg(msg.header.stamp) == 12.5
    back = compressed_image_from_msg(msg)
    assert back.shape == image.shape and np.abs(back.astype(int) - image).mean() < 4


def test_video_file_camera_node_publishes_preprocessed_frames(domain_id, probe, tmp_path):
    video = write_video(tmp_path / "v.avi", 16, size=(160, 120))
    images = probe.collect(Image, "/cameras/test/image_raw", SENSOR_QOS)
    infos = probe.collect(CameraInfo, "/cameras/test/camera_info", SENSOR_QOS)
    jpegs = probe.collect(CompressedImage, "/cameras/test/image_raw/compressed", SENSOR_QOS)
    diagnostics = probe.collect(DiagnosticArray, "/diagnostics", 10)
    proc = start_node(domain_id, "camera_name:=test", "kind:=opencv", f"path:={video}", "loop:=true",
                      "crop:=center", "output_width:=64", "output_height:=48", "jpeg:=true",
                      "intrinsics:=[200.0, 200.0, 79.5, 59.5]")
    try:
        def camera_status():
            return [st for _, a in diagnostics for st in a.status if st.name == "camera test"]

        # diagnostics come at 1 Hz: wait for one too, not only for 20 frames (~0.7 s)
        assert wait_until(lambda: len(images) >= 20 and len(infos) >= 20 and jpegs and camera_status(),
                          timeout_s=30), f"images {len(images)} infos {len(infos)} jpegs {len(jpegs)}\n{stop(proc)}"
        assert proc.poll() is None
    finally:
        output = stop(proc)
    image, info = images[-1][1], infos[-1][1]
    assert (image.width, image.height, image.encoding) == (64, 48, "rgb8"), output
    assert (info.width, info.height) == (64, 48)
    assert info.k[0] == 200.0 * 64 / 160 and info.k[2] == (79.5 + 0.5) * 64 / 160 - 0.5
    stamps = [time_from_msg(m.header.stamp) for _, m in images]
    assert np.all(np.diff(stamps) > 0), stamps
    assert 0.02 < np.median(np.diff(stamps)) < 0.07  # the file's 30 Hz (a loaded machine drops a few)
    info_stamps = {time_from_msg(m.header.stamp) for _, m in infos}
    # every Image has a CameraInfo with the same stamp (best effort may drop one of either under load)
    assert len(set(stamps[-10:]) & info_stamps) >= 8
    assert compressed_image_from_msg(jpegs[-1][1]).shape == (48, 64, 3)
    statuses = [s for _, a in diagnostics for s in a.status if s.name == "camera test"]
    assert statuses and statuses[-1].level == DiagnosticStatus.OK


def statuses(diagnostics, camera_name: str) -> list:
    return [s for _, a in diagnostics for s in a.status if s.name == f"camera {camera_name}"]


def play_to_late_subscriber(domain_id, probe, *params: str) -> tuple[list, list]:
    """Start a node playing a recording, subscribe only once it waits for a subscriber (and after the clip would
    have ended had it not waited), and collect until the end of the recording: (images, diagnostics)."""
    diagnostics = probe.collect(DiagnosticArray, "/diagnostics", 10)
    proc = start_node(domain_id, "camera_name:=rec", *params)
    try:
        assert wait_until(lambda: any(s.message == "waiting for a subscriber" for s in statuses(diagnostics, "rec")),
                          timeout_s=30), stop(proc)
        time.sleep(1.5)  # longer than the clip: played at once, it would be over before anyone subscribed
        images = probe.collect(Image, "/cameras/rec/image_raw", SENSOR_QOS)
        assert wait_until(lambda: any(s.message == "end of recording" for s in statuses(diagnostics, "rec")),
                          timeout_s=30), f"{len(images)} images\n{stop(proc)}"
        assert proc.poll() is None  # the end of a recording is not the end of the node
    finally:
        output = stop(proc)
    assert images and "Traceback" not in output, output
    return [m for _, m in images], diagnostics


def check_flow(images, indices, n_frames: int, size) -> None:
    """From the first frame, in order, at the recorded size, stamps increasing (best effort may drop a few)."""
    assert indices[0] == 0 and np.all(np.diff(indices) > 0), indices
    assert len(indices) >= 0.8 * n_frames, indices
    assert {(m.width, m.height, m.encoding) for m in images} == {(*size, "rgb8")}
    assert np.all(np.diff([time_from_msg(m.header.stamp) for m in images]) > 0)


def test_realsense_recording_plays_from_its_first_frame_to_a_late_subscriber(domain_id, probe, tmp_path):
    recording = write_realsense_recording(tmp_path / "front.db3", 30)  # 1 s at 30 Hz, 64x48
    # the device mode from the robot's camera YAML (config/cameras_franka.yaml) does not apply to a recording
    images, _ = play_to_late_subscriber(domain_id, probe, "kind:=realsense", f"path:={recording}",
                                        "width:=640", "height:=480", "fps:=30.0")
    pixels = [image_from_msg(m) for m in images]
    indices = [int(p[0, 0, 0]) for p in pixels]
    check_flow(images, indices, 30, (64, 48))
    for index, image in zip(indices, pixels):
        np.testing.assert_array_equal(image, pattern(index))


def test_mp4_plays_from_its_first_frame_to_a_late_subscriber(domain_id, probe, tmp_path):
    clip = write_mp4(tmp_path / "clip.mp4", 16)  # 0.53 s at 30 Hz, 160x120
    images, _ = play_to_late_subscriber(domain_id, probe, "kind:=opencv", f"path:={clip}")
    check_flow(images, [grey_index(image_from_msg(m)) for m in images], 16, (160, 120))


@pytest.mark.parametrize("kind, name, content", [("realsense", "missing.db3", None),
                                                 ("realsense", "corrupt.db3", b"not a recording" * 100),
                                                 ("opencv", "corrupt.mp4", b"not a video" * 100)])
def test_bad_recording_is_one_line_on_diagnostics_and_the_node_lives(domain_id, probe, tmp_path, kind, name, content):
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    diagnostics = probe.collect(DiagnosticArray, "/diagnostics", 10)
    proc = start_node(domain_id, "camera_name:=bad", f"kind:={kind}", f"path:={path}", "reconnect_period_s:=0.5")

    def errors():
        return [s for s in statuses(diagnostics, "bad") if s.level == DiagnosticStatus.ERROR]

    try:
        assert wait_until(lambda: len(errors()) >= 3, timeout_s=30), stop(proc)
        assert proc.poll() is None  # still alive, still retrying
    finally:
        output = stop(proc)
    message = errors()[-1].message
    assert str(path) in message and "\n" not in message, message
    assert str(path) in errors()[-1].hardware_id
    warnings = [line for line in output.splitlines() if str(path) in line]
    assert warnings and "Traceback" not in output, output


def test_realsense_node_without_device_reports_and_stays_alive(domain_id, probe):
    diagnostics = probe.collect(DiagnosticArray, "/diagnostics", 10)
    images = probe.collect(Image, "/cameras/rs/image_raw", SENSOR_QOS)
    proc = start_node(domain_id, "camera_name:=rs", "kind:=realsense", "serial:='000111222'",
                      "reconnect_period_s:=0.5")

    def errors():
        return [s for _, a in diagnostics for s in a.status if s.name == "camera rs" and s.level == DiagnosticStatus.ERROR]

    try:
        assert wait_until(lambda: len(errors()) >= 3, timeout_s=30), stop(proc)
        assert proc.poll() is None  # still alive, still retrying
    finally:
        output = stop(proc)
    message = errors()[-1].message
    assert "no RealSense device found (looked for serial 000111222" in message, message
    assert "000111222" in errors()[-1].hardware_id
    assert not images
    assert "Traceback" not in output, output


def exit_of_node(domain_id, *params) -> tuple[int, str]:
    """Run a camera node that should refuse to start; its exit code and output."""
    proc = start_node(domain_id, "camera_name:=x", "kind:=opencv", "path:=/nonexistent.avi", *params)
    try:
        code = proc.wait(timeout=20)
    finally:
        output = stop(proc)
    return code, output


def test_bad_crop_is_one_clear_line(domain_id):
    code, output = exit_of_node(domain_id, "crop:=middle")
    assert code == 2 and "crop 'middle'" in output and "Traceback" not in output, output


def test_parameter_of_another_backend_is_refused(domain_id):
    code, output = exit_of_node(domain_id, "serial:=123")
    assert code == 2 and "serial do not apply to camera kind 'opencv'" in output, output


def test_numeric_serial_from_the_command_line_is_a_string(domain_id, probe):
    """`-p serial:=123` arrives as an integer; the node takes it as the string it is (no type error)."""
    diagnostics = probe.collect(DiagnosticArray, "/diagnostics", 10)
    proc = start_node(domain_id, "camera_name:=rs2", "kind:=realsense", "serial:=123")
    try:
        assert wait_until(lambda: any(s.name == "camera rs2" for _, a in diagnostics for s in a.status), 30), stop(proc)
    finally:
        stop(proc)
    assert "123" in [s for _, a in diagnostics for s in a.status if s.name == "camera rs2"][-1].hardware_id
