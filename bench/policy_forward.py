"""Inference cost of the learned policies: 2 cameras at 96x96, H = 16, default configs, CPU.

Per architecture and torch thread count: the model forward alone (tensors ready, `_sample` under
inference mode) and the whole `predict_chunk` (observation -> tensors -> forward -> un-normalised numpy),
p50 / p99 over `--runs` calls after warm-up. Flow runs its full `n_steps` Euler loop per call.
`--checkpoint DIR` times a saved checkpoint instead, on random camera frames at the sim cameras' output size
(128x128, so `predict_chunk` includes the resize to the policy's input) and its own state keys.

    .venv/bin/python bench/policy_forward.py [--runs 50] [--checkpoint checkpoints/push_vision]
"""
import argparse
import time
from pathlib import Path

import numpy as np
import torch

from deploy.policies.act import ACTConfig, ACTPolicy
from deploy.policies.base import PolicyMetadata
from deploy.policies.checkpoint import load_checkpoint
from deploy.policies.flow import FlowConfig, FlowPolicy
from deploy.policies.learned import batch_from_observations
from deploy.policies.runtime import dummy_observation
from deploy.sensing.observation import Observation

METADATA = PolicyMetadata(action_space="cartesian", dt_s=0.05, horizon=16, image_keys=("wrist", "front"),
                          image_size_hw=(96, 96), state_keys=("ee_pose", "gripper_width"))
ARCHITECTURES = [("act", lambda: ACTPolicy(ACTConfig(), METADATA)), ("flow", lambda: FlowPolicy(FlowConfig(), METADATA))]


CAMERA_OUTPUT_HW = (128, 128)  # what the sim camera nodes publish (config/sim.yaml)


def checkpoint_observation(metadata: PolicyMetadata) -> Observation:
    """Random frames at the camera output size for each camera the checkpoint reads, placeholder state."""
    rng = np.random.default_rng(0)
    observation = dummy_observation(metadata)
    values = {**observation.values, **{f"camera {name}": rng.integers(0, 256, (*CAMERA_OUTPUT_HW, 3), dtype=np.uint8)
                                        for name in metadata.image_keys}}
    return Observation(stamp_s=0.0, values=values, stamps_s={k: 0.0 for k in values})


def observation() -> Observation:
    rng = np.random.default_rng(0)
    values = {"camera wrist": rng.integers(0, 256, (96, 96, 3), dtype=np.uint8),
              "camera front": rng.integers(0, 256, (96, 96, 3), dtype=np.uint8),
              "ee_pose": np.array([0.45, 0.0, 0.25, 1.0, 0.0, 0.0, 0.0]), "gripper_width": np.array([0.04])}
    return Observation(stamp_s=0.0, values=values, stamps_s={k: 0.0 for k in values})


def timed_ms(call, runs: int, warmup: int = 10) -> tuple[float, float]:
    """-> (p50, p99) wall time of `call` in ms."""
    for _ in range(warmup):
        call()
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        call()
        samples.append(1000 * (time.perf_counter() - start))
    return float(np.percentile(samples, 50)), float(np.percentile(samples, 99))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--checkpoint", default=None, help="time this checkpoint directory instead")
    args = parser.parse_args()
    architectures = ARCHITECTURES
    if args.checkpoint:
        architectures = [(Path(args.checkpoint).name[:6], lambda: load_checkpoint(args.checkpoint))]
    print(f"{'policy':6} {'threads':>7} {'params':>8} {'forward p50':>12} {'p99':>7} {'predict_chunk p50':>18} {'p99':>7}")
    for name, build in architectures:
        policy = build()
        obs = checkpoint_observation(policy.metadata) if args.checkpoint else observation()
        batch = batch_from_observations([obs], policy.metadata)
        params = sum(p.numel() for p in policy.parameters())

        def forward():
            with torch.inference_mode():
                policy._sample(batch, None)

        for threads in (1, 2):
            torch.set_num_threads(threads)
            f50, f99 = timed_ms(forward, args.runs)
            p50, p99 = timed_ms(lambda: policy.predict_chunk(obs), args.runs)
            print(f"{name:6} {threads:>7} {params / 1e6:>7.2f}M {f50:>9.1f} ms {f99:>4.1f} ms {p50:>15.1f} ms "
                  f"{p99:>4.1f} ms")


if __name__ == "__main__":
    main()
