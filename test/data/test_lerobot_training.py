"""`deploy train-bc` on a LeRobotDataset v3 folder: an episode log exported by `deploy export-lerobot` (checked
against LeRobot's own loader) is read back by the reader (values equal to the parquet's, frames equal to the
MP4's), trains a checkpoint for a few steps, and the checkpoint predicts finite chunks from a dataset row."""
import json

import imageio_ffmpeg
import numpy as np
import pyarrow.parquet as pq
import pytest

from deploy.cli import main
from deploy.data.episodes import list_episodes, read_episode
from deploy.errors import ConfigError
from deploy.learning.lerobot_source import read_lerobot
from deploy.policies.checkpoint import load_checkpoint
from deploy.policies.learned import camera_key
from deploy.sensing.observation import Observation
from test_lerobot_export import CAMERAS, FPS, brute_force_rows, color, write_log

STATE = ("ee_pose", "gripper_width")
SMALL = json.dumps({"d_model": 32, "dim_feedforward": 64, "n_encoder_layers": 1, "n_decoder_layers": 1,
                    "use_vae": False, "vision_channels": [8, 8]})


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """(episode log, its LeRobot export) of three episodes, one with a gap and a burst."""
    tmp = tmp_path_factory.mktemp("lerobot")
    write_log(tmp / "log", incomplete=False)
    assert main(["export-lerobot", str(tmp / "log"), "--output", str(tmp / "ds")]) == 0
    return tmp / "log", tmp / "ds"


def test_reader_gives_the_parquet_values_and_the_video_frames(dataset):
    log, root = dataset
    horizon = 4
    source = read_lerobot(root, STATE, tuple(CAMERAS), horizon)
    episodes = pq.read_table(root / "meta/episodes/chunk-000/file-000.parquet").to_pydict()
    assert source["episodes"] == [0, 1, 2] and source["lengths"] == episodes["length"]
    data = pq.read_table(root / "data/chunk-000/file-000.parquet").to_pydict()
    state = np.asarray(data["observation.state"], np.float32)
    action = np.asarray(data["action"], np.float32)
    n = len(state)
    np.testing.assert_array_equal(source["state_values"]["ee_pose"], state[:, :7])
    np.testing.assert_array_equal(source["state_values"]["gripper_width"], state[:, 7:])
    assert source["actions"].shape == (n, horizon, 8)
    start = 0
    for length in source["lengths"]:  # label of frame t: action rows t..t+H-1 of its episode, the last held
        for t in range(length):
            expected = action[start + np.minimum(t + np.arange(horizon), length - 1)]
            np.testing.assert_array_equal(source["actions"][start + t], expected)
        start += length
    rows = [brute_force_rows(read_episode(s.path).steps["stamp_s"], FPS) for s in list_episodes(log)]
    for camera, (height, width) in CAMERAS.items():
        frames = source["frames"][camera]
        assert frames.shape == (n, height, width, 3) and frames.dtype == np.uint8
        reader = imageio_ffmpeg.read_frames(str(root / f"videos/observation.images.{camera}/chunk-000/file-000.mp4"))
        next(reader)
        video = np.stack([np.frombuffer(f, np.uint8).reshape(height, width, 3) for f in reader])
        np.testing.assert_array_equal(frames, video)  # one frame per row, in order
        means = frames.mean(axis=(1, 2))
        expected = np.concatenate([[color(e, step) for step in r] for e, r in enumerate(rows)])
        np.testing.assert_allclose(means, expected, atol=3)  # each row's frame is its own step's


def test_max_episodes_and_a_missing_feature(dataset):
    _, root = dataset
    assert read_lerobot(root, STATE, ("front",), 2, max_episodes=2)["episodes"] == [0, 1]
    with pytest.raises(ConfigError, match=r"image feature 'observation.images.top' is missing; its features are "
                                          r".*observation.images.front \(video \[48, 64, 3\]\)"):
        read_lerobot(root, STATE, ("top",), 2)
    with pytest.raises(ConfigError, match=r"state feature 'observation.state' has shape \[8\], the policy's state "
                                          r"\['ee_pose'\] needs \(7,\)"):
        read_lerobot(root, ("ee_pose",), (), 2)


def test_a_bad_feature_is_one_line_and_exit_2(dataset, tmp_path, capsys):
    _, root = dataset
    assert main(["train-bc", str(root), "--output", str(tmp_path / "ckpt"), "--steps", "30",
                 "--action-feature", "action.joints"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "action feature 'action.joints' is missing" in err
    assert "observation.state (float32 [8])" in err and not (tmp_path / "ckpt").exists()


def test_train_bc_on_a_lerobot_folder_gives_a_checkpoint_the_policy_runs(dataset, tmp_path, capsys):
    _, root = dataset
    output = tmp_path / "ckpt"
    assert main(["train-bc", str(root), "--output", str(output), "--steps", "30", "--batch-size", "8",
                 "--cameras", "front,wrist", "--image-size", "32", "--arch", SMALL]) == 0
    assert "checkpoint written" in capsys.readouterr().out
    losses = np.loadtxt(output / "loss.csv", delimiter=",", skiprows=1)[:, 1]
    assert len(losses) == 30 and np.isfinite(losses).all()
    policy = load_checkpoint(output, expected_action_space="cartesian")
    meta = policy.metadata
    assert meta.image_keys == ("front", "wrist") and meta.state_keys == STATE and meta.dt_s == pytest.approx(1 / FPS)
    source = read_lerobot(root, STATE, ("front", "wrist"), meta.horizon)
    for row in (0, len(source["actions"]) - 1):
        observation = Observation(0.0, {**{camera_key(c): source["frames"][c][row] for c in ("front", "wrist")},
                                        **{k: source["state_values"][k][row] for k in STATE}}, {})
        chunk = policy.predict_chunk(observation)
        assert chunk.shape == (meta.horizon, 8) and np.isfinite(chunk).all()
