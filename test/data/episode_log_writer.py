"""A logger process for the kill -9 test: writes episode 0 (closed), then appends steps to episode 1 until
killed, printing each step's index once `add_step` has returned. Every value is a pure function of
(episode, step), so the test can check what it reads back. `--no-frames` makes episode 1's records small
(a few hundred bytes: they would sit in a write buffer if the writer did not flush each step).

    python episode_log_writer.py ROOT [--fsync] [--no-frames]
"""
import sys

import numpy as np

from deploy.data.episodes import EpisodeWriter

EPISODE0_STEPS = 12


def step_values(episode: int, step: int) -> dict:
    rng = np.random.default_rng([episode, step])
    return {
        "stamp_s": 0.1 * step,
        "proprio_q": rng.normal(size=7).astype(np.float32),
        "proposed_chunk": rng.normal(size=(16, 8)),
        "executed_action": rng.normal(size=8),
        "human_action": rng.normal(size=8) if step % 3 == 0 else np.full(8, np.nan),
        "intervention": step % 3 == 0,
        "reward": float(step % 5),
        "weight_version": f"w{step // 7}-é",
        "step": step,
    }


def step_frames(episode: int, step: int) -> dict:
    rng = np.random.default_rng([episode, step, 1])  # noise: PNG barely compresses it, so records are large
    return {"wrist": rng.integers(0, 256, (128, 128, 3), dtype=np.uint8),
            "front": rng.integers(0, 256, (96, 128, 3), dtype=np.uint8)}


def main(root: str, fsync: bool, frames: bool) -> None:
    with EpisodeWriter(root, {"seed": 0, "task": "push cube"}, frame_codec="png") as writer:
        for step in range(EPISODE0_STEPS):
            writer.add_step(step_values(0, step), step_frames(0, step))
        writer.close({"success": True, "reason": "cube on patch"})
    writer = EpisodeWriter(root, {"seed": 1}, fsync_each_step=fsync, frame_codec="png")
    step = 0
    while True:
        writer.add_step(step_values(1, step), step_frames(1, step) if frames else None)
        print(step, flush=True)
        step += 1


if __name__ == "__main__":
    main(sys.argv[1], fsync="--fsync" in sys.argv[2:], frames="--no-frames" not in sys.argv[2:])
