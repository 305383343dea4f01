"""`deploy record` and `record:=true` write rosbag2 MCAP that third-party readers (rosbags, and the `mcap`
library Foxglove is built on, decoding with the schemas stored in the file) read back with every topic, type,
QoS, count and stamp intact."""
import signal
import subprocess
import sys
import time

import numpy as np
import yaml
from mcap.reader import make_reader
from mcap_ros2.decoder import DecoderFactory
from rclpy.qos import QoSProfile
from rosbags.rosbag2 import Reader
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import String

from bag_helpers import STORE
from deploy.bags.store import has_stamp, stamp_ns
from deploy.bags.topics import expected_type
from deploy.nodes.common import LATCHED_QOS, SENSOR_QOS
from deploy.nodes.conversions import image_to_msg, joint_state_to_msg
from harness import ros_environment, wait_until


def read_all(bag):
    """topic -> [(log time ns, deserialized message, raw bytes)], with rosbags."""
    out = {}
    with Reader(bag) as reader:
        for conn, log_ns, data in reader.messages():
            out.setdefault(conn.topic, []).append((log_ns, STORE.deserialize_cdr(data, conn.msgtype), data))
    return out


def mcap_decoded(bag):
    """topic -> [decoded message] using only the schemas inside the MCAP file (what Foxglove does)."""
    (path,) = bag.glob("*.mcap")
    out = {}
    with path.open("rb") as stream:
        for _, channel, _, msg in make_reader(stream, decoder_factories=[DecoderFactory()]).iter_decoded_messages():
            out.setdefault(channel.topic, []).append(msg)
    return out


def test_record_cli_keeps_counts_stamps_types_and_qos(tmp_path, probe, domain_id):
    joints_pub = probe.node.create_publisher(JointState, "/proprio/joint_states", QoSProfile(depth=50))
    image_pub = probe.node.create_publisher(Image, "/cameras/front/image_raw", SENSOR_QOS)
    version_pub = probe.node.create_publisher(String, "/policy/weight_version", LATCHED_QOS)
    version_pub.publish(String(data="v1"))  # before the recorder exists: latched, so it is still recorded
    bag = tmp_path / "bag"
    proc = subprocess.Popen([sys.executable, "-m", "deploy.cli", "record", "--output", str(bag), "--topics",
                             "/proprio/joint_states,/cameras/*/image_raw,/policy/weight_version", "--domain-id",
                             str(domain_id)], env=ros_environment(domain_id), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        assert wait_until(lambda: joints_pub.get_subscription_count() and image_pub.get_subscription_count()
                          and version_pub.get_subscription_count(), timeout_s=90)
        time.sleep(1.0)  # the recorder's readers match our writers too
        start_s = time.time()
        stamps = [start_s + 0.005 * i for i in range(200)]
        for i, stamp_s in enumerate(stamps):
            joints_pub.publish(joint_state_to_msg(stamp_s, np.full(7, 0.01 * i), np.zeros(7), np.zeros(7), 0.04))
            if i % 10 == 0:
                image_pub.publish(image_to_msg(np.full((24, 32, 3), i, np.uint8), stamp_s, "front"))
            time.sleep(0.005)
        time.sleep(1.0)
    finally:
        proc.send_signal(signal.SIGINT)
        output = proc.communicate(timeout=60)[0]
    assert proc.returncode == 0, output
    assert f"deploy record: bag written to {bag}" in output

    messages = read_all(bag)
    joints = messages["/proprio/joint_states"]
    sent_ns = [round(s * 1e9) for s in stamps]
    assert [stamp_ns(raw) for _, _, raw in joints] == sent_ns  # reliable: every one, in order, stamps intact
    assert [list(m.position[:7]) for _, m, _ in joints] == [[0.01 * i] * 7 for i in range(200)]
    assert all(0 <= log_ns - stamp < 5 * 10**9 for (log_ns, _, _), stamp in zip(joints, sent_ns))
    images = messages["/cameras/front/image_raw"]
    assert len(images) >= 18 and {stamp_ns(raw) for _, _, raw in images} <= set(sent_ns[::10])
    assert [m.data for _, m, _ in messages["/policy/weight_version"]] == ["v1"]

    metadata = yaml.safe_load((bag / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
    assert (metadata["version"], metadata["storage_identifier"]) == (9, "mcap")
    topics = {t["topic_metadata"]["name"]: t for t in metadata["topics_with_message_count"]}
    assert topics["/proprio/joint_states"]["message_count"] == 200
    qos = {name: t["topic_metadata"]["offered_qos_profiles"][0] for name, t in topics.items()}
    assert (qos["/proprio/joint_states"]["reliability"], qos["/cameras/front/image_raw"]["reliability"],
            qos["/policy/weight_version"]["durability"]) == ("reliable", "best_effort", "transient_local")

    decoded = mcap_decoded(bag)  # Foxglove's reader, with the message definitions stored in the file
    assert len(decoded["/proprio/joint_states"]) == 200
    last = decoded["/proprio/joint_states"][-1]
    assert last.name[:2] == ["joint1", "joint2"] and last.position[0] == 0.01 * 199
    frame = decoded["/cameras/front/image_raw"][-1]
    assert (frame.height, frame.width, frame.encoding, len(frame.data)) == (24, 32, "rgb8", 24 * 32 * 3)


def test_session_recorded_with_record_true_reads_back_intact(sim_session):
    messages = read_all(sim_session.bag)
    for topic in ("/cameras/front/image_raw", "/cameras/front/camera_info", "/proprio/joint_states",
                  "/proprio/ee_pose", "/proprio/ee_twist", "/robot/joint_states", "/policy/chunk",
                  "/policy/chunk_version", "/policy/weight_version", "/controller/chunk", "/controller/chunk_status",
                  "/controller/reference", "/intervention/active", "/diagnostics"):
        assert len(messages.get(topic, [])) > 0, (topic, sorted(messages), sim_session.output[-2000:])
    with Reader(sim_session.bag) as reader:
        types = {c.topic: c.msgtype for c in reader.connections}
        counts = {c.topic: c.msgcount for c in reader.connections}
    assert all(expected_type(topic) == msgtype for topic, msgtype in types.items()), types
    counts = {topic: count for topic, count in counts.items() if count}  # (silent publishers, e.g. /clock)
    assert counts == {topic: len(items) for topic, items in messages.items()}
    assert len(messages["/proprio/ee_pose"]) > 20 * 4 and len(messages["/cameras/front/image_raw"]) > 3 * 4
    for topic, items in messages.items():
        if not has_stamp(types[topic]) or topic in ("/diagnostics", "/policy/chunk_version"):
            continue
        header_ns = [m.header.stamp.sec * 10**9 + m.header.stamp.nanosec for _, m, _ in items]
        assert header_ns == [stamp_ns(raw) for _, _, raw in items]
        if topic not in ("/policy/chunk", "/controller/chunk"):  # sensor streams: in order, stamped on capture
            assert header_ns == sorted(header_ns), topic
        assert all(-10**8 < log - stamp < 5 * 10**9 for (log, _, _), stamp in zip(items, header_ns)), topic
    # Chunks are reliable: every chunk the probe saw while the recorder ran is in the bag, stamp for stamp.
    recorded = [stamp_ns(raw) for _, _, raw in messages["/policy/chunk"]]
    seen = [m.header.stamp.sec * 10**9 + m.header.stamp.nanosec for _, m in sim_session.chunks_seen]
    overlap = [s for s in seen if recorded[0] <= s <= recorded[-1]]
    assert len(overlap) >= 10 and set(overlap) <= set(recorded)
    decoded = mcap_decoded(sim_session.bag)
    assert {topic: len(items) for topic, items in decoded.items()} == counts
