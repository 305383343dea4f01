"""The camera node as a real process: a generated video file played as a camera (crop + resize, JPEG,
CameraInfo matching the image), and a RealSense node with no device that reports on /diagnostics and lives."""
import signal
import subprocess
import sys

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from sensor_msgs.msg import CameraInfo, CompressedImage, Image

from deploy.nodes.common import SENSOR_QOS
from deploy.nodes.conversions import compressed_image_from_msg, compressed_image_to_msg, time_from_msg
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
