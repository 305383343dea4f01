"""A LeRobotDataset v3.0 folder as behaviour-cloning data (the format LeRobot users already have).

Layout read (LeRobot 0.4's writer, src/lerobot/datasets/utils.py): meta/info.json (fps, features),
meta/episodes/chunk-*/file-*.parquet (per episode: length, dataset_from_index, and for each video key its
chunk_index, file_index and from_timestamp), data/chunk-*/file-*.parquet (one row per frame: the features,
episode_index, frame_index, timestamp), videos/<key>/chunk-*/file-*.mp4 (episodes one after the other).

Mapping onto the policy: the `state_key` vector is split, in order, into the policy's state keys (ee_pose,
gripper_width, ...: the names the policy node fills); camera i of the policy reads `image_keys[i]` (a video,
decoded with imageio-ffmpeg, or an image column of PNG/JPEG bytes); the label of frame t is the `action_key`
rows t .. t+H-1 of its episode (LeRobot's chunk convention; the last row held past the end), one point per 1/fps.
"""
from __future__ import annotations

import json
from pathlib import Path

import imageio.v3 as iio
import imageio_ffmpeg
import numpy as np
import pyarrow.parquet as pq

from deploy.errors import ConfigError
from deploy.policies.learned import ACTION_DIM, STATE_DIMS, state_layout

DEFAULT_STATE_KEY, DEFAULT_ACTION_KEY, IMAGE_PREFIX = "observation.state", "action", "observation.images."


def is_lerobot_dataset(root: Path) -> bool:
    return (Path(root) / "meta" / "info.json").is_file()


def read_info(root: Path) -> dict:
    path = Path(root) / "meta" / "info.json"
    try:
        info = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise ConfigError(f"LeRobot dataset {root}: cannot read {path} ({error})") from None
    if not isinstance(info, dict) or "features" not in info or "fps" not in info:
        raise ConfigError(f"LeRobot dataset {root}: {path} has no 'features' or no 'fps'")
    if str(info.get("codebase_version", "")).split(".")[0] != "v3":
        raise ConfigError(f"LeRobot dataset {root} is codebase_version {info.get('codebase_version')!r}; "
                          "only v3.x is read")
    return info


def _feature(info: dict, root: Path, key: str, what: str, kinds: tuple[str, ...]) -> dict:
    feature = info["features"].get(key)
    if feature is None or feature.get("dtype") not in kinds:
        got = "missing" if feature is None else f"dtype {feature.get('dtype')}"
        features = ", ".join(f"{name} ({value.get('dtype')} {value.get('shape')})"
                             for name, value in info["features"].items())
        raise ConfigError(f"LeRobot dataset {root}: {what} feature '{key}' is {got}; its features are {features}")
    return feature


def _table(root: Path, pattern: str):
    files = sorted(Path(root).glob(pattern))
    if not files:
        raise ConfigError(f"LeRobot dataset {root} has no {pattern}")
    return pq.read_table(files).to_pydict() if len(files) == 1 else _concat(files)


def _concat(files) -> dict:
    tables = [pq.read_table(f).to_pydict() for f in files]
    return {k: sum((t[k] for t in tables), []) for k in tables[0]}


def _video_frames(path: Path) -> np.ndarray:
    if not path.is_file():
        raise ConfigError(f"video {path} is missing")
    reader = imageio_ffmpeg.read_frames(str(path))
    width, height = next(reader)["size"]
    return np.stack([np.frombuffer(frame, np.uint8).reshape(height, width, 3) for frame in reader])


def read_lerobot(root: str | Path, state_keys: tuple[str, ...], cameras: tuple[str, ...], horizon: int,
                 state_key: str = DEFAULT_STATE_KEY, action_key: str = DEFAULT_ACTION_KEY,
                 image_keys: tuple[str, ...] = (), max_episodes: int = 0) -> dict:
    """-> {"fps", "episodes": [index], "lengths": [frames], "state_values": {policy state key: (N, d)},
    "frames": {camera: (N, H, W, 3) uint8}, "actions": (N, horizon, A) float32}. ConfigError (one line,
    naming the feature and listing the dataset's) when a feature is missing or of the wrong size."""
    root = Path(root)
    info = read_info(root)
    fps = float(info["fps"])
    image_keys = tuple(image_keys) or tuple(IMAGE_PREFIX + c for c in cameras)
    if len(image_keys) != len(cameras):
        raise ConfigError(f"{len(image_keys)} image keys {list(image_keys)} for {len(cameras)} cameras "
                          f"{list(cameras)}: give one per camera")
    state = _feature(info, root, state_key, "state", ("float32", "float64"))
    action = _feature(info, root, action_key, "action", ("float32", "float64"))
    state_dim, _ = state_layout(state_keys)
    if tuple(state["shape"]) != (state_dim,):
        raise ConfigError(f"LeRobot dataset {root}: state feature '{state_key}' has shape {state['shape']}, the "
                          f"policy's state {list(state_keys)} needs ({state_dim},); choose --state to match")
    if tuple(action["shape"]) != (ACTION_DIM,):
        raise ConfigError(f"LeRobot dataset {root}: action feature '{action_key}' has shape {action['shape']}, "
                          f"the policy outputs ({ACTION_DIM},) (x y z qx qy qz qw gripper)")
    images = {key: _feature(info, root, key, "image", ("video", "image")) for key in image_keys}
    episodes = _table(root, "meta/episodes/chunk-*/file-*.parquet")
    data = _table(root, "data/chunk-*/file-*.parquet")
    for key in (state_key, action_key, "episode_index", "frame_index", "timestamp",
                *[k for k in image_keys if images[k]["dtype"] == "image"]):
        if key not in data:
            raise ConfigError(f"LeRobot dataset {root}: data files have no column '{key}'; they have {sorted(data)}")
    row_episode = np.asarray(data["episode_index"])
    order = np.lexsort((np.asarray(data["frame_index"]), row_episode))
    wanted = [int(e) for e in episodes["episode_index"]]
    if max_episodes:
        wanted = wanted[:max_episodes]
    video_cache: dict[Path, np.ndarray] = {}
    states, labels, lengths = [], [], []
    frames = {c: [] for c in cameras}
    for position, episode in enumerate(episodes["episode_index"]):
        if episode not in wanted:
            continue
        rows = order[row_episode[order] == episode]
        if len(rows) != int(episodes["length"][position]):
            raise ConfigError(f"LeRobot dataset {root}: episode {episode} has {len(rows)} data rows, its "
                              f"meta/episodes length is {episodes['length'][position]}")
        states.append(np.asarray([data[state_key][r] for r in rows], np.float32))
        acts = np.asarray([data[action_key][r] for r in rows], np.float32)
        ahead = np.minimum(np.arange(len(rows))[:, None] + np.arange(horizon)[None], len(rows) - 1)
        labels.append(acts[ahead])
        lengths.append(len(rows))
        timestamps = np.asarray([data["timestamp"][r] for r in rows], np.float64)
        for camera, key in zip(cameras, image_keys):
            if images[key]["dtype"] == "image":
                frames[camera].append(np.stack([_image(data[key][r], key, root) for r in rows]))
                continue
            try:
                path = root / info["video_path"].format(
                    video_key=key, chunk_index=episodes[f"videos/{key}/chunk_index"][position],
                    file_index=episodes[f"videos/{key}/file_index"][position])
                start_s = float(episodes[f"videos/{key}/from_timestamp"][position])
            except KeyError as error:
                raise ConfigError(f"LeRobot dataset {root}: no {error} for video '{key}'") from None
            if path not in video_cache:
                video_cache[path] = _video_frames(path)
            video = video_cache[path]
            index = np.round((start_s + timestamps) * fps).astype(np.int64)
            if index.max() >= len(video):
                raise ConfigError(f"video {path} has {len(video)} frames; episode {episode} needs frame {index.max()}")
            frames[camera].append(video[index])
    if not lengths:
        raise ConfigError(f"LeRobot dataset {root} has no episode")
    state_all = np.concatenate(states)
    offsets = np.cumsum([0, *[STATE_DIMS[k] for k in state_keys]])
    return {"fps": fps, "episodes": wanted, "lengths": lengths,
            "state_values": {k: state_all[:, offsets[i]:offsets[i + 1]] for i, k in enumerate(state_keys)},
            "frames": {c: np.concatenate(f) for c, f in frames.items()}, "actions": np.concatenate(labels)}


def _image(cell, key: str, root: Path) -> np.ndarray:
    """An image column's cell (LeRobot stores {"bytes": PNG/JPEG, "path": ...}) -> (H, W, 3) uint8."""
    data = cell.get("bytes") if isinstance(cell, dict) else None
    if not data:
        raise ConfigError(f"LeRobot dataset {root}: image column '{key}' has a cell without bytes")
    image = iio.imread(data)
    return image[..., :3] if image.ndim == 3 else np.repeat(image[..., None], 3, axis=2)
