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

import yaml

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


GRIPPER_JOINT = "gripper"  # the JointState entry holding the gripper width [m] (deploy.nodes.conversions)


def joint_names_read(metadata: PolicyMetadata) -> dict[str, tuple[str, ...]]:
    """state key -> the /proprio/joint_states names the policy node reads it from."""
    names = {"joint_positions": tuple(f"joint{i}" for i in range(1, 8)), "gripper_width": (GRIPPER_JOINT,)}
    return {key: names[key] for key in metadata.state_keys if key in names}


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
    """ConfigError naming every required topic the bag lacks or holds with another type."""
    missing = [t for t in required if t not in available]
    wrong = [t for t in required if t in available and available[t] != required[t]]
    problems = []
    if len(missing) == 1:
        problems.append(f"has no topic {missing[0]} ({why} needs {required[missing[0]]})")
    elif missing:
        problems.append(f"has none of the topics {', '.join(f'{t} ({required[t]})' for t in missing)} "
                        f"that {why} needs")
    problems += [f"topic {t} has type {available[t]}, expected {required[t]} ({why})" for t in wrong]
    if problems:
        raise ConfigError(f"bag '{bag}'{' ' if missing else ': '}{'; '.join(problems)}")


@dataclasses.dataclass(frozen=True)
class QosSpec:
    """A QoS profile as plain values (durations in ns, 0 = unspecified, i.e. infinite)."""

    reliable: bool = True
    transient_local: bool = False
    depth: int = 10  # keep-last depth (ignored with keep_all)
    keep_all: bool = False
    deadline_ns: int = 0
    lifespan_ns: int = 0
    manual_liveliness: bool = False  # liveliness manual_by_topic instead of automatic
    liveliness_lease_ns: int = 0


def adapted_qos(offered: Iterable[QosSpec], min_depth: int = 10) -> QosSpec:
    """The recorder's request, compatible with every offer (as rosbag2 records): reliable / transient-local only
    if all offers are."""
    offered = list(offered)
    return QosSpec(reliable=bool(offered) and all(q.reliable for q in offered),
                   transient_local=bool(offered) and all(q.transient_local for q in offered),
                   depth=max([min_depth] + [q.depth for q in offered]))


PLAYBACK_DEFAULT = QosSpec()  # rosbag2's player default (Rosbag2QoS): reliable, volatile, keep-last 10


def playback_qos(offered: Sequence[QosSpec], min_depth: int = 10) -> QosSpec:
    """The profile a replay offers for a topic, as rosbag2's player chooses it (rosbag2_storage
    Rosbag2QoS::adapt_offer_to_recorded_offers): the recorded publishers' profile when they all offered the
    same compatibility policies (history aside: keep-last, at least min_depth); rosbag2's default when the bag
    recorded no profile (legal, and what `rosbags` writes unless told) or mixed ones."""
    if not offered:
        return dataclasses.replace(PLAYBACK_DEFAULT, depth=max(min_depth, PLAYBACK_DEFAULT.depth))
    first = offered[0]
    key = lambda q: (q.reliable, q.transient_local, q.deadline_ns, q.manual_liveliness,  # noqa: E731
                     q.liveliness_lease_ns)
    if any(key(q) != key(first) for q in offered):
        return PLAYBACK_DEFAULT
    return dataclasses.replace(first, keep_all=False, depth=max([min_depth] + [q.depth for q in offered]))


# rosbag2's --qos-profile-overrides-path YAML (ros2bag/api: interpret_dict_as_qos_profile): topic -> policies,
# policy values by rclpy's short keys; durations as {sec, nsec}. An unset policy takes rclpy's default.
_POLICY_VALUES = {"history": {"keep_last": {"keep_all": False}, "keep_all": {"keep_all": True},
                              "system_default": {"keep_all": False}},
                  "reliability": {"reliable": {"reliable": True}, "best_effort": {"reliable": False},
                                  "system_default": {"reliable": True}},
                  "durability": {"volatile": {"transient_local": False},
                                 "transient_local": {"transient_local": True},
                                 "system_default": {"transient_local": False}},
                  "liveliness": {"automatic": {"manual_liveliness": False},
                                 "manual_by_topic": {"manual_liveliness": True},
                                 "system_default": {"manual_liveliness": False}}}
_DURATIONS = {"deadline": "deadline_ns", "lifespan": "lifespan_ns", "liveliness_lease_duration": "liveliness_lease_ns"}


def qos_overrides_from_yaml(path: str | Path) -> dict[str, QosSpec]:
    """topic -> QosSpec from a rosbag2 QoS override file; ConfigError naming the file, topic and key."""
    try:
        document = yaml.safe_load(Path(path).read_text())
    except OSError as error:
        raise ConfigError(f"QoS override file '{path}': {error.strerror or error}") from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"QoS override file '{path}' is not valid YAML{where}") from None
    if not isinstance(document, dict):
        raise ConfigError(f"QoS override file '{path}': expected a mapping of topic names to QoS policies")
    overrides = {}
    for topic, policies in document.items():
        where = f"QoS override file '{path}', topic {topic}"
        if not isinstance(topic, str) or not topic.startswith("/"):
            raise ConfigError(f"{where}: a topic must be an absolute name starting with '/'")
        if not isinstance(policies, dict):
            raise ConfigError(f"{where}: expected a mapping of QoS policies")
        fields: dict = {}
        for key, value in policies.items():
            if key in _POLICY_VALUES:
                if value not in _POLICY_VALUES[key]:
                    raise ConfigError(f"{where}: {key} '{value}' is not one of {'|'.join(_POLICY_VALUES[key])}")
                fields.update(_POLICY_VALUES[key][value])
            elif key in _DURATIONS:
                if not (isinstance(value, dict) and set(value) == {"sec", "nsec"}
                        and all(isinstance(v, int) and v >= 0 for v in value.values())):
                    raise ConfigError(f"{where}: {key} must be {{sec: int >= 0, nsec: int >= 0}}, got {value}")
                fields[_DURATIONS[key]] = value["sec"] * 1_000_000_000 + value["nsec"]
            elif key == "depth":
                if not (isinstance(value, int) and value >= 0):
                    raise ConfigError(f"{where}: depth must be an integer >= 0, got {value}")
                fields["depth"] = value
            elif key == "avoid_ros_namespace_conventions":
                if value not in (False, True):
                    raise ConfigError(f"{where}: avoid_ros_namespace_conventions must be true or false")
                if value:
                    raise ConfigError(f"{where}: avoid_ros_namespace_conventions true is not supported")
            else:
                raise ConfigError(f"{where}: unexpected key '{key}' (QoS policies: "
                                  f"{', '.join([*_POLICY_VALUES, 'depth', *_DURATIONS])})")
        if not fields.get("keep_all") and fields.get("depth", 1) == 0:
            raise ConfigError(f"{where}: depth 0 needs history keep_all")
        overrides[topic] = QosSpec(**fields)
    return overrides


__all__ = ["CLOCK", "CLOCK_TOPIC", "GRIPPER_JOINT", "PLAYBACK_DEFAULT", "PRESETS", "PolicyInputs", "QosSpec",
           "STACK_TOPICS", "adapted_qos", "check_topics", "expected_type", "joint_names_read", "parse_topics",
           "playback_qos", "policy_inputs", "qos_overrides_from_yaml", "read_policy_metadata", "replayed_patterns",
           "selected", "topic_patterns"]
