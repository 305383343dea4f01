"""Episode log speed and weight: appending a session step (front + wrist 128x128 and the episode node's fields)
and reading it back, per frame codec, and what a 60-episode pixel session weighs.

Frames are real renders of the sim scene (front and wrist, random arm poses), as the session logs them (the sim
and the real-camera configs both publish 128x128; the episode node logs at EpisodeConfig.step_rate_hz). "noisy"
adds Gaussian noise (sigma 2 levels) as a stand-in for a real camera: noise is what lossless codecs cannot
squeeze. Per codec: one frame's kB, encode ms, PSNR and mean error once decoded; `add_step` p50 / p99 (one step,
written); bytes per step, per 30 s episode (the session's timeout: the worst case) and per 60 such episodes;
`read_episode` (fields) and `frames()` (both cameras) as steps/s. Medians over `--repeats` episodes of `--steps`
steps in a temp folder.

    MUJOCO_GL=egl .venv/bin/python bench/episode_log.py [--steps 200] [--repeats 3]
"""
import argparse
import os
import tempfile
import time

import cv2
import numpy as np

from deploy.data.episodes import FRAME_CODECS, EpisodeWriter, read_episode
from deploy.learning.episodes import EpisodeConfig
from deploy.nodes.episode_node import SessionConfig, step_shapes
from deploy.sim import scene
from deploy.sim.render import SceneRenderer

SESSION_EPISODES = 60


def rendered_frames(n_poses: int, noise: float) -> list[dict[str, np.ndarray]]:
    model = scene.build_scene()
    renderer = SceneRenderer(model, 128, 128)
    rng = np.random.default_rng(0)
    qpos0 = model.qpos0.copy()
    frames = []
    for _ in range(n_poses):
        qpos = qpos0.copy()
        qpos[:7] += rng.uniform(-0.3, 0.3, 7)
        rendered = renderer.render(qpos)
        frames.append({camera: np.clip(frame + rng.normal(0.0, noise, frame.shape), 0, 255).astype(np.uint8)
                       if noise else frame for camera, frame in rendered.items()})
    renderer.close()
    return frames


def step_values(step: int, rng) -> dict:
    """What the episode node logs per step: its numeric fields (no intervention: the human's are NaN), stamps and
    the weight version."""
    values = {name: rng.normal(size=shape) for name, shape in step_shapes(16).items()}
    for name in ("human_chunk", "human_chunk_times_s", "human_chunk_stamp_s", "human_action"):
        values[name] = np.full_like(values[name], np.nan)
    values.update(stamp_s=np.array(0.05 * step), weight_version="71e104b5ae8e", reward=np.array(0.0),
                  stamp_front_s=np.array(0.05 * step), stamp_wrist_s=np.array(0.05 * step))
    return values


def encode(frames, codec: str) -> dict[str, float]:
    """Median encode ms, kB, PSNR [dB] and mean absolute error [levels] of one frame, decoded vs the original."""
    extension, parameters = FRAME_CODECS[codec]
    rows = []
    for step in frames:
        for frame in step.values():
            start = time.perf_counter()
            _, encoded = cv2.imencode(extension, cv2.cvtColor(frame, cv2.COLOR_RGB2BGR), parameters)
            ms = 1e3 * (time.perf_counter() - start)
            error = cv2.cvtColor(cv2.imdecode(encoded, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB).astype(float) - frame
            mse = float(np.mean(error ** 2))
            rows.append((ms, len(encoded) / 1e3, 10 * np.log10(255 ** 2 / mse) if mse else np.inf,
                         float(np.abs(error).mean())))
    return dict(zip(("ms", "kB", "psnr", "mae"), np.median(rows, axis=0)))


def run(root: str, frames, steps: int, codec: str) -> dict[str, float]:
    rng = np.random.default_rng(1)
    values = [step_values(step, rng) for step in range(steps)]
    step_s = []
    with EpisodeWriter(root, {"bench": True}, frame_codec=codec) as writer:
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
    return {"add p50 ms": 1e3 * np.median(step_s), "add p99 ms": 1e3 * np.percentile(step_s, 99),
            "bytes/step": os.path.getsize(writer.path / "steps.rec") / steps,
            "read steps/s": steps / read_s, "frames steps/s": steps / decode_s}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    rate_hz, episode_s = EpisodeConfig().step_rate_hz, SessionConfig().timeout_s
    print(f"load average {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f}; "
          f"{args.steps} steps x {args.repeats} episodes; medians; {rate_hz:.0f} steps/s, {episode_s:.0f} s episodes")
    for noise in (0.0, 2.0):
        frames = rendered_frames(16, noise)
        for codec in FRAME_CODECS:
            with tempfile.TemporaryDirectory() as root:
                results = [run(root, frames, args.steps, codec) for _ in range(args.repeats)]
            m = {key: np.median([r[key] for r in results]) for key in results[0]}
            episode_mb = m["bytes/step"] * rate_hz * episode_s / 1e6
            e = encode(frames, codec)
            print(f"{'noisy' if noise else 'sim'} {codec}: frame {e['kB']:.1f} kB, encode {e['ms']:.2f} ms, "
                  f"PSNR {e['psnr']:.1f} dB, mean error {e['mae']:.2f}; add "
                  f"{m['add p50 ms']:.2f} ms p50 / {m['add p99 ms']:.2f} ms p99; {m['bytes/step'] / 1e3:.1f} kB/step, "
                  f"{episode_mb:.1f} MB/episode, {SESSION_EPISODES * episode_mb / 1e3:.2f} GB/{SESSION_EPISODES} "
                  f"episodes; read {m['read steps/s']:.0f} steps/s, frames {m['frames steps/s']:.0f} steps/s")


if __name__ == "__main__":
    main()
