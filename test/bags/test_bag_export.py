"""`deploy export-lerobot BAG`: bags written with `rosbags` (not by our recorder) become LeRobotDataset v3.0 folders,
with the default mapping of this package's topics or a mapping file for another robot's; checked with pyarrow
and the MP4s decoded by imageio, against the values the bag was written with."""
import json

import imageio_ffmpeg
import numpy as np
import pyarrow.parquet as pq
from rosbags.rosbag2 import StoragePlugin
from rosbags.typesys import Stores, get_typestore

from bag_helpers import POSES, image, write_bag
from deploy.cli import main

T0 = 1_700_000_000 * 10**9
STACK = ("/cameras/front/image_raw", "/proprio/joint_states", "/proprio/ee_pose", "/controller/reference",
         "/sim/cube_pose")
DATA = "data/chunk-000/file-000.parquet"
VIDEO = "videos/observation.images.front/chunk-000/file-000.mp4"


def pose_values(t_ns, xyz):
    return [xyz[0] + 0.01 * np.sin(t_ns * 1e-9), xyz[1], xyz[2], 1.0, 0.0, 0.0, 0.0]


def export(tmp_path, source, *args):
    return main(["export-lerobot", str(source), "--output", str(tmp_path / "ds"), "--task", "push", *args])


def test_a_bag_of_our_topics_exports_with_the_default_mapping(tmp_path, capsys):
    """Two episodes split by a 1.5 s gap; rows every 0.1 s hold the samples stamped then."""
    bag = write_bag(tmp_path / "bag", seconds=5.0, joint_hz=50.0, gap_s=(2.0, 3.5), topics=STACK)
    assert export(tmp_path, bag) == 0
    assert "2 episodes" in capsys.readouterr().out
    ds = tmp_path / "ds"
    info = json.loads((ds / "meta/info.json").read_text())
    assert info["total_episodes"] == 2 and info["fps"] == 10
    assert info["features"]["observation.state"]["names"][-1] == "joint_states.gripper"
    assert info["features"]["action"]["shape"] == [7] and info["features"]["observation.environment_state"]
    table = pq.read_table(ds / DATA).to_pydict()
    episodes = np.array(table["episode_index"])
    assert sorted(set(episodes)) == [0, 1]
    starts = {0: T0, 1: T0 + 3_500_000_000}  # the first stamp after the gap
    for row in range(len(episodes)):
        t_ns = starts[episodes[row]] + round(table["timestamp"][row] * 10) * 100_000_000
        if (episodes[row] == 0 and t_ns > T0 + 1_950_000_000) or t_ns > T0 + 4_950_000_000:
            continue  # the grid's last point may lie past the last sample (nearest: the last one)
        np.testing.assert_allclose(table["observation.state"][row],
                                   pose_values(t_ns, POSES["/proprio/ee_pose"]) + [0.04], atol=1e-6)
        np.testing.assert_allclose(table["action"][row], pose_values(t_ns, POSES["/controller/reference"]), atol=1e-6)
    reader = imageio_ffmpeg.read_frames(str(ds / VIDEO))
    assert next(reader)["size"] == (48, 48)
    frames = np.stack([np.frombuffer(frame, np.uint8).reshape(48, 48, 3) for frame in reader])
    assert len(frames) == len(episodes)
    row = int(np.flatnonzero(episodes == 1)[3])  # 0.3 s into episode 1
    expected = image(starts[1] + 300_000_000)
    assert np.abs(frames[row].astype(int) - expected.data.reshape(48, 48, 3)).mean() < 8  # H.264 is lossy


def test_another_robots_bag_exports_through_a_mapping_file(tmp_path):
    """A humble sqlite3 bag with Panda joint names, episodes marked on a topic, fields picked from a file."""
    names = [f"panda_joint{i}" for i in range(1, 8)] + ["panda_finger_joint1"]
    bag = write_bag(tmp_path / "bag", seconds=3.0, joint_hz=50.0, topics=STACK[:4], joint_names=names,
                    storage=StoragePlugin.SQLITE3, store=get_typestore(Stores.ROS2_HUMBLE), markers_s=(0.0, 1.5))
    mapping = tmp_path / "mapping.yaml"
    mapping.write_text("fps: 5\nimages: {wrist: /cameras/front/image_raw}\n"
                       "state:\n  - {topic: /proprio/joint_states, field: position, joints: [panda_joint1, "
                       "panda_finger_joint1]}\naction:\n  - {topic: /controller/reference, field: pose.position}\n"
                       "episodes: {topic: /episode_start}\n")
    assert export(tmp_path, bag, "--mapping", str(mapping)) == 0
    info = json.loads((tmp_path / "ds/meta/info.json").read_text())
    assert info["fps"] == 5 and info["total_episodes"] == 2 and "observation.images.wrist" in info["features"]
    assert info["features"]["observation.state"]["names"] == ["joint_states.panda_joint1",
                                                              "joint_states.panda_finger_joint1"]
    assert info["features"]["action"]["names"] == ["reference.x", "reference.y", "reference.z"]
    table = pq.read_table(tmp_path / "ds" / DATA).to_pydict()
    assert np.allclose(np.array(table["observation.state"])[:, 1], 0.04)  # the finger joint, by name
    assert table["episode_index"].count(0) == table["episode_index"].count(1) == 8  # 1.5 s at 5 fps, both ends


def test_bad_mappings_are_one_line(tmp_path, capsys):
    bag = write_bag(tmp_path / "bag", seconds=0.5, topics=STACK[:2])
    mapping = tmp_path / "mapping.yaml"
    for text, message in (
            (None, f"bag '{bag}' has no topic /controller/reference, /proprio/ee_pose (the export mapping reads "
                   "it; the bag has /cameras/front/image_raw, /proprio/joint_states)"),  # the default mapping's
            ("state: [{topic: /proprio/joint_states, field: position, joints: [finger]}]\n"
             "action: [{topic: /proprio/joint_states, field: velocity}]\n",
             f"bag '{bag}': topic /proprio/joint_states has no joint named 'finger'; its joints: joint1, joint2, "
             "joint3, joint4, joint5, joint6, joint7, gripper"),
            ("state: [{topic: /proprio/joint_states, field: position}]\naction: []\n",
             f"mapping '{mapping}': 'action' needs at least one {{topic, field}} entry"),
            ("state: [{topic: /proprio/joint_states, field: positions}]\n"
             "action: [{topic: /proprio/joint_states, field: velocity}]\n",
             f"bag '{bag}': topic /proprio/joint_states: sensor_msgs/msg/JointState has no field 'positions'")):
        args = []
        if text is not None:
            mapping.write_text(text)
            args = ["--mapping", str(mapping)]
        assert export(tmp_path, bag, *args) == 2
        assert capsys.readouterr().err == f"deploy: error: {message}\n"
    assert not (tmp_path / "ds").exists() and not (tmp_path / "ds.partial").exists()


def test_another_robots_bag_trains_a_policy_through_its_export(tmp_path, capsys):
    """README's workflow for others' data: bag -> export-lerobot --mapping -> train-bc on the folder -> a checkpoint
    the policy loader accepts, reading the mapped camera as its own and predicting finite chunks."""
    from deploy.learning.lerobot_source import read_lerobot
    from deploy.policies.checkpoint import load_checkpoint
    from deploy.policies.learned import camera_key
    from deploy.sensing.observation import Observation

    names = [f"panda_joint{i}" for i in range(1, 8)] + ["panda_finger_joint1"]
    bag = write_bag(tmp_path / "bag", seconds=3.0, joint_hz=50.0, topics=STACK[:4], joint_names=names,
                    storage=StoragePlugin.SQLITE3, store=get_typestore(Stores.ROS2_HUMBLE), markers_s=(0.0, 1.5))
    mapping = tmp_path / "map.yaml"
    width = "{topic: /proprio/joint_states, field: position, joints: [panda_finger_joint1]}"
    mapping.write_text(f"fps: 10\nimages: {{wrist: /cameras/front/image_raw}}\n"
                       f"state: [{{topic: /proprio/ee_pose, field: pose}}, {width}]\n"
                       f"action: [{{topic: /controller/reference, field: pose}}, {width}]\n"
                       "episodes: {topic: /episode_start}\n")
    assert export(tmp_path, bag, "--mapping", str(mapping)) == 0
    checkpoint = tmp_path / "ckpt"
    assert main(["train-bc", str(tmp_path / "ds"), "--output", str(checkpoint), "--cameras", "wrist",
                 "--image-features", "observation.images.wrist", "--steps", "30", "--batch-size", "8",
                 "--image-size", "32", "--arch", json.dumps({"d_model": 32, "dim_feedforward": 64,
                                                             "n_encoder_layers": 1, "n_decoder_layers": 1,
                                                             "use_vae": False, "vision_channels": [8, 8]})]) == 0
    policy = load_checkpoint(checkpoint, expected_action_space="cartesian")
    assert policy.metadata.image_keys == ("wrist",) and policy.metadata.dt_s == 0.1
    source = read_lerobot(tmp_path / "ds", ("ee_pose", "gripper_width"), ("wrist",), policy.metadata.horizon)
    assert source["episodes"] == [0, 1]
    observation = Observation(0.0, {camera_key("wrist"): source["frames"]["wrist"][3],
                                    "ee_pose": source["state_values"]["ee_pose"][3],
                                    "gripper_width": source["state_values"]["gripper_width"][3]}, {})
    chunk = policy.predict_chunk(observation)
    assert chunk.shape == (policy.metadata.horizon, 8) and np.isfinite(chunk).all()
