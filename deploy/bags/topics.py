"""The stack's topics and their message types, topic selection for record/replay, the inputs a policy reads,
and QoS as plain values (nodes translate it to rclpy in `deploy.nodes.conversions`).

Types are ROS 2 names ("sensor_msgs/msg/Image"), as rosbag2 stores them.
"""
from __future__ import annotations

import dataclasses
import fnmatch
import json
from collections.abc import Iterable, Sequence
from pathlib import Path

from deploy.errors import ConfigError
from deploy.graph.description import STATE_TOPICS, TOPICS
from deploy.lists import comma_list
from deploy.policies.base import PolicyMetadata

IMAGE = "sensor_msgs/msg/Image"
JOINT_STATE = "sensor_msgs/msg/JointState"
POSE_STAMPED = "geometry_msgs/msg/PoseStamped"
WRENCH_STAMPED = "geometry_msgs/msg/WrenchStamped"
CARTESIAN_CHUNK = "trajectory_msgs/msg/MultiDOFJointTrajectory"
JOINT_CHUNK = "trajectory_msgs/msg/JointTrajectory"
HEADER = "std_msgs/msg/Header"
CLOCK_TOPIC, CLOCK = "/clock", "rosgraph_msgs/msg/Clock"
CHUNK_VERSION_TOPIC = "/policy/chunk_version"  # the policy node's ~/chunk_version

# Every topic the stack publishes (grep the nodes: they name these), as (name pattern, type); `*` is a camera.
STACK_TOPICS: tuple[tuple[str, str], ...] = (
    ("/cameras/*/image_raw", IMAGE),
    ("/cameras/*/camera_info", "sensor_msgs/msg/CameraInfo"),
    ("/cameras/*/image_raw/compressed", "sensor_msgs/msg/CompressedImage"),
    ("/proprio/joint_states", JOINT_STATE),
    ("/proprio/ee_pose", POSE_STAMPED),
    ("/proprio/ee_twist", "geometry_msgs/msg/TwistStamped"),
    (TOPICS["ee_wrench"], WRENCH_STAMPED),
    ("/robot/joint_states", JOINT_STATE),
    ("/robot/ee_wrench", WRENCH_STAMPED),
    (TOPICS["policy_chunk"], CARTESIAN_CHUNK),
    (TOPICS["policy_joint_chunk"], JOINT_CHUNK),
    (CHUNK_VERSION_TOPIC, HEADER),
    ("/policy/weight_version", "std_msgs/msg/String"),
    (TOPICS["controller_chunk"], CARTESIAN_CHUNK),
    (TOPICS["controller_joint_chunk"], JOINT_CHUNK),
    ("/controller/chunk_status", "std_msgs/msg/Float64MultiArray"),
    ("/controller/reference", POSE_STAMPED),
    ("/intervention/active", "std_msgs/msg/Bool"),
    ("/diagnostics", "diagnostic_msgs/msg/DiagnosticArray"),
    ("/sim/cube_pose", POSE_STAMPED),
    ("/sim/success", "std_msgs/msg/Bool"),
    (CLOCK_TOPIC, CLOCK),  # only in lockstep / sim-time graphs
)

# Named topic sets: "stack" records a whole session (raw images, not their JPEG copies); "observations" is
# what a policy reads from cameras and proprioception, the set the replay graph publishes together with whatever
# else its checkpoint reads (replayed_patterns; replaying the bag's chunks would collide with the live policy's).
PRESETS: dict[str, tuple[str, ...]] = {
    "stack": tuple(p for p, _ in STACK_TOPICS if not p.endswith("/compressed")),
    "observations": ("/cameras/*/image_raw", "/cameras/*/camera_info", "/proprio/joint_states",
                     "/proprio/ee_pose", "/proprio/ee_twist", TOPICS["ee_wrench"]),
}


def expected_type(topic: str) -> str | None:
    """The type the stack publishes on `topic`, or None for a topic that is not the stack's."""
    return next((msgtype for pattern, msgtype in STACK_TOPICS if fnmatch.fnmatchcase(topic, pattern)), None)


def parse_topics(text: str) -> tuple[str, ...]:
    """"/a,/b/*" -> ("/a", "/b/*"): comma-separated topic names or `*` patterns."""
    topics = comma_list(text)
    for topic in topics:
        if not topic.startswith("/"):
            raise ConfigError(f"topic '{topic}' must be an absolute name starting with '/'")
    return topics


def topic_patterns(topics: str = "", preset: str = "") -> tuple[str, ...]:
    """Patterns from an explicit list or a preset name; () means every topic."""
    if topics and preset:
        raise ConfigError("give either topics or a preset, not both")
    if preset:
        if preset not in PRESETS:
            raise ConfigError(f"unknown topic preset '{preset}' (choose {'|'.join(PRESETS)})")
        return PRESETS[preset]
    return parse_topics(topics)


def selected(topic: str, patterns: Sequence[str]) -> bool:
    return not patterns or any(fnmatch.fnmatchcase(topic, p) for p in patterns)


def replayed_patterns(topics: str, preset: str, inputs: PolicyInputs | None) -> tuple[str, ...]:
    """What a replay publishes: an explicit list as given; else the preset's patterns (none: every topic) plus
    every topic the policy it feeds reads, so a checkpoint gets its inputs whatever the preset holds (the push
    checkpoints read the sim's privileged /sim/cube_pose, which no camera-and-proprioception preset has)."""
    explicit = parse_topics(topics)
    if explicit:
        return explicit
    patterns = PRESETS[preset] if preset else ()
    if not patterns or inputs is None:
        return patterns
    return patterns + tuple(t for t in inputs.topics if not selected(t, patterns))


@dataclasses.dataclass(frozen=True)
class PolicyInputs:
    """The topics a policy node subscribes to for a checkpoint, and where its chunks come out."""

    topics: dict[str, str]  # topic -> type, the reference topic included
    reference_topic: str  # its samples start inferences; a chunk's stamp is this topic's header stamp
    chunk_topic: str
    chunk_type: str
    images: tuple[str, ...]  # the camera topics (image_max_age_s applies; the rest are state_max_age_s)
    after_reference: tuple[str, ...]  # inputs the node subscribes to after the reference (deploy/bags/lockstep.py)


def policy_inputs(metadata: PolicyMetadata) -> PolicyInputs:
    """The node's wiring for `metadata` (nodes/policy_node.py subscribes to cameras, ee_pose, cube pose, joint
    states, in that order)."""
    topics = {f"/cameras/{name}/image_raw": IMAGE for name in metadata.image_keys}
    if "ee_pose" in metadata.state_keys:
        topics[TOPICS["ee_pose"]] = POSE_STAMPED
    if "cube_pose" in metadata.state_keys:  # privileged sim state (the push policies)
        topics[TOPICS["cube_pose"]] = POSE_STAMPED
    if {"gripper_width", "joint_positions"} & set(metadata.state_keys):
        topics[TOPICS["joint_states"]] = JOINT_STATE
    reference_key = "ee_pose" if "ee_pose" in metadata.state_keys else metadata.state_keys[0]
    reference = STATE_TOPICS[reference_key]
    cartesian = metadata.action_space == "cartesian"
    order = list(topics)  # the node's subscription order
    return PolicyInputs(topics, reference,
                        TOPICS["policy_chunk"] if cartesian else TOPICS["policy_joint_chunk"],
                        CARTESIAN_CHUNK if cartesian else JOINT_CHUNK,
                        images=tuple(t for t in order if t.startswith("/cameras/")),
                        after_reference=tuple(order[order.index(reference) + 1:]))


def read_policy_metadata(checkpoint: str | Path) -> PolicyMetadata:
    """A checkpoint's metadata from its config.json, without building the model (no torch)."""
    config = Path(checkpoint) / "config.json"
    if not config.is_file():
        raise ConfigError(f"checkpoint '{checkpoint}': no config.json (expected a checkpoint directory)")
    try:
        fields = dict(json.loads(config.read_text())["metadata"])
        fields.update({k: tuple(fields[k]) for k in ("image_keys", "image_size_hw", "state_keys") if k in fields})
        return PolicyMetadata(**fields)
    except (ConfigError, json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, ValueError) as error:
        raise ConfigError(f"{config}: no valid policy metadata ({type(error).__name__}: {error})") from None


def check_topics(bag: str, available: dict[str, str], required: dict[str, str], why: str) -> None:
    """ConfigError naming the first required topic the bag lacks or holds with another type."""
    for topic, msgtype in required.items():
        if topic not in available:
            raise ConfigError(f"bag '{bag}' has no topic {topic} ({why} needs {msgtype})")
        if available[topic] != msgtype:
            raise ConfigError(f"bag '{bag}': topic {topic} has type {available[topic]}, expected {msgtype} "
                              f"({why})")


@dataclasses.dataclass(frozen=True)
class QosSpec:
    """The QoS that matters for matching and replay: reliability, durability and queue depth."""

    reliable: bool = True
    transient_local: bool = False
    depth: int = 10


def adapted_qos(offered: Iterable[QosSpec], min_depth: int = 10) -> QosSpec:
    """One profile compatible with every offer (as rosbag2 does): reliable / transient-local only if all are."""
    offered = list(offered)
    return QosSpec(reliable=bool(offered) and all(q.reliable for q in offered),
                   transient_local=bool(offered) and all(q.transient_local for q in offered),
                   depth=max([min_depth] + [q.depth for q in offered]))


def playback_qos(recorded: Iterable[QosSpec]) -> QosSpec:
    """A replay publisher's profile: adapted to the offers the bag recorded; none recorded (a bag from another
    tool): reliable and volatile, as `ros2 bag play` does, which reliable and best-effort subscribers both match
    (a best-effort publisher never reaches a reliable subscriber, e.g. the policy's /sim/cube_pose)."""
    recorded = list(recorded)
    return adapted_qos(recorded) if recorded else QosSpec()


__all__ = ["CLOCK", "CLOCK_TOPIC", "PRESETS", "PolicyInputs", "QosSpec", "STACK_TOPICS", "adapted_qos",
           "check_topics", "expected_type", "parse_topics", "playback_qos", "policy_inputs", "read_policy_metadata",
           "replayed_patterns", "selected", "topic_patterns"]
