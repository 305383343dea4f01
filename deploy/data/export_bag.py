"""A rosbag2 bag (ours or anyone's) -> LeRobotDataset v3.0, through a topic-to-feature mapping.

The mapping (YAML, or the defaults for this package's topics) names the camera topics, the state and action
fields, optionally the environment state, and how the bag splits into episodes:

    fps: 10
    images: {front: /cameras/front/image_raw}            # camera name -> sensor_msgs/Image topic
    state:                                               # concatenated, in this order, into observation.state
      - {topic: /proprio/ee_pose, field: pose}           # a Pose is x y z qx qy qz qw
      - {topic: /proprio/joint_states, field: position, joints: [gripper]}   # JointState entries by name
    action: [{topic: /controller/reference, field: pose}]
    environment_state: [{topic: /sim/cube_pose, field: pose}]     # optional
    episodes: {gap_s: 1.0}              # or {topic: /episode_start}: each message starts one (until the next)

A field is a dotted path into the message (`pose`, `pose.position`, `twist.linear`, `data`, `position`): a
number is one value, an array its values (picked by `joints` from the message's `name` list), and a Pose,
Transform, Point, Vector3, Quaternion, Twist or Wrench its components. Every stream is resampled onto
start + k/fps by stamp (header stamp, else log time), nearest sample, where start is the first grid time at which
every stream has a sample in the episode and the grid ends at the last time all still have one.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import yaml
from rosbags.interfaces import Nodetype

from deploy.bags.store import BagReader, has_stamp, stamp_ns, typestore
from deploy.data.lerobot import ExportSummary, check_output, write_dataset
from deploy.errors import ConfigError

DEFAULT_FPS = 10
DEFAULT_GAP_S = 1.0
IMAGE = "sensor_msgs/msg/Image"
_COMPONENTS = {  # message type -> (attribute paths, names) of its numeric components
    "geometry_msgs/msg/Pose": (("position.x", "position.y", "position.z", "orientation.x", "orientation.y",
                                "orientation.z", "orientation.w"), ("x", "y", "z", "qx", "qy", "qz", "qw")),
    "geometry_msgs/msg/Transform": (("translation.x", "translation.y", "translation.z", "rotation.x", "rotation.y",
                                     "rotation.z", "rotation.w"), ("x", "y", "z", "qx", "qy", "qz", "qw")),
    "geometry_msgs/msg/Point": (("x", "y", "z"), ("x", "y", "z")),
    "geometry_msgs/msg/Vector3": (("x", "y", "z"), ("x", "y", "z")),
    "geometry_msgs/msg/Quaternion": (("x", "y", "z", "w"), ("qx", "qy", "qz", "qw")),
    "geometry_msgs/msg/Twist": (("linear.x", "linear.y", "linear.z", "angular.x", "angular.y", "angular.z"),
                                ("vx", "vy", "vz", "wx", "wy", "wz")),
    "geometry_msgs/msg/Wrench": (("force.x", "force.y", "force.z", "torque.x", "torque.y", "torque.z"),
                                 ("fx", "fy", "fz", "tx", "ty", "tz")),
}
_CHANNELS = {"rgb8": (3, (0, 1, 2)), "bgr8": (3, (2, 1, 0)), "rgba8": (4, (0, 1, 2)), "bgra8": (4, (2, 1, 0)),
             "mono8": (1, (0, 0, 0))}


@dataclasses.dataclass(frozen=True)
class Field:
    topic: str
    field: str  # dotted path into the message
    joints: tuple[str, ...] = ()  # entries of an array field, by the message's `name` list

    @property
    def label(self) -> str:
        return self.topic.rstrip("/").rsplit("/", 1)[-1]


@dataclasses.dataclass(frozen=True)
class BagMapping:
    images: dict[str, str]  # camera name -> Image topic
    state: tuple[Field, ...]
    action: tuple[Field, ...]
    environment_state: tuple[Field, ...] = ()
    fps: int = DEFAULT_FPS
    episode_topic: str = ""  # each message on it starts an episode
    episode_gap_s: float = DEFAULT_GAP_S  # else a gap this long in the first state stream ends one

    @property
    def fields(self) -> dict[str, tuple[Field, ...]]:
        groups = {"observation.state": self.state, "action": self.action,
                  "observation.environment_state": self.environment_state}
        return {key: group for key, group in groups.items() if group}


def default_mapping(topics: dict[str, str]) -> BagMapping:
    """This package's topics (a bag from `deploy record`): every camera, TCP pose + gripper width as state,
    the controller's executed TCP reference as action, the sim's cube pose as environment state if recorded."""
    images = {t.split("/")[2]: t for t, kind in sorted(topics.items())
              if kind == IMAGE and t.startswith("/cameras/") and t.endswith("/image_raw")}
    state = (Field("/proprio/ee_pose", "pose"), Field("/proprio/joint_states", "position", ("gripper",)))
    return BagMapping(images=images, state=state,
                      action=(Field("/controller/reference", "pose"),),
                      environment_state=(Field("/sim/cube_pose", "pose"),) if "/sim/cube_pose" in topics else ())


def mapping_from_yaml(path: str | Path) -> BagMapping:
    """A mapping file (format in the module docstring); ConfigError naming the file and the bad key."""
    where = f"mapping '{path}'"
    try:
        doc = yaml.safe_load(Path(path).read_text())
    except OSError as error:
        raise ConfigError(f"{where}: {error.strerror or error}") from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        raise ConfigError(f"{where} is not valid YAML" + (f" (line {mark.line + 1})" if mark else "")) from None
    if not isinstance(doc, dict):
        raise ConfigError(f"{where}: expected a mapping with images, state, action")
    unknown = set(doc) - {"fps", "images", "state", "action", "environment_state", "episodes"}
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(sorted(map(str, unknown)))} (known: fps, images, "
                          "state, action, environment_state, episodes)")

    def fields(key: str, required: bool) -> tuple[Field, ...]:
        entries = doc.get(key) or []
        if required and not entries:
            raise ConfigError(f"{where}: '{key}' needs at least one {{topic, field}} entry")
        out = []
        for entry in entries if isinstance(entries, list) else [entries]:
            if not (isinstance(entry, dict) and {"topic", "field"} <= set(entry) <= {"topic", "field", "joints"}):
                raise ConfigError(f"{where}: {key} entry {entry!r} must be {{topic, field[, joints]}}")
            out.append(Field(str(entry["topic"]), str(entry["field"]), tuple(map(str, entry.get("joints") or ()))))
        return tuple(out)

    images = doc.get("images") or {}
    episodes = doc.get("episodes") or {}
    if not isinstance(images, dict) or not isinstance(episodes, dict) or set(episodes) - {"topic", "gap_s"}:
        raise ConfigError(f"{where}: images must map camera names to topics; episodes is {{topic}} or {{gap_s}}")
    fps = doc.get("fps", DEFAULT_FPS)
    if not (isinstance(fps, int) and fps > 0):
        raise ConfigError(f"{where}: fps must be a positive whole number, got {fps!r}")
    return BagMapping(images={str(k): str(v) for k, v in images.items()}, state=fields("state", True),
                      action=fields("action", True), environment_state=fields("environment_state", False), fps=fps,
                      episode_topic=str(episodes.get("topic", "")),
                      episode_gap_s=float(episodes.get("gap_s", DEFAULT_GAP_S)))


def _component_paths(msgtype: str, path: str) -> tuple[str, tuple[str, ...], tuple[str, ...]]:
    """(type at the end of `path`, its numeric component paths, their names) — ((), ()) for a number/array."""
    store, kind = typestore(), msgtype
    for name in path.split(".") if path else ():
        fields = dict(store.fielddefs[kind][1]) if kind in store.fielddefs else {}
        if name not in fields:
            raise ConfigError(f"{msgtype} has no field '{path}'")
        node = fields[name]
        kind = node[1] if node[0] == Nodetype.NAME else ""  # a nested message, else a number or array
    if kind in _COMPONENTS:
        return kind, *_COMPONENTS[kind]
    if kind:
        raise ConfigError(f"{msgtype} field '{path}' is a {kind}, which has no numeric mapping")
    return kind, (), ()


def _values(msg, path: str, components: tuple[str, ...], joints: tuple[str, ...], topic: str) -> np.ndarray:
    value = msg
    for name in path.split("."):
        value = getattr(value, name)
    if components:
        out = []
        for component in components:
            item = value
            for name in component.split("."):
                item = getattr(item, name)
            out.append(item)
        return np.asarray(out, np.float64)
    value = np.atleast_1d(np.asarray(value, np.float64))
    if joints:
        names = list(msg.name)
        missing = [j for j in joints if j not in names]
        if missing:
            raise ConfigError(f"topic {topic} has no joint named {', '.join(map(repr, missing))}; its joints: "
                              f"{', '.join(names) or 'none'}")
        return value[[names.index(j) for j in joints]]
    return value


def image_from_bag(msg, topic: str) -> np.ndarray:
    """A deserialized sensor_msgs/Image -> (H, W, 3) uint8 RGB."""
    if msg.encoding not in _CHANNELS:
        raise ConfigError(f"topic {topic}: image encoding '{msg.encoding}' is not one of {', '.join(_CHANNELS)}")
    channels, order = _CHANNELS[msg.encoding]
    rows = np.asarray(msg.data, np.uint8).reshape(msg.height, msg.step)[:, :msg.width * channels]
    return np.ascontiguousarray(rows.reshape(msg.height, msg.width, channels)[:, :, list(order)])


def _nearest(stamps: np.ndarray, times: np.ndarray) -> np.ndarray:
    """Index of the stamp nearest to each time (stamps sorted)."""
    right = np.clip(np.searchsorted(stamps, times), 1, max(1, len(stamps) - 1))
    left = right - 1
    if len(stamps) == 1:
        return np.zeros(len(times), np.int64)
    return np.where(times - stamps[left] <= stamps[right] - times, left, right).astype(np.int64)


@dataclasses.dataclass
class _Stream:
    stamps_ns: np.ndarray  # sorted
    log_ns: np.ndarray  # the log time of each sample (images: found again by it)
    values: np.ndarray | None  # (N, D) numeric fields; None for images


def export_bag(bag: str | Path, output: str | Path, task: str, mapping: BagMapping | None = None,
               fps: int | None = None, robot_type: str | None = None, repo_id: str | None = None) -> ExportSummary:
    """Write `bag` as a LeRobotDataset v3.0 folder `output` (default mapping: this package's topics)."""
    output = check_output(output, task, fps)
    with BagReader(bag) as reader:
        mapping = mapping or default_mapping(reader.types)
        fps = fps or mapping.fps
        streams, features = _read_streams(reader, mapping)
        windows = _episode_windows(reader, mapping, streams)
        shapes = {camera: _first_image(reader, topic).shape for camera, topic in mapping.images.items()}
        result = ExportSummary(output, fps, [], {}, cameras=shapes)
        write_dataset(_bag_episodes(reader, mapping, streams, windows, result), features, task, result, robot_type,
                      repo_id, f"the bag {Path(bag).resolve()}")
    return result


def _read_streams(reader: BagReader, mapping: BagMapping) -> tuple[dict[str, _Stream], dict]:
    """Every mapped topic's stamps (and numeric fields), and the features' (dtype, names)."""
    wanted = {f.topic for group in mapping.fields.values() for f in group} | set(mapping.images.values())
    missing = sorted(wanted - set(reader.types))
    if missing:
        raise ConfigError(f"bag '{reader.path}' has no topic {', '.join(missing)} (the export mapping reads it; "
                          f"the bag has {', '.join(sorted(reader.types)) or 'no topics'})")
    for topic in mapping.images.values():
        if reader.types[topic] != IMAGE:
            raise ConfigError(f"bag '{reader.path}': image topic {topic} has type {reader.types[topic]}, not {IMAGE}")
    plans, features = {}, {}
    for key, group in mapping.fields.items():
        names = []
        for field in group:
            try:
                _, components, labels = _component_paths(reader.types[field.topic], field.field)
            except ConfigError as error:
                raise ConfigError(f"bag '{reader.path}': topic {field.topic}: {error}") from None
            plans.setdefault(field.topic, []).append((field, components))
            labels = labels or field.joints or (field.field.rsplit(".", 1)[-1],)
            names += [f"{field.label}.{label}" for label in labels]
        features[key] = ("float32", names)
    samples: dict[str, list] = {topic: [] for topic in wanted}
    store = typestore()
    for topic, log_ns, data in reader.messages(sorted(wanted)):
        kind = reader.types[topic]
        stamp = stamp_ns(data) if has_stamp(kind) else log_ns
        row = None
        if topic in plans:
            msg = store.deserialize_cdr(data, kind)
            try:
                row = [_values(msg, f.field, components, f.joints, topic) for f, components in plans[topic]]
            except ConfigError as error:
                raise ConfigError(f"bag '{reader.path}': {error}") from None
        samples[topic].append((stamp, log_ns, row))
    streams = {}
    for topic, rows in samples.items():
        if not rows:
            raise ConfigError(f"bag '{reader.path}': topic {topic} has no message")
        rows.sort(key=lambda r: r[0])
        values = None
        if rows[0][2] is not None:
            values = {f: np.stack([r[2][i] for r in rows]) for i, (f, _) in enumerate(plans[topic])}
        streams[topic] = _Stream(np.array([r[0] for r in rows], np.int64), np.array([r[1] for r in rows], np.int64),
                                 values)
    return streams, features


def _episode_windows(reader: BagReader, mapping: BagMapping, streams: dict[str, _Stream]) -> list[tuple[int, int]]:
    """[(start_ns, end_ns)] of each episode in stamp time: from each message on the episode topic to the next
    (what comes before the first is left out), else the first state stream's runs without a gap."""
    if mapping.episode_topic:
        if mapping.episode_topic not in reader.types:
            raise ConfigError(f"bag '{reader.path}' has no episode topic {mapping.episode_topic}")
        starts = [stamp_ns(d) if has_stamp(reader.types[mapping.episode_topic]) else t
                  for _, t, d in reader.messages([mapping.episode_topic])]
        if not starts:
            raise ConfigError(f"bag '{reader.path}': episode topic {mapping.episode_topic} has no message")
        bounds = sorted(starts) + [np.iinfo(np.int64).max]
        return list(zip(bounds[:-1], bounds[1:]))
    reference = streams[mapping.state[0].topic].stamps_ns
    cuts = np.flatnonzero(np.diff(reference) > mapping.episode_gap_s * 1e9)
    firsts = np.concatenate([[0], cuts + 1])
    lasts = np.concatenate([cuts, [len(reference) - 1]])
    return [(int(reference[a]), int(reference[b]) + 1) for a, b in zip(firsts, lasts)]


def _first_image(reader: BagReader, topic: str) -> np.ndarray:
    _, _, data = next(reader.messages([topic]))
    return image_from_bag(typestore().deserialize_cdr(data, IMAGE), topic)


def _bag_episodes(reader: BagReader, mapping: BagMapping, streams: dict[str, _Stream], windows, result: ExportSummary
                  ) -> Iterator[tuple[int, dict, dict]]:
    """Each episode window resampled onto its fps grid (streams by nearest stamp), with its camera frames."""
    step_ns = 1e9 / result.fps
    for index, (start_ns, end_ns) in enumerate(windows):
        inside = {t: (s.stamps_ns >= start_ns) & (s.stamps_ns < end_ns) for t, s in streams.items()}
        if not all(mask.any() for mask in inside.values()):
            empty = sorted(t for t, mask in inside.items() if not mask.any())
            result.skipped[index] = f"no message on {', '.join(empty)}"
            continue
        first = max(int(s.stamps_ns[inside[t]][0]) for t, s in streams.items())
        last = min(int(s.stamps_ns[inside[t]][-1]) for t, s in streams.items())
        if last < first:
            result.skipped[index] = "its streams do not overlap in time"
            continue
        grid = first + np.arange(int(np.floor((last - first) / step_ns + 0.5)) + 1) * step_ns
        picks = {}
        for topic, stream in streams.items():
            where = np.flatnonzero(inside[topic])
            rows = where[_nearest(stream.stamps_ns[where].astype(np.float64), grid)]
            offset = np.abs(stream.stamps_ns[rows] - grid).max() * 1e-9
            result.max_stamp_offset_s = max(result.max_stamp_offset_s, float(offset))
            result.repeated_rows += int(np.sum(rows[1:] == rows[:-1]))
            result.dropped_steps += len(where) - len(np.unique(rows))
            picks[topic] = rows
        data = {key: np.concatenate([streams[f.topic].values[f][picks[f.topic]] for f in group], axis=1)
                for key, group in mapping.fields.items()}
        frames = {camera: _frames(reader, topic, streams[topic], picks[topic], result.cameras[camera])
                  for camera, topic in mapping.images.items()}
        yield index, data, frames


def _frames(reader: BagReader, topic: str, stream: _Stream, rows: np.ndarray, shape: tuple) -> np.ndarray:
    """The camera frames of `rows` (indices into the stream), read again from the bag by their log times."""
    wanted = {int(stream.log_ns[r]) for r in rows}
    decoded: dict[int, np.ndarray] = {}
    store = typestore()
    for _, log_ns, data in reader.messages([topic], start_ns=min(wanted), stop_ns=max(wanted) + 1):
        if log_ns in wanted and log_ns not in decoded:
            frame = image_from_bag(store.deserialize_cdr(data, IMAGE), topic)
            if frame.shape != shape:
                raise ConfigError(f"bag '{reader.path}': topic {topic} changes frame size from {shape} to "
                                  f"{frame.shape} (a LeRobot video has one size)")
            decoded[log_ns] = frame
    return np.stack([decoded[int(stream.log_ns[r])] for r in rows])


def is_bag(path: str | Path) -> bool:
    path = Path(path)
    return (path / "metadata.yaml").is_file() or path.suffix in (".mcap", ".db3")


__all__ = ["BagMapping", "Field", "default_mapping", "export_bag", "image_from_bag", "is_bag", "mapping_from_yaml"]
