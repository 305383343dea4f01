"""Episode log (deploy.data.episodes) -> LeRobotDataset v3.0 folder, as LeRobot 0.4's own writer lays it out:

    meta/info.json  meta/stats.json  meta/tasks.parquet  meta/episodes/chunk-000/file-000.parquet
    data/chunk-000/file-000.parquet  videos/observation.images.<camera>/chunk-000/file-000.mp4  README.md

Every episode goes into the one data file and one MP4 per camera, one after the other (v3 concatenates episodes;
the episodes table says where each starts). The limits in info.json are LeRobot's defaults; an export larger
than them still loads, it is just not split into more files.

Time: LeRobot assumes frame k of an episode is at k/fps, and finds video frames by that timestamp. Logged steps
are only roughly periodic (a loaded machine logs late, then catches up), so each episode is resampled onto the
fixed grid t0 + k/fps (t0 = the first step's `stamp_s`, fps = the log's `step_rate_hz` or --fps, k up to the
duration): row k takes every field and camera frame of the step whose `stamp_s` is nearest to its grid time.
A gap in the log repeats a step, a burst drops steps; `ExportSummary` counts both and the worst stamp offset.

Features: observation.state = ee pose (xyz, quat xyzw) + gripper width; action = the executed action (TCP pose
+ gripper); observation.environment_state = the cube pose (LeRobot's name for privileged environment state);
complementary_info.is_intervention and complementary_info.human_action (NaN while the operator is silent;
LeRobot's RL buffer passes complementary_info.* through); next.reward / next.success = the logged reward /
success of the following row (the result of this row's action; the last row keeps its own), next.done on the
last row. Stats are LeRobot's (min/max/mean/std/count/q01..q99 per episode, aggregated as LeRobot does; images
per channel in [0, 1] from up to 100 evenly spaced frames; NaN rows left out of the count).
"""
from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import imageio_ffmpeg
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from deploy.data.episodes import list_episodes, read_episode
from deploy.errors import ConfigError

CODEBASE_VERSION = "v3.0"
CHUNKS_SIZE, DATA_FILES_SIZE_IN_MB, VIDEO_FILES_SIZE_IN_MB = 1000, 100, 200  # LeRobot's defaults
DATA_PATH = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
VIDEO_PATH = "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
EPISODES_PATH, TASKS_PATH = "meta/episodes/chunk-000/file-000.parquet", "meta/tasks.parquet"
QUANTILES = (0.01, 0.10, 0.50, 0.90, 0.99)
QUANTILE_NAMES = [f"q{round(q * 100):02d}" for q in QUANTILES]
IMAGE_STATS_FRAMES = 100
VIDEO_OPTIONS = ["-crf", "23", "-g", "2"]  # keyframe every 2 frames, as LeRobot encodes: cheap random access
POSE = ["x", "y", "z", "qx", "qy", "qz", "qw"]
LOG_FIELDS = {"stamp_s": (), "ee_pose": (7,), "gripper_width": (1,), "cube_pose": (7,), "executed_action": (8,),
              "human_action": (8,), "intervention": (), "success": (), "reward": ()}  # what an export reads
LOG_FEATURES = {  # key -> (dtype, names); shape = len(names); column order of the data file
    "observation.state": ("float32", POSE + ["gripper_width"]),
    "observation.environment_state": ("float32", [f"cube_{name}" for name in POSE]),
    "action": ("float32", POSE + ["gripper_width"]),
    "complementary_info.human_action": ("float32", POSE + ["gripper_width"]),
    "complementary_info.is_intervention": ("bool", None),
    "next.reward": ("float32", None),
    "next.success": ("bool", None),
    "next.done": ("bool", None),
}
LEROBOT_COLUMNS = {  # LeRobot's own columns, after every export's features
    "timestamp": ("float32", None),
    "frame_index": ("int64", None),
    "episode_index": ("int64", None),
    "index": ("int64", None),
    "task_index": ("int64", None),
}


@dataclass
class ExportSummary:
    output: Path
    fps: int
    source_episodes: list[int]  # log index of dataset episode 0, 1, ...
    skipped: dict[int, str]  # log index -> why it was left out
    total_frames: int = 0
    repeated_rows: int = 0  # rows that repeat the previous row's step (a gap in the log)
    dropped_steps: int = 0  # steps no row took (a burst in the log)
    max_stamp_offset_s: float = 0.0  # worst |step stamp - grid time| of a row
    cameras: dict[str, tuple] = field(default_factory=dict)  # camera -> (H, W, 3)


def nearest_steps_on_grid(stamps_s: np.ndarray, fps: float) -> np.ndarray:
    """(K,) index of the step whose stamp is nearest to stamps_s[0] + k/fps, k = 0 .. round(duration * fps)."""
    stamps_s = np.asarray(stamps_s, np.float64)
    if len(stamps_s) == 1:
        return np.zeros(1, np.int64)
    grid = stamps_s[0] + np.arange(int(np.floor((stamps_s[-1] - stamps_s[0]) * fps + 0.5)) + 1) / fps
    right = np.clip(np.searchsorted(stamps_s, grid), 1, len(stamps_s) - 1)
    left = right - 1
    return np.where(grid - stamps_s[left] <= stamps_s[right] - grid, left, right).astype(np.int64)


def _feature_stats(values: np.ndarray) -> dict[str, np.ndarray]:
    """LeRobot's per-episode stats of (N, D) values, or per channel of (N, H, W, C) images as (C, 1, 1);
    rows holding a NaN are left out (count says how many remain)."""
    axis, shape = ((0, 1, 2), (values.shape[-1], 1, 1)) if values.ndim == 4 else (0, values.shape[1:])
    rows = values[np.isfinite(values.reshape(len(values), -1)).all(axis=1)].astype(np.float64)
    if len(rows) == 0:
        return {**{name: np.zeros(shape) for name in ["min", "max", "mean", "std", *QUANTILE_NAMES]},
                "count": np.array([0])}
    stats = {"min": rows.min(axis), "max": rows.max(axis), "mean": rows.mean(axis), "std": rows.std(axis),
             **dict(zip(QUANTILE_NAMES, np.quantile(rows, QUANTILES, axis=axis)))}
    return {**{name: value.reshape(shape) for name, value in stats.items()}, "count": np.array([len(rows)])}


def _aggregate_stats(per_episode: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """LeRobot's aggregation: count-weighted mean and quantiles, pooled variance, min of mins, max of maxes."""
    used = [stats for stats in per_episode if stats["count"][0] > 0]
    if not used:
        return per_episode[0]
    counts = np.array([stats["count"][0] for stats in used], np.float64)
    weights = (counts / counts.sum()).reshape(-1, *[1] * np.ndim(used[0]["mean"]))
    stack = {name: np.stack([stats[name] for stats in used]) for name in used[0]}
    mean = (stack["mean"] * weights).sum(axis=0)
    variance = ((stack["std"] ** 2 + (stack["mean"] - mean) ** 2) * weights).sum(axis=0)
    out = {"min": stack["min"].min(axis=0), "max": stack["max"].max(axis=0), "mean": mean,
           "std": np.sqrt(variance), "count": np.array([int(counts.sum())])}
    out.update({name: (stack[name] * weights).sum(axis=0) for name in QUANTILE_NAMES})
    return out


def _episode_columns(episode, rows: np.ndarray) -> dict:
    """The LOG_FEATURES columns of one episode, resampled onto `rows` (step indices)."""
    steps = {name: np.asarray(episode.steps[name])[rows] for name in LOG_FIELDS}
    following = np.append(np.arange(1, len(rows)), len(rows) - 1)  # the next row; the last row keeps its own
    frame_index = np.arange(len(rows))
    return {
        "observation.state": np.concatenate([steps["ee_pose"], steps["gripper_width"]], axis=1),
        "observation.environment_state": steps["cube_pose"],
        "action": steps["executed_action"],
        "complementary_info.human_action": steps["human_action"],
        "complementary_info.is_intervention": steps["intervention"] > 0.5,
        "next.reward": steps["reward"][following],
        "next.success": steps["success"][following] > 0.5,
        "next.done": frame_index == len(rows) - 1,
    }


def _check_episode(episode, cameras: dict[str, tuple]) -> None:
    """ConfigError naming the episode and the field or camera that does not fit the export."""
    where = f"episode {episode.index} ({episode.path})"
    for name, shape in LOG_FIELDS.items():
        values = episode.steps.get(name)
        if not isinstance(values, np.ndarray) or values.shape[1:] != shape:
            got = "missing" if values is None else "text" if isinstance(values, list) else f"{values.shape[1:]}"
            raise ConfigError(f"{where}: field '{name}' must have per-step shape {shape}, got {got}")
    if np.any(np.diff(episode.steps["stamp_s"]) < 0) or not np.all(np.isfinite(episode.steps["stamp_s"])):
        raise ConfigError(f"{where}: 'stamp_s' is not finite and non-decreasing")
    if episode.cameras != cameras:
        raise ConfigError(f"{where}: cameras {episode.cameras} differ from the first exported episode's {cameras}")


def _fps(meta: dict, where: str) -> int:
    rate = meta.get("step_rate_hz")
    if not isinstance(rate, (int, float)) or rate <= 0 or abs(rate - round(rate)) > 1e-6:
        raise ConfigError(f"{where}: meta.json step_rate_hz must be a positive whole number (the fps), got {rate!r}")
    return round(rate)


def _open_video(path: Path, shape: tuple, fps: int):
    height, width, _ = shape
    if height % 2 or width % 2:
        raise ConfigError(f"camera frames {width}x{height}: H.264 (yuv420p) needs an even width and height")
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = imageio_ffmpeg.write_frames(str(path), (width, height), fps=fps, codec="libx264", quality=None,
                                         pix_fmt_out="yuv420p", macro_block_size=1, ffmpeg_log_level="error",
                                         output_params=VIDEO_OPTIONS)
    writer.send(None)  # starts ffmpeg
    return writer


def _arrow_column(values: np.ndarray, dtype: str) -> pa.Array:
    values = values.astype(dtype)
    if values.ndim == 1:
        return pa.array(values)
    return pa.FixedSizeListArray.from_arrays(pa.array(values.reshape(-1)), values.shape[1])


def _hf_features(features: dict) -> dict:
    """The `huggingface` schema metadata LeRobot's writer (HF datasets) puts on the data file."""
    return {key: {"dtype": dtype, "_type": "Value"} if names is None
            else {"feature": {"dtype": dtype, "_type": "Value"}, "length": len(names), "_type": "List"}
            for key, (dtype, names) in features.items()}


def _write_tasks(path: Path, tasks: list[str]) -> None:
    """pandas' parquet layout, as LeRobot writes it (DataFrame of task_index indexed by the task text)."""
    index = "__index_level_0__"
    pandas_meta = {"index_columns": [index], "column_indexes": [], "attributes": {}, "pandas_version": "2.2.3",
                   "creator": {"library": "pyarrow", "version": pa.__version__},
                   "columns": [{"name": "task_index", "field_name": "task_index", "pandas_type": "int64",
                                "numpy_type": "int64", "metadata": None},
                               {"name": None, "field_name": index, "pandas_type": "unicode",
                                "numpy_type": "object", "metadata": None}]}
    table = pa.table({"task_index": pa.array(range(len(tasks)), pa.int64()), index: pa.array(tasks, pa.string())})
    pq.write_table(table.replace_schema_metadata({"pandas": json.dumps(pandas_meta)}), path)


def _json(obj) -> str:
    return json.dumps(obj, indent=4, default=lambda value: value.tolist())


def check_output(output: str | Path, task: str, fps: int | None) -> Path:
    """The resolved output folder; ConfigError for options no export can take."""
    output = Path(output).resolve()
    if fps is not None and fps <= 0:
        raise ConfigError(f"--fps must be positive, got {fps}")
    if output.exists() and (not output.is_dir() or any(output.iterdir())):
        raise ConfigError(f"--output {output} already exists and is not an empty folder")
    if not task.strip():
        raise ConfigError("--task must not be empty")
    return output


def export_lerobot(log_root: str | Path, output: str | Path, task: str, only_successful: bool = False,
                   fps: int | None = None, robot_type: str | None = None, repo_id: str | None = None) -> ExportSummary:
    """Write the complete episodes under `log_root` (only successful ones if asked) as a LeRobotDataset v3.0
    folder `output`, which must not exist or be empty. Built in `<output>.partial`, renamed when whole.
    `fps` (default: the log's step_rate_hz, which every episode must then share) sets the resampling grid."""
    output = check_output(output, task, fps)
    chosen, skipped = [], {}
    for summary in list_episodes(log_root):
        if not summary.complete or summary.num_steps == 0:
            skipped[summary.index] = "incomplete (no outcome.json)" if not summary.complete else "no steps"
        elif only_successful and not summary.outcome.get("success"):
            skipped[summary.index] = "not successful"
        else:
            chosen.append(summary.path)
    if not chosen:
        raise ConfigError(f"{log_root}: no episode to export ({len(skipped)} skipped: "
                          f"{', '.join(sorted(set(skipped.values())))})")
    first = read_episode(chosen[0])
    cameras = dict(first.cameras)
    result = ExportSummary(output, fps or _fps(first.meta, f"episode {first.index}"), [], skipped, cameras=cameras)
    write_dataset(_log_episodes(chosen, cameras, result, rate_from_log=fps is None), LOG_FEATURES, task, result,
                  robot_type, repo_id, f"the episode log {Path(log_root).resolve()}")
    return result


def write_dataset(episodes, features: dict, task: str, result: ExportSummary, robot_type: str | None,
                  repo_id: str | None, source: str) -> None:
    """Write `episodes` — (source index, {feature: (K, ...) column}, {camera: (K, H, W, 3) uint8 frames}), on
    the result.fps grid — as a LeRobotDataset v3.0 folder result.output: built in `<output>.partial`, renamed
    when whole. `features`: key -> (dtype, names) of the columns, in order; `source` says where they came from."""
    output = result.output
    staging = output.with_name(output.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        _write_dataset(staging, episodes, features, task, result)
        _write_meta(staging, result, task, robot_type, repo_id or f"local/{output.name}", source, features)
        if output.exists():
            output.rmdir()
        staging.rename(output)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _log_episodes(paths: list[Path], cameras: dict, result: ExportSummary, rate_from_log: bool):
    """The logged episodes at `paths`, checked and resampled onto the result.fps grid (counted in `result`)."""
    fps = result.fps
    for path in paths:
        episode = read_episode(path)
        _check_episode(episode, cameras)
        if rate_from_log and _fps(episode.meta, f"episode {episode.index}") != fps:
            raise ConfigError(f"episode {episode.index}: step_rate_hz differs from the first episode's {fps} Hz")
        rows = nearest_steps_on_grid(episode.steps["stamp_s"], fps)
        offsets = episode.steps["stamp_s"][rows] - (episode.steps["stamp_s"][0] + np.arange(len(rows)) / fps)
        result.max_stamp_offset_s = max(result.max_stamp_offset_s, float(np.abs(offsets).max()))
        result.repeated_rows += int(np.sum(rows[1:] == rows[:-1]))
        result.dropped_steps += episode.num_steps - len(np.unique(rows))
        yield episode.index, _episode_columns(episode, rows), {camera: episode.frames(camera, rows)
                                                               for camera in cameras}


def _write_dataset(root: Path, episodes, features: dict, task: str, result: ExportSummary) -> None:
    fps, cameras = result.fps, result.cameras
    columns_spec = {**features, **LEROBOT_COLUMNS}
    video_keys = {camera: f"observation.images.{camera}" for camera in cameras}
    videos = {camera: _open_video(root / VIDEO_PATH.format(video_key=key, chunk_index=0, file_index=0),
                                  cameras[camera], fps) for camera, key in video_keys.items()}
    columns, episode_rows, episode_stats = [], [], []
    try:
        for episode_index, (source_index, data, frames_by_camera) in enumerate(episodes):
            length = len(next(iter(data.values())))
            frame_index = np.arange(length)
            data = {**data, "timestamp": frame_index / fps, "frame_index": frame_index,
                    "episode_index": np.full(length, episode_index), "index": result.total_frames + frame_index,
                    "task_index": np.zeros(length, np.int64)}
            stats = {key: _feature_stats(values.reshape(len(values), -1)) for key, values in data.items()}
            video_from_s = result.total_frames / fps
            for camera, key in video_keys.items():
                frames = frames_by_camera[camera]
                for frame in frames:
                    videos[camera].send(np.ascontiguousarray(frame))
                picks = np.unique(np.linspace(0, len(frames) - 1, min(IMAGE_STATS_FRAMES, len(frames))).round())
                stats[key] = _feature_stats(frames[picks.astype(int)] / 255.0)
            episode_rows.append({
                "episode_index": episode_index, "tasks": [task], "length": length,
                "data/chunk_index": 0, "data/file_index": 0,
                "dataset_from_index": result.total_frames, "dataset_to_index": result.total_frames + length,
                **{f"videos/{key}/{name}": value for key in video_keys.values() for name, value in
                   [("chunk_index", 0), ("file_index", 0), ("from_timestamp", video_from_s),
                    ("to_timestamp", video_from_s + length / fps)]},
                **{f"stats/{key}/{name}": value.tolist() for key, feature in stats.items()
                   for name, value in feature.items()},
                "meta/episodes/chunk_index": 0, "meta/episodes/file_index": 0})
            columns.append(data)
            episode_stats.append(stats)
            result.source_episodes.append(source_index)
            result.total_frames += length
    finally:
        for writer in videos.values():
            writer.close()
    if not columns:
        raise ConfigError("no episode to export")
    data = pa.table({key: _arrow_column(np.concatenate([part[key] for part in columns]), dtype)
                     for key, (dtype, _) in columns_spec.items()})
    data = data.replace_schema_metadata({"huggingface": json.dumps({"info": {"features": _hf_features(columns_spec)}})})
    (root / DATA_PATH.format(chunk_index=0, file_index=0)).parent.mkdir(parents=True)
    pq.write_table(data, root / DATA_PATH.format(chunk_index=0, file_index=0))
    (root / EPISODES_PATH).parent.mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(episode_rows), root / EPISODES_PATH)
    _write_tasks(root / TASKS_PATH, [task])
    stats = {key: _aggregate_stats([episode[key] for episode in episode_stats]) for key in episode_stats[0]}
    (root / "meta/stats.json").write_text(_json(stats))


def _write_meta(root: Path, result: ExportSummary, task: str, robot_type: str | None, repo_id: str,
                source: str, features: dict) -> None:
    out = {}
    for key, (dtype, names) in {**features, **LEROBOT_COLUMNS}.items():
        if key == "timestamp":  # cameras before LeRobot's own columns, as its writer orders them
            for camera, (height, width, channels) in result.cameras.items():
                out[f"observation.images.{camera}"] = {
                    "dtype": "video", "shape": [height, width, channels], "names": ["height", "width", "channels"],
                    "info": {"video.height": height, "video.width": width, "video.codec": "h264",
                             "video.pix_fmt": "yuv420p", "video.is_depth_map": False, "video.fps": result.fps,
                             "video.channels": channels, "has_audio": False}}
        out[key] = {"dtype": dtype, "shape": [len(names) if names else 1], "names": names}
    info = {"codebase_version": CODEBASE_VERSION, "robot_type": robot_type,
            "total_episodes": len(result.source_episodes), "total_frames": result.total_frames, "total_tasks": 1,
            "chunks_size": CHUNKS_SIZE, "data_files_size_in_mb": DATA_FILES_SIZE_IN_MB,
            "video_files_size_in_mb": VIDEO_FILES_SIZE_IN_MB, "fps": result.fps,
            "splits": {"train": f"0:{len(result.source_episodes)}"}, "data_path": DATA_PATH,
            "video_path": VIDEO_PATH if result.cameras else None, "features": out}
    (root / "meta/info.json").write_text(_json(info))
    mapping = ", ".join(f"{i}<-{source_index}" for i, source_index in enumerate(result.source_episodes))
    (root / "README.md").write_text(
        f"---\ntags: [LeRobot]\ntask_categories: [robotics]\nconfigs:\n- config_name: default\n"
        f"  data_files: data/*/*.parquet\n---\n# {repo_id}\n\nLeRobotDataset {CODEBASE_VERSION} exported by "
        f"`deploy export-lerobot` from {source}.\nTask: {task}\n\n"
        f"Rows are the samples nearest to a fixed {result.fps} Hz grid (worst stamp offset "
        f"{result.max_stamp_offset_s * 1000:.1f} ms, {result.repeated_rows} repeated rows, "
        f"{result.dropped_steps} dropped samples).\nDataset episode <- source episode: {mapping}\n")
