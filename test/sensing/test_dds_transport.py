"""The package's DDS transport (DDS_ENV_DEFAULTS: config/fastdds_localhost.xml + SYSTEM_DEFAULT discovery):
full-size camera frames cross between processes, and every UDP socket a node opens is bound to loopback.

Loss and latency over 60 s are measured in bench/camera_transport.py; here the default transport would lose
about two thirds of the frames, so the floor below tells the configurations apart with room for a loaded
machine."""
import re
import subprocess
import sys
import time

import pytest
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image

from deploy.errors import ConfigError
from deploy.graph import description
from harness import ros_environment, wait_until

FRAMES_PER_CAMERA = 90  # 3 s at 30 Hz
# Two cameras' 640x480 rgb8 frames at 30 Hz, best effort as the camera node publishes; frame_id = sequence.
PUBLISHER = f"""
import sys, time
import numpy as np, rclpy
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import Image
rclpy.init()
node = rclpy.create_node("transport_test_publisher")
pubs = [node.create_publisher(Image, f"/transport_test/camera{{i}}", qos_profile_sensor_data) for i in range(2)]
while any(p.get_subscription_count() == 0 for p in pubs):
    time.sleep(0.05)
time.sleep(1.0)
msg = Image(height=480, width=640, encoding="rgb8", step=640 * 3)
msg.data = np.random.default_rng(0).integers(0, 256, 480 * 640 * 3, dtype=np.uint8).tobytes()
due = time.monotonic()
for seq in range({FRAMES_PER_CAMERA}):
    time.sleep(max(0.0, due - time.monotonic()))
    msg.header.frame_id = str(seq)
    for pub in pubs:
        pub.publish(msg)
    due += 1 / 30
print("sent", flush=True)
sys.stdin.read()  # stay up (sockets open) until the test closes stdin
"""
# Best effort like the publisher, deep enough that a busy test process takes frames late instead of losing them.
DEEP_SENSOR_QOS = QoSProfile(depth=60, reliability=ReliabilityPolicy.BEST_EFFORT, history=HistoryPolicy.KEEP_LAST)


def udp_local_addresses(pid: int) -> set[str]:
    lines = subprocess.run(["ss", "-uanp"], capture_output=True, text=True, check=True).stdout.splitlines()
    return {re.sub(r":\d+$", "", line.split()[3]) for line in lines if f"pid={pid}," in line}


def test_full_size_frames_arrive_and_every_udp_socket_is_on_loopback(domain_id, probe):
    received = {i: probe.collect(Image, f"/transport_test/camera{i}", DEEP_SENSOR_QOS) for i in range(2)}
    publisher = subprocess.Popen([sys.executable, "-c", PUBLISHER], env=ros_environment(domain_id),
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert wait_until(lambda: any(received.values()), timeout_s=60), "no frame arrived"
        addresses = udp_local_addresses(publisher.pid)
        assert publisher.stdout.readline().strip() == "sent"
        time.sleep(1.0)  # frames in flight
    finally:
        publisher.stdin.close()
        publisher.wait(timeout=30)
    assert addresses == {"127.0.0.1"}, addresses
    for camera, frames in received.items():
        sequence = [int(m.header.frame_id) for _, m in frames]
        assert len(set(sequence)) >= 0.95 * FRAMES_PER_CAMERA, (camera, len(set(sequence)))
        assert sequence == sorted(sequence)
        assert len(frames[-1][1].data) == 640 * 480 * 3


def test_a_missing_profile_is_refused_rather_than_discovering_on_every_interface(monkeypatch, tmp_path):
    missing = tmp_path / "fastdds_localhost.xml"
    monkeypatch.setitem(description.DDS_ENV_DEFAULTS, "FASTDDS_DEFAULT_PROFILES_FILE", str(missing))
    with pytest.raises(ConfigError) as error:
        description.dds_environment()
    assert str(error.value) == f"Fast DDS profile not found: {missing} (the package's config/fastdds_localhost.xml)"
