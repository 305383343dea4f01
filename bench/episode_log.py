"""Episode log speed: appending a logger step (2 cameras 128x128 + 11 small fields) and reading it back.

Frames are real renders of the sim scene (front and wrist, random arm poses), so PNG sizes and times are those
of the demo. Per PNG level: `add_step` time p50 / p99 (one step, flushed) → steps/s, bytes per step;
`read_episode` (all fields, no frames) and `frames()` of both cameras as steps/s; `list_episodes` per episode.
Medians over `--repeats` episodes of `--steps` steps, written to a temp folder.

    MUJOCO_GL=egl /tmp/venvtest/bin/python bench/episode_log.py [--steps 200] [--repeats 5]
"""
import argparse
import os
import tempfile
import time

import numpy as np

from deploy.data.episodes import EpisodeWriter, list_episodes, read_episode
from deploy.sim import scene
from deploy.sim.render import SceneRenderer


def rendered_frames(n_poses: int) -> list[dict[str, np.ndarray]]:
    model = scene.build_scene()
    renderer = SceneRenderer(model, 128, 128)
    rng = np.random.default_rng(0)
    qpos0 = model.qpos0.copy()
    frames = []
    for _ in range(n_poses):
        qpos = qpos0.copy()
        qpos[:7] += rng.uniform(-0.3, 0.3, 7)
        frames.append(renderer.render(qpos))
    renderer.close()
    return frames


def step_values(step: int, rng) -> dict:
    return {"stamp_s": 0.1 * step, "joint_q": rng.normal(size=7), "joint_dq": rng.normal(size=7),
            "ee_pose": rng.normal(size=7), "gripper_width": 0.04, "proposed_chunk": rng.normal(size=(16, 8)),
            "executed_action": rng.normal(size=8), "human_action": np.full(8, np.nan),
            "intervention": bool(step % 4 == 0), "reward": 0.0, "weight_version": "w3-1a2b3c4d"}


def run(root: str, frames, steps: int, png_level: int) -> dict[str, float]:
    rng = np.random.default_rng(1)
    values = [step_values(step, rng) for step in range(steps)]
    step_s = []
    with EpisodeWriter(root, {"bench": True}, png_level=png_level) as writer:
        for step in range(steps):
            start = time.perf_counter()
            writer.add_step(values[step], frames[step % len(frames)])
            step_s.append(time.perf_counter() - start)
        writer.close({"success": True})
    start = time.perf_counter()
    episode = read_episode(writer.path)
    read_s = time.perf_counter() - start
    start = time.perf_counter()
    for camera in episode.cameras:
        episode.frames(camera)
    decode_s = time.perf_counter() - start
    start = time.perf_counter()
    list_episodes(root)
    list_s = (time.perf_counter() - start) / len(os.listdir(root))
    return {"add p50 ms": 1e3 * np.median(step_s), "add p99 ms": 1e3 * np.percentile(step_s, 99),
            "kB/step": os.path.getsize(writer.path / "steps.rec") / steps / 1e3,
            "read steps/s": steps / read_s, "frames steps/s": steps / decode_s, "list ms/ep": 1e3 * list_s}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    frames = rendered_frames(16)
    print(f"load average {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f}; "
          f"{args.steps} steps x {args.repeats} episodes; medians")
    for png_level in (0, 1, 3):
        with tempfile.TemporaryDirectory() as root:
            results = [run(root, frames, args.steps, png_level) for _ in range(args.repeats)]
        medians = {key: np.median([r[key] for r in results]) for key in results[0]}
        print(f"png level {png_level}: add {medians['add p50 ms']:.2f} ms p50 / {medians['add p99 ms']:.2f} ms p99 "
              f"({1e3 / medians['add p50 ms']:.0f} steps/s), {medians['kB/step']:.1f} kB/step; read "
              f"{medians['read steps/s']:.0f} steps/s, frames {medians['frames steps/s']:.0f} steps/s (2 cameras); "
              f"list {medians['list ms/ep']:.2f} ms/episode")


if __name__ == "__main__":
    main()
