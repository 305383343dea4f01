"""Bags from other tools: written with `rosbags`' Writer and its defaults (no offered QoS profiles), humble message
definitions, sqlite3 storage, a foreign robot's joint names, damaged files. Replay offers what rosbag2's player
offers (its default profile when a bag recorded none; a --qos-override file in rosbag2's format), replay-test on
a bag with no chunks is a dry run, and every bad bag is one line that names what is wrong."""
import json
import shutil
import subprocess
import sys

import pytest
from rclpy.qos import QoSProfile, ReliabilityPolicy
from rosbags.rosbag2 import StoragePlugin
from rosbags.typesys import Stores, get_typestore
from sensor_msgs.msg import JointState

from bag_helpers import STORE, TINY, joint_state, joints_checkpoint, tool_down, write_bag
from deploy.bags.store import BagError, BagReader
from deploy.bags.topics import PLAYBACK_DEFAULT, QosSpec, check_topics, playback_qos, qos_overrides_from_yaml
from deploy.errors import ConfigError
from deploy.graph.description import resolve
from deploy.policies.runtime import write_random_checkpoint
from harness import ros_environment

JOINTS = "/proprio/joint_states"
HUMBLE = get_typestore(Stores.ROS2_HUMBLE)
# rosbag2's own test resource (ros2bag/test/resources/qos_profile.yaml), verbatim
ROSBAG2_OVERRIDE = """/test_topic:
  history: keep_all
  depth: 0
  reliability: reliable
  durability: transient_local
  deadline:
    # unspecified/infinity
    sec: 0
    nsec: 0
  lifespan:
    # unspecified/infinity
    sec: 0
    nsec: 0
  liveliness: automatic
  liveliness_lease_duration:
    # unspecified/infinity
    sec: 0
    nsec: 0
  avoid_ros_namespace_conventions: false
"""


def deploy_cli(domain_id, *args, timeout_s=300):
    return subprocess.run([sys.executable, "-m", "deploy.cli", *args], env=ros_environment(domain_id),
                          capture_output=True, text=True, timeout=timeout_s)


def one_line_error(done) -> str:
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    return lines[0]


# --- QoS ---------------------------------------------------------------------------------------------------
def test_playback_qos_is_rosbag2_players_choice():
    assert playback_qos([]) == PLAYBACK_DEFAULT == QosSpec(reliable=True, transient_local=False, depth=10)
    latched = QosSpec(reliable=True, transient_local=True, depth=1)
    assert playback_qos([latched, latched]) == QosSpec(reliable=True, transient_local=True, depth=10)
    best_effort = QosSpec(reliable=False, depth=5)
    assert playback_qos([best_effort]) == QosSpec(reliable=False, depth=10)
    assert playback_qos([best_effort, latched]) == PLAYBACK_DEFAULT  # mixed offers: rosbag2 falls back too
    assert playback_qos([QosSpec(keep_all=True, depth=0)]) == QosSpec(depth=10)  # history is the player's


def test_a_bag_without_qos_profiles_reads_as_none(tmp_path):
    bag = write_bag(tmp_path / "bag", seconds=0.2)
    with BagReader(bag) as reader:
        assert all(info.offered_qos == () for info in reader.topics.values())
        assert playback_qos(reader.topics[JOINTS].offered_qos).reliable


def test_qos_override_file_in_rosbag2_format(tmp_path):
    path = tmp_path / "qos.yaml"
    path.write_text(ROSBAG2_OVERRIDE + "/proprio/joint_states:\n  reliability: best_effort\n  depth: 3\n"
                    "/slow:\n  history: keep_last\n  depth: 1\n  deadline: {sec: 1, nsec: 500}\n")
    overrides = qos_overrides_from_yaml(path)
    assert overrides["/test_topic"] == QosSpec(reliable=True, transient_local=True, keep_all=True, depth=0)
    assert overrides["/proprio/joint_states"] == QosSpec(reliable=False, depth=3)  # unset policies: defaults
    assert overrides["/slow"] == QosSpec(depth=1, deadline_ns=1_000_000_500)
    for text, message in (
            ("/a:\n  reliability: sometimes\n", f"QoS override file '{path}', topic /a: reliability 'sometimes' "
                                                "is not one of reliable|best_effort|system_default"),
            ("/a:\n  colour: red\n", f"QoS override file '{path}', topic /a: unexpected key 'colour'"),
            ("/a:\n  deadline: {sec: 1}\n", f"QoS override file '{path}', topic /a: deadline must be"),
            ("/a:\n  depth: 0\n", f"QoS override file '{path}', topic /a: depth 0 needs history keep_all"),
            ("/a:\n  depth: [1\n", f"QoS override file '{path}' is not valid YAML at line 3"),  # parser gave up there
            ("- /a\n", f"QoS override file '{path}': expected a mapping of topic names")):
        path.write_text(text)
        with pytest.raises(ConfigError) as error:
            qos_overrides_from_yaml(path)
        assert str(error.value).startswith(message) and "\n" not in str(error.value)
    for graph, args in (("bag_play", {}), ("replay", {"policy": "/p"}),
                        ("replay_test", {"policy": "/p", "output": "/o"})):
        replay = resolve(graph, {"bag": "/b", "qos_override": str(path), **args}).node("replay")
        assert dict(replay.parameters)["qos_override"] == str(path)


def test_replay_offers_rosbag2s_default_to_a_reliable_subscriber_and_honours_an_override(tmp_path, probe, domain_id):
    """A sqlite3 bag without offered QoS: a reliable subscriber gets every message (before: best effort, so
    nothing); with an override making the topic best effort it gets none, a best-effort subscriber all."""
    bag = write_bag(tmp_path / "bag", seconds=1.0, joint_hz=20.0, topics=(JOINTS,), storage=StoragePlugin.SQLITE3)
    assert [p.suffix for p in bag.iterdir() if p.suffix != ".yaml"] == [".db3"]
    reliable = probe.collect(JointState, JOINTS, QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE))
    done = deploy_cli(domain_id, "replay", str(bag), "--wait-for-subscribers", "--domain-id", str(domain_id))
    assert done.returncode == 0, done.stdout + done.stderr
    assert len(reliable) == 20  # reliable: all of them, in order
    stamps = [m.header.stamp.sec * 10**9 + m.header.stamp.nanosec for _, m in reliable]
    assert stamps == sorted(stamps)

    override = tmp_path / "qos.yaml"
    override.write_text(f"{JOINTS}:\n  reliability: best_effort\n  history: keep_last\n  depth: 50\n")
    best_effort = probe.collect(JointState, JOINTS, QoSProfile(depth=100, reliability=ReliabilityPolicy.BEST_EFFORT))
    reliable.clear()
    done = deploy_cli(domain_id, "replay", str(bag), "--wait-for-subscribers", "--qos-override", str(override),
                      "--domain-id", str(domain_id))
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"overriding QoS for {JOINTS}" in done.stdout + done.stderr
    assert len(best_effort) >= 18 and reliable == []  # a reliable request cannot match a best-effort offer
    override.write_text(f"{JOINTS}:\n  reliability: maybe\n")
    done = deploy_cli(domain_id, "replay", str(bag), "--qos-override", str(override))
    assert done.returncode == 2
    assert one_line_error(done).startswith(f"deploy: error: QoS override file '{override}', topic {JOINTS}: "
                                           "reliability 'maybe'")


# --- replay-test on foreign bags ---------------------------------------------------------------------------
def cube_checkpoint(path):
    """Random ACT (tool down) reading the front camera, the TCP pose and the cube pose; the cube pose arrives on
    a reliable subscription (the policy node's COMMAND_QOS), like the push demo's."""
    return tool_down(write_random_checkpoint(path, "act", image_keys=("front",), image_size_hw=(32, 32),
                                             state_keys=("ee_pose", "cube_pose"), **TINY))


def test_replay_test_on_a_humble_bag_without_qos_or_chunks_is_a_dry_run(tmp_path, domain_id):
    """Before: the cube pose went out best effort, the policy's reliable subscription never matched, and after
    120 s "nothing subscribed to /sim/cube_pose"; with QoS, a bag without chunks said PASSED, 0 of 0 compared."""
    bag = write_bag(tmp_path / "bag", seconds=2.0, joint_hz=50.0, store=HUMBLE,
                    topics=("/cameras/front/image_raw", "/proprio/ee_pose", "/sim/cube_pose"))
    done = deploy_cli(domain_id, "replay-test", str(bag), "--policy", str(cube_checkpoint(tmp_path / "ckpt")),
                      "--report", str(tmp_path / "report"), "--min-matched", "0.5", "--domain-id", str(domain_id))
    assert done.returncode == 4, done.stdout[-3000:] + done.stderr[-3000:]
    assert "replay-test DRY RUN" in done.stdout and "PASSED" not in done.stdout
    assert "NOTHING COMPARED: the bag has no /policy/chunk" in done.stdout
    assert "latency replayed: p50" in done.stdout and "safety trips: none" in done.stdout
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert report["outcome"] == "dry run" and not report["passed"] and report["failures"] == []
    assert report["chunks"]["recorded"] == 0 and report["chunks"]["replayed"] >= 8  # one per 0.2 s
    assert report["latency_s"]["replayed"]["count"] == report["chunks"]["replayed"]
    assert report["safety"]["gated"] == 0


def test_a_joint_state_without_a_gripper_joint_is_named(tmp_path, domain_id):
    names = [f"panda_joint{i}" for i in range(1, 8)] + ["panda_finger_joint1"]
    bag = write_bag(tmp_path / "bag", seconds=0.5, joint_names=[f"joint{i}" for i in range(1, 8)] + names[7:])
    checkpoint = joints_checkpoint(tmp_path / "ckpt")
    done = deploy_cli(domain_id, "replay-test", str(bag), "--policy", str(checkpoint))
    assert done.returncode == 2
    assert one_line_error(done) == (
        f"deploy: error: bag '{bag}': topic {JOINTS} has no joint named 'gripper' (policy '{checkpoint}' reads "
        f"gripper_width from it); its joints: joint1, joint2, joint3, joint4, joint5, joint6, joint7, "
        "panda_finger_joint1")
    foreign = write_bag(tmp_path / "foreign", seconds=0.5, joint_names=names)
    done = deploy_cli(domain_id, "replay-test", str(foreign), "--policy", str(checkpoint))
    assert done.returncode == 2 and "has no joint named 'joint1', 'joint2'" in one_line_error(done)
    assert "its joints: panda_joint1," in done.stderr


def test_every_missing_topic_is_named(tmp_path, domain_id):
    required = {"/cameras/front/image_raw": "sensor_msgs/msg/Image",
                "/proprio/ee_pose": "geometry_msgs/msg/PoseStamped", JOINTS: "sensor_msgs/msg/JointState"}
    with pytest.raises(ConfigError) as error:
        check_topics("b", {JOINTS: "std_msgs/msg/String"}, required, "policy 'p'")
    assert str(error.value) == ("bag 'b' has none of the topics /cameras/front/image_raw (sensor_msgs/msg/Image), "
                                "/proprio/ee_pose (geometry_msgs/msg/PoseStamped) that policy 'p' needs; topic "
                                f"{JOINTS} has type std_msgs/msg/String, expected sensor_msgs/msg/JointState "
                                "(policy 'p')")
    bag = write_bag(tmp_path / "bag", seconds=0.2, topics=())
    checkpoint = cube_checkpoint(tmp_path / "ckpt")
    done = deploy_cli(domain_id, "replay-test", str(bag), "--policy", str(checkpoint))
    assert done.returncode == 2
    assert one_line_error(done) == (
        f"deploy: error: bag '{bag}' has none of the topics /cameras/front/image_raw (sensor_msgs/msg/Image), "
        "/proprio/ee_pose (geometry_msgs/msg/PoseStamped), /sim/cube_pose (geometry_msgs/msg/PoseStamped) that "
        f"policy '{checkpoint}' needs")


# --- damaged files -----------------------------------------------------------------------------------------
def corrupt_mid_file(bag, t_ns) -> tuple:
    """Overwrite the length of the message record holding the joint state of t_ns (found by its bytes, not by
    our reader) with 2^64-1; -> (the .mcap, the record's offset)."""
    (mcap,) = bag.glob("*.mcap")
    data = bytearray(mcap.read_bytes())
    payload = bytes(STORE.serialize_cdr(joint_state(t_ns), "sensor_msgs/msg/JointState"))
    # message record: opcode (1), length (8), channel id (2), sequence (4), log time (8), publish time (8), data
    offset = data.index(payload) - 31
    assert data[offset] == 0x05 and len(data) // 4 < offset < 3 * len(data) // 4
    data[offset + 1:offset + 9] = b"\xff" * 8
    mcap.write_bytes(bytes(data))
    return mcap, offset


def test_a_bag_corrupt_mid_file_is_named_with_its_offset(tmp_path, domain_id):
    start_ns = 1_700_000_000 * 10**9
    bag = write_bag(tmp_path / "bag", seconds=1.0, start_ns=start_ns)
    mcap, offset = corrupt_mid_file(bag, start_ns + 500_000_000)
    expected = f"bag '{bag}': {mcap} is corrupt at offset {offset} (a record runs past its chunk)"
    with BagReader(bag) as reader, pytest.raises(BagError) as error:  # the summary is intact: it opens
        list(reader.messages())
    assert str(error.value) == expected  # before: OverflowError: Python int too large to convert to C ssize_t
    done = deploy_cli(domain_id, "replay-test", str(bag), "--policy", str(joints_checkpoint(tmp_path / "ckpt")))
    assert done.returncode == 2 and one_line_error(done) == f"deploy: error: {expected}"


def test_garbage_metadata_is_one_line(tmp_path, domain_id):
    bag = write_bag(tmp_path / "bag", seconds=0.2)
    (bag / "metadata.yaml").write_text("rosbag2_bagfile_information:\n  version: 9\n  files: [\n  - {oops\n")
    done = deploy_cli(domain_id, "replay", str(bag))
    assert done.returncode == 2
    assert one_line_error(done) == f"deploy: error: bag '{bag}': {bag / 'metadata.yaml'} is not valid YAML " \
                                   "(line 4, column 3)"
    (bag / "metadata.yaml").write_text("just a string\n")
    with pytest.raises(BagError, match=r"is not rosbag2 metadata \(no rosbag2_bagfile_information mapping\)$"):
        BagReader(bag)
    shutil.copy(write_bag(tmp_path / "good", seconds=0.2) / "metadata.yaml", bag / "metadata.yaml")
    (bag / "metadata.yaml").write_text((bag / "metadata.yaml").read_text().replace("relative_file_paths", "x"))
    with pytest.raises(BagError) as error:
        BagReader(bag)
    assert str(error.value) == f"bag '{bag}' is unreadable: A metadata key is missing KeyError('relative_file_paths')."
