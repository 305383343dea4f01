"""Bags written directly with `rosbags` (not by our recorder): generated camera images and joint states, as a
user's own tooling or another stack would write them; and tiny random checkpoints reading those topics."""
import shutil
from pathlib import Path

import numpy as np
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore
from safetensors.numpy import load_file, save_file

from deploy.policies.runtime import write_random_checkpoint

STORE = get_typestore(Stores.ROS2_KILTED)
TINY = dict(d_model=32, n_heads=2, dim_feedforward=64, n_encoder_layers=1, n_decoder_layers=1,
            n_vae_encoder_layers=1, vision_channels=(8, 8, 16), n_keypoints=8)
ARM = [0.0, -0.785, 0.0, -2.356, 0.0, 1.571, 0.785]


def tool_down(checkpoint: Path) -> Path:
    """A random ACT's quaternions are raw network outputs (the normaliser leaves them unscaled), i.e. random
    orientations the safety layer rightly refuses; pin them near tool-down, as a trained policy's would be."""
    weights = checkpoint / "model.safetensors"
    tensors = load_file(weights)
    tensors["normalizer.action.mean"][3:7] = [1.0, 0.0, 0.0, 0.0]
    tensors["normalizer.action.std"][3:7] = 0.02
    save_file(tensors, weights)
    return checkpoint


def joints_checkpoint(path: Path, seed: int = 0) -> Path:
    """Random ACT (tool down) reading the front camera and /proprio/joint_states (joints + gripper width)."""
    return tool_down(write_random_checkpoint(path, "act", image_keys=("front",), image_size_hw=(32, 32),
                                             state_keys=("joint_positions", "gripper_width"), seed=seed, **TINY))


def perturbed(checkpoint: Path, path: Path, scale: float = 0.3, seed: int = 1) -> Path:
    """A copy whose network weights (not its normaliser) carry noise of `scale` times each tensor's spread."""
    shutil.copytree(checkpoint, path)
    rng = np.random.default_rng(seed)
    tensors = load_file(path / "model.safetensors")
    for name, tensor in tensors.items():
        if not name.startswith("normalizer.") and tensor.dtype.kind == "f" and tensor.size > 1:
            tensor += (scale * tensor.std() * rng.standard_normal(tensor.shape)).astype(tensor.dtype)
    save_file(tensors, path / "model.safetensors")
    return path


def _stamp(t_ns: int, store=STORE):
    Time = store.types["builtin_interfaces/msg/Time"]
    return store.types["std_msgs/msg/Header"](stamp=Time(sec=t_ns // 10**9, nanosec=t_ns % 10**9), frame_id="base")


def image(t_ns: int, size: int = 48, store=STORE):
    """A moving gradient, different in every frame."""
    phase = (t_ns // 1_000_000) % 256
    row = (np.arange(size, dtype=np.uint16) * 4 + phase) % 256
    pixels = np.stack([np.tile(row, (size, 1)), np.tile(row[:, None], (1, size)), np.full((size, size), 90)], -1)
    return store.types["sensor_msgs/msg/Image"](header=_stamp(t_ns, store), height=size, width=size, encoding="rgb8",
                                                is_bigendian=0, step=3 * size,
                                                data=pixels.astype(np.uint8).reshape(-1))


def joint_state(t_ns: int, store=STORE, names=None):
    """The package's joint1..joint7 + gripper, or `names` (a foreign robot's) with as many positions."""
    names = names or [f"joint{i}" for i in range(1, 8)] + ["gripper"]
    q = np.array(ARM) + 0.05 * np.sin(t_ns * 1e-9 + np.arange(7))
    position = np.resize(np.append(q, 0.04), len(names))
    return store.types["sensor_msgs/msg/JointState"](
        header=_stamp(t_ns, store), name=list(names), position=position, velocity=np.zeros(len(names)),
        effort=np.zeros(len(names)))


def pose(t_ns: int, xyz, store=STORE):
    """A tool-down pose near `xyz`, drifting slowly."""
    drift = 0.01 * np.sin(t_ns * 1e-9)
    Pose, Point, Quaternion = (store.types[f"geometry_msgs/msg/{n}"] for n in ("Pose", "Point", "Quaternion"))
    return store.types["geometry_msgs/msg/PoseStamped"](
        header=_stamp(t_ns, store), pose=Pose(position=Point(x=xyz[0] + drift, y=xyz[1], z=xyz[2]),
                                              orientation=Quaternion(x=1.0, y=0.0, z=0.0, w=0.0)))


TYPES = {"/cameras/front/image_raw": "sensor_msgs/msg/Image", "/proprio/joint_states": "sensor_msgs/msg/JointState",
         "/proprio/ee_pose": "geometry_msgs/msg/PoseStamped", "/sim/cube_pose": "geometry_msgs/msg/PoseStamped",
         "/controller/reference": "geometry_msgs/msg/PoseStamped", "/episode_start": "std_msgs/msg/Header"}
POSES = {"/proprio/ee_pose": (0.45, 0.0, 0.25), "/sim/cube_pose": (0.55, 0.05, 0.02),
         "/controller/reference": (0.46, 0.0, 0.24)}


def write_bag(path: Path, seconds: float = 3.0, camera_hz: float = 30.0, joint_hz: float = 100.0,
              start_ns: int = 1_700_000_000 * 10**9, joint_type: str = "sensor_msgs/msg/JointState",
              topics: tuple[str, ...] = ("/cameras/front/image_raw", "/proprio/joint_states"),
              storage: StoragePlugin = StoragePlugin.MCAP, store=STORE, joint_names=None,
              gap_s: tuple[float, float] | None = None, markers_s: tuple[float, ...] = ()) -> Path:
    """Images and states stamped at their (log) time, as a third-party tool writes them: `rosbags`' Writer with
    its defaults (no offered QoS profiles), in `storage`, with the message definitions of `store`; the state
    topics (joints, TCP pose, cube pose, TCP reference) at joint_hz; nothing at all in the window `gap_s`; a
    std_msgs/Header on /episode_start at each of `markers_s`."""
    events = []
    for topic in topics:
        hz = camera_hz if topic == "/cameras/front/image_raw" else joint_hz
        events += [(start_ns + round(i * 1e9 / hz), topic) for i in range(int(seconds * hz))
                   if gap_s is None or not gap_s[0] <= i / hz < gap_s[1]]
    events += [(start_ns + round(t_s * 1e9), "/episode_start") for t_s in markers_s]
    topics = (*topics, "/episode_start") if markers_s else topics
    with Writer(path, version=9, storage_plugin=storage) as writer:
        types = dict(TYPES, **{"/proprio/joint_states": joint_type})
        conns = {topic: writer.add_connection(topic, types[topic], typestore=store) for topic in topics}
        for t_ns, topic in sorted(events):
            if topic == "/cameras/front/image_raw":
                msg = image(t_ns, store=store)
            elif topic == "/episode_start":
                msg = _stamp(t_ns, store)
            elif topic in POSES:
                msg = pose(t_ns, POSES[topic], store)
            elif joint_type == "sensor_msgs/msg/JointState":
                msg = joint_state(t_ns, store, joint_names)
            else:
                msg = store.types[joint_type](data="not joints")
            writer.write(conns[topic], t_ns, store.serialize_cdr(msg, types[topic]))
    return path


def push_pose(t_ns: int, position: tuple[float, float, float]):
    """A PoseStamped near `position`, drifting slowly on all three axes, tool down (the push bag's)."""
    Point, Quaternion = STORE.types["geometry_msgs/msg/Point"], STORE.types["geometry_msgs/msg/Quaternion"]
    x, y, z = np.array(position) + 0.02 * np.sin(t_ns * 1e-9 + np.arange(3))
    return STORE.types["geometry_msgs/msg/PoseStamped"](
        header=_stamp(t_ns), pose=STORE.types["geometry_msgs/msg/Pose"](
            position=Point(x=x, y=y, z=z), orientation=Quaternion(x=1.0, y=0.0, z=0.0, w=0.0)))


def write_push_bag(path: Path, seconds: float = 3.0, start_ns: int = 1_700_000_000 * 10**9) -> Path:
    """What a `record:=true` sim session holds of the push checkpoints' inputs: TCP pose and joint states at
    100 Hz, the sim's cube pose at 30 Hz, stamped at their (log) time."""
    rates = {"/proprio/ee_pose": 100.0, "/proprio/joint_states": 100.0, "/sim/cube_pose": 30.0}
    events = sorted((start_ns + round(i * 1e9 / hz), topic) for topic, hz in rates.items()
                    for i in range(int(seconds * hz)))
    types = {"/proprio/ee_pose": "geometry_msgs/msg/PoseStamped", "/sim/cube_pose": "geometry_msgs/msg/PoseStamped",
             "/proprio/joint_states": "sensor_msgs/msg/JointState"}
    with Writer(path, version=9, storage_plugin=StoragePlugin.MCAP) as writer:
        conns = {topic: writer.add_connection(topic, types[topic], typestore=STORE) for topic in rates}
        for t_ns, topic in events:
            msg = (joint_state(t_ns) if topic == "/proprio/joint_states"
                   else push_pose(t_ns, (0.5, 0.0, 0.3) if topic == "/proprio/ee_pose" else (0.6, 0.1, 0.02)))
            writer.write(conns[topic], t_ns, STORE.serialize_cdr(msg, types[topic]))
    return path
