"""`deploy export-lerobot` on a real episode log written by EpisodeWriter: the output is checked field by field
against the LeRobotDataset v3.0 layout (LeRobot 0.4's writer) with pyarrow, and its MP4s decoded by imageio."""
import json

import imageio_ffmpeg
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from deploy.cli import main
from deploy.data.episodes import EpisodeWriter, list_episodes, read_episode
from deploy.data.lerobot import nearest_steps_on_grid

FPS = 20
TASK = "push the cube onto the green square"
CAMERAS = {"front": (48, 64), "wrist": (32, 32)}  # (H, W)
T0_S = 1.795e9  # node-clock stamps are large: timestamps must come out relative to each episode's start
EPISODE_DTS = {  # log index -> seconds between steps: jittered, a gap (repeated rows), a burst (dropped steps)
    0: 0.05 + 0.004 * np.sin(np.arange(19)),
    1: np.array([0.05] * 5 + [0.23] + [0.05] * 4 + [0.004] * 3 + [0.05] * 6),
    2: np.full(9, 0.05),  # fails
}
SUCCESSFUL = {0: True, 1: True, 2: False}


def color(episode: int, step: int) -> np.ndarray:
    """The flat RGB of a step's frames: step in red, episode in blue, so a decoded frame names its step."""
    return np.array([20 + 6 * step, 128, 40 + 60 * episode], np.uint8)


def step_values(episode: int, step: int, stamp_s: float, n_steps: int) -> dict:
    rng = np.random.default_rng([episode, step])
    done = SUCCESSFUL[episode] and step >= n_steps - 3
    return {"stamp_s": np.float64(stamp_s), "ee_pose": rng.normal(size=7), "gripper_width": rng.uniform(0, 0.08, 1),
            "joint_positions": rng.normal(size=7), "joint_velocities": rng.normal(size=7),
            "cube_pose": rng.normal(size=7), "executed_action": rng.normal(size=8),
            "reference_pose": rng.normal(size=7), "policy_chunk": rng.normal(size=(16, 8)),
            "policy_chunk_stamp_s": np.float64(stamp_s - 0.02),
            "human_action": rng.normal(size=8) if step % 4 == 1 else np.full(8, np.nan),
            "intervention": np.float64(step % 4 == 1), "success": np.float64(done), "reward": np.float64(done),
            "weight_version": "v3", "stamp_front_s": np.float64(stamp_s - 0.03)}


def write_log(root, episodes=EPISODE_DTS, incomplete: bool = True) -> None:
    """The episodes of EPISODE_DTS, closed with their outcome; then one left open (the writer died)."""
    for episode, dts in episodes.items():
        stamps = T0_S + 100 * episode + np.concatenate([[0.0], np.cumsum(dts)])
        with EpisodeWriter(root, {"seed": episode, "cameras": list(CAMERAS), "step_rate_hz": float(FPS)},
                           frame_codec="png") as writer:  # exact frames: the video's own loss is what is tested
            for step, stamp in enumerate(stamps):
                frames = {camera: np.broadcast_to(color(episode, step), (*shape, 3)).copy()
                          for camera, shape in CAMERAS.items()}
                writer.add_step(step_values(episode, step, stamp, len(stamps)), frames)
            writer.close({"success": SUCCESSFUL[episode], "reason": "test"})
    if incomplete:
        writer = EpisodeWriter(root, {"step_rate_hz": float(FPS)})
        writer.add_step(step_values(2, 0, T0_S, 1), {camera: np.zeros((*shape, 3), np.uint8)
                                                     for camera, shape in CAMERAS.items()})


def brute_force_rows(stamps_s: np.ndarray, fps: float) -> np.ndarray:
    """For each grid time, the step with the smallest |stamp - time| (the first of equals)."""
    grid = stamps_s[0] + np.arange(round((stamps_s[-1] - stamps_s[0]) * fps) + 1) / fps
    return np.array([np.argmin(np.abs(stamps_s - t)) for t in grid])


def test_nearest_steps_on_the_grid():
    rng = np.random.default_rng(3)
    for _ in range(50):
        stamps = T0_S + np.cumsum(rng.exponential(0.05, rng.integers(1, 80)))
        np.testing.assert_array_equal(nearest_steps_on_grid(stamps, FPS), brute_force_rows(stamps, FPS))
    # a 0.2 s gap repeats the step before/after it; a burst keeps only the step nearest each grid time
    np.testing.assert_array_equal(nearest_steps_on_grid([0.0, 0.05, 0.25, 0.30], FPS), [0, 1, 1, 1, 2, 2, 3])
    np.testing.assert_array_equal(nearest_steps_on_grid([0.0, 0.049, 0.05, 0.051, 0.1], FPS), [0, 2, 4])
    np.testing.assert_array_equal(nearest_steps_on_grid([5.0], FPS), [0])


def export(tmp_path, *args) -> int:
    return main(["export-lerobot", str(tmp_path / "log"), "--output", str(tmp_path / "ds"), *args])


def test_export_matches_the_v3_layout_field_by_field(tmp_path, capsys):
    write_log(tmp_path / "log")
    assert export(tmp_path, "--repo-id", "test/push", "--robot-type", "franka_panda") == 0
    out = capsys.readouterr().out
    assert "skipped log episode 3: incomplete" in out and "3 episodes" in out
    root = tmp_path / "ds"
    assert not (tmp_path / "ds.partial").exists()
    episodes = [read_episode(summary.path) for summary in list_episodes(tmp_path / "log")[:3]]
    rows = [brute_force_rows(episode.steps["stamp_s"], FPS) for episode in episodes]
    lengths = [len(r) for r in rows]
    total = sum(lengths)
    repeated = sum(int(np.sum(np.diff(r) == 0)) for r in rows)
    dropped = sum(episode.num_steps - len(np.unique(r)) for episode, r in zip(episodes, rows))
    assert repeated > 0 and dropped > 0  # episode 1's gap repeats steps, its burst drops some
    assert f"{repeated} repeated rows, {dropped} dropped steps" in out

    info = json.loads((root / "meta/info.json").read_text())
    assert {k: v for k, v in info.items() if k != "features"} == {
        "codebase_version": "v3.0", "robot_type": "franka_panda", "total_episodes": 3, "total_frames": total,
        "total_tasks": 1, "chunks_size": 1000, "data_files_size_in_mb": 100, "video_files_size_in_mb": 200,
        "fps": FPS, "splits": {"train": "0:3"},
        "data_path": "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet",
        "video_path": "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"}
    features = info["features"]
    pose = ["x", "y", "z", "qx", "qy", "qz", "qw"]
    assert features["observation.state"] == {"dtype": "float32", "shape": [8], "names": pose + ["gripper_width"]}
    assert features["action"] == {"dtype": "float32", "shape": [8], "names": pose + ["gripper_width"]}
    assert features["observation.environment_state"]["shape"] == [7]
    for key in ("complementary_info.is_intervention", "next.success", "next.done"):
        assert features[key] == {"dtype": "bool", "shape": [1], "names": None}
    for key, dtype in [("timestamp", "float32"), ("frame_index", "int64"), ("episode_index", "int64"),
                       ("index", "int64"), ("task_index", "int64"), ("next.reward", "float32")]:
        assert features[key] == {"dtype": dtype, "shape": [1], "names": None}
    for camera, (height, width) in CAMERAS.items():
        video = features[f"observation.images.{camera}"]
        assert video["dtype"] == "video" and video["shape"] == [height, width, 3]
        assert video["names"] == ["height", "width", "channels"]
        assert video["info"] == {"video.height": height, "video.width": width, "video.codec": "h264",
                                 "video.pix_fmt": "yuv420p", "video.is_depth_map": False, "video.fps": FPS,
                                 "video.channels": 3, "has_audio": False}

    data = pq.read_table(root / "data/chunk-000/file-000.parquet")
    numeric = [key for key, feature in features.items() if feature["dtype"] != "video"]
    assert data.column_names == numeric
    for key in numeric:
        want = {"float32": pa.float32(), "int64": pa.int64(), "bool": pa.bool_()}[features[key]["dtype"]]
        shape = features[key]["shape"][0]
        assert data.schema.field(key).type == (want if shape == 1 else pa.list_(want, shape)), key
    hf = json.loads(data.schema.metadata[b"huggingface"])["info"]["features"]
    assert hf["action"] == {"feature": {"dtype": "float32", "_type": "Value"}, "length": 8, "_type": "List"}
    column = {key: np.array(data.column(key).to_pylist()) for key in numeric}
    np.testing.assert_array_equal(column["index"], np.arange(total))
    np.testing.assert_array_equal(column["episode_index"], np.repeat([0, 1, 2], lengths))
    np.testing.assert_array_equal(column["frame_index"], np.concatenate([np.arange(n) for n in lengths]))
    np.testing.assert_allclose(column["timestamp"], column["frame_index"] / FPS, atol=1e-6)
    assert (column["task_index"] == 0).all()
    starts = np.cumsum([0] + lengths)
    for e, (episode, r) in enumerate(zip(episodes, rows)):
        part = slice(starts[e], starts[e + 1])
        assert np.all(np.diff(column["timestamp"][part]) > 0)
        steps = episode.steps
        np.testing.assert_allclose(column["observation.state"][part],
                                   np.concatenate([steps["ee_pose"][r], steps["gripper_width"][r]], 1), rtol=1e-6)
        np.testing.assert_allclose(column["action"][part], steps["executed_action"][r], rtol=1e-6)
        np.testing.assert_allclose(column["observation.environment_state"][part], steps["cube_pose"][r], rtol=1e-6)
        np.testing.assert_allclose(column["complementary_info.human_action"][part], steps["human_action"][r],
                                   rtol=1e-6)  # NaN where the operator was silent, in the same places
        np.testing.assert_array_equal(column["complementary_info.is_intervention"][part], steps["intervention"][r] > 0)
        following = np.append(r[1:], r[-1])  # next.*: what the row's action led to
        np.testing.assert_array_equal(column["next.reward"][part], steps["reward"][following])
        np.testing.assert_array_equal(column["next.success"][part], steps["success"][following] > 0)
        np.testing.assert_array_equal(column["next.done"][part], np.arange(lengths[e]) == lengths[e] - 1)
    assert column["next.success"][starts[1] - 1] and not column["next.success"][starts[3] - 1]

    meta = pq.read_table(root / "meta/episodes/chunk-000/file-000.parquet").to_pylist()
    assert [m["episode_index"] for m in meta] == [0, 1, 2]
    for e, m in enumerate(meta):
        assert m["tasks"] == [TASK] and m["length"] == lengths[e]
        assert (m["dataset_from_index"], m["dataset_to_index"]) == (starts[e], starts[e + 1])
        assert (m["data/chunk_index"], m["data/file_index"], m["meta/episodes/chunk_index"]) == (0, 0, 0)
        for camera in CAMERAS:
            key = f"videos/observation.images.{camera}"
            assert (m[f"{key}/chunk_index"], m[f"{key}/file_index"]) == (0, 0)
            assert m[f"{key}/from_timestamp"] == pytest.approx(starts[e] / FPS)
            assert m[f"{key}/to_timestamp"] == pytest.approx(starts[e + 1] / FPS)
        assert m["stats/observation.state/count"] == [lengths[e]]
        assert np.array(m["stats/observation.images.front/mean"]).shape == (3, 1, 1)

    tasks = pq.read_table(root / "meta/tasks.parquet")  # pandas layout: task_index indexed by the task text
    assert tasks.to_pydict() == {"task_index": [0], "__index_level_0__": [TASK]}
    assert json.loads(tasks.schema.metadata[b"pandas"])["index_columns"] == ["__index_level_0__"]

    stats = json.loads((root / "meta/stats.json").read_text())
    for key in numeric:
        assert set(stats[key]) == {"min", "max", "mean", "std", "count", "q01", "q10", "q50", "q90", "q99"}, key
    for key in ("observation.state", "action", "timestamp", "next.reward"):
        values = column[key].reshape(total, -1).astype(np.float64)
        assert stats[key]["count"] == [total]
        np.testing.assert_allclose(stats[key]["mean"], values.mean(0), rtol=1e-5, atol=1e-9)
        np.testing.assert_allclose(stats[key]["std"], values.std(0), rtol=1e-5, atol=1e-9)
        np.testing.assert_allclose(stats[key]["min"], values.min(0), rtol=1e-6)
        np.testing.assert_allclose(stats[key]["max"], values.max(0), rtol=1e-6)
    human = column["complementary_info.human_action"]
    commanded = human[np.isfinite(human).all(1)]
    assert stats["complementary_info.human_action"]["count"] == [len(commanded)] and 0 < len(commanded) < total
    np.testing.assert_allclose(stats["complementary_info.human_action"]["mean"], commanded.mean(0), rtol=1e-5)
    for camera in CAMERAS:
        image = stats[f"observation.images.{camera}"]
        assert np.array(image["mean"]).shape == (3, 1, 1) and 0 <= np.min(image["min"]) <= np.max(image["max"]) <= 1
        assert np.array(image["mean"])[1, 0, 0] == pytest.approx(128 / 255, abs=3 / 255)  # green is constant

    for camera, (height, width) in CAMERAS.items():
        path = root / f"videos/observation.images.{camera}/chunk-000/file-000.mp4"
        assert imageio_ffmpeg.count_frames_and_secs(str(path)) == (total, pytest.approx(total / FPS, abs=1e-3))
        reader = imageio_ffmpeg.read_frames(str(path))
        assert next(reader)["size"] == (width, height)
        frames = np.stack([np.frombuffer(frame, np.uint8).reshape(height, width, 3) for frame in reader])
        assert frames.shape == (total, height, width, 3)
        for e, r in enumerate(rows):
            for k, step in enumerate(r):  # the frame LeRobot finds at from_timestamp + k/fps is the row's step
                np.testing.assert_allclose(frames[starts[e] + k].mean((0, 1)), color(e, step), atol=3)


def test_only_successful_leaves_failed_episodes_out(tmp_path, capsys):
    write_log(tmp_path / "log", incomplete=False)
    assert export(tmp_path, "--only-successful") == 0
    assert "skipped log episode 2: not successful" in capsys.readouterr().out
    info = json.loads((tmp_path / "ds/meta/info.json").read_text())
    meta = pq.read_table(tmp_path / "ds/meta/episodes/chunk-000/file-000.parquet")
    assert info["total_episodes"] == 2 and meta.column("episode_index").to_pylist() == [0, 1]
    data = pq.read_table(tmp_path / "ds/data/chunk-000/file-000.parquet", columns=["index", "episode_index"])
    assert info["total_frames"] == data.num_rows == meta.column("dataset_to_index").to_pylist()[-1]
    assert set(data.column("episode_index").to_pylist()) == {0, 1}


def test_fps_option_sets_the_grid(tmp_path):
    write_log(tmp_path / "log", {0: EPISODE_DTS[0]}, incomplete=False)
    assert export(tmp_path, "--fps", "10") == 0
    stamps = read_episode(list_episodes(tmp_path / "log")[0].path).steps["stamp_s"]
    info = json.loads((tmp_path / "ds/meta/info.json").read_text())
    assert info["fps"] == 10 and info["total_frames"] == len(brute_force_rows(stamps, 10))


def bad_field(root) -> None:
    write_log(root, {0: EPISODE_DTS[0]}, incomplete=False)
    with EpisodeWriter(root, {"step_rate_hz": float(FPS)}) as writer:  # a second episode without a cube pose
        values = step_values(0, 0, T0_S, 1)
        del values["cube_pose"]
        writer.add_step(values, {camera: np.zeros((*shape, 3), np.uint8) for camera, shape in CAMERAS.items()})


@pytest.mark.parametrize("make, args, message", [
    (lambda root: None, [], "does not exist"),
    (lambda root: write_log(root, {2: EPISODE_DTS[2]}, incomplete=False), ["--only-successful"], "no episode to export"),
    (bad_field, [], "field 'cube_pose' must have per-step shape (7,), got missing"),
    (lambda root: write_log(root, {0: EPISODE_DTS[0]}, incomplete=False), ["--task", " "], "--task"),
    (lambda root: write_log(root, {0: EPISODE_DTS[0]}, incomplete=False), ["--fps", "0"], "--fps"),
])
def test_bad_input_is_one_line_and_exit_2_leaving_nothing(tmp_path, capsys, make, args, message):
    make(tmp_path / "log")
    assert export(tmp_path, *args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("deploy: error:") and message in err, err
    assert not (tmp_path / "ds").exists() and not (tmp_path / "ds.partial").exists()


def test_refuses_to_write_into_a_non_empty_output(tmp_path, capsys):
    write_log(tmp_path / "log", {0: EPISODE_DTS[0]}, incomplete=False)
    (tmp_path / "ds").mkdir()
    (tmp_path / "ds/keep.txt").write_text("mine")
    assert export(tmp_path) == 2
    assert "already exists and is not an empty folder" in capsys.readouterr().err
    assert [p.name for p in (tmp_path / "ds").iterdir()] == ["keep.txt"]
