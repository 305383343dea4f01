"""Behaviour cloning of a chunk policy from logged episodes, on CPU.

Each logged step gives one sample: the observation (camera frames + proprioception, turned into tensors by
`batch_from_observations`, the same function inference uses) and, as the label, the chunk commanded at that
step by the writer in authority, re-sampled on the step's time grid (`commanded_chunk_labels`), or the executed
references of the next H steps (`chunk_labels`). Frames are decoded and resized
once and kept as uint8; batches get a random-shift augmentation (DrQ), which is what makes pixel BC work from
a few dozen demonstrations.

Pixel policies can also be given an auxiliary target at training time (`aux_positions`, e.g. "cube_pose"): a
small head, dropped after training, regresses the logged (privileged) xyz position of that object from the
image encoder's features. The policy still reads only cameras and proprioception; the extra loss only tells
the encoder early what in the image matters, which a few dozen demonstrations teach slowly through the action
loss alone (auxiliary state prediction, as in asymmetric / privileged-information training).
"""
from __future__ import annotations

import csv
import dataclasses
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from deploy.data.episodes import list_episodes, read_episode
from deploy.errors import ConfigError
from deploy.learning.episodes import OPERATOR_CHUNK_FIELDS, POLICY_CHUNK_FIELDS, chunk_labels, commanded_chunk_labels
from deploy.learning.lerobot_source import (DEFAULT_ACTION_KEY, DEFAULT_STATE_KEY, is_lerobot_dataset, read_info,
                                            read_lerobot)
from deploy.policies.base import PolicyMetadata
from deploy.policies.checkpoint import POLICY_TYPES, save_checkpoint
from deploy.policies.learned import STATE_DIMS, batch_from_observations, camera_key
from deploy.sensing.observation import Observation

LABEL_SOURCES = ("proposed", "executed")
MIN_STEPS = 4  # OneCycleLR divides by its warm-up's length in steps: at least one whole step of it
DECODE_BATCH = 256  # steps turned into tensors at once while loading


@dataclasses.dataclass(frozen=True)
class BCConfig:
    kind: str = "act"
    steps: int = 3000
    batch_size: int = 64
    learning_rate: float = 3e-4
    weight_decay: float = 1e-4
    seed: int = 0
    max_episodes: int = 0  # 0 = every successful episode
    cameras: tuple[str, ...] = ("front",)
    state_keys: tuple[str, ...] = ("ee_pose", "gripper_width")  # "cube_pose" = privileged sim state
    image_size: int = 64
    labels: str = "proposed"  # "proposed": the chunks of the writer in authority (expert, operator); "executed":
    # the controller's reference
    horizon: int = 16
    shift_pixels: int = 4  # random-shift augmentation amplitude
    threads: int = 1  # 2 threads ran 10x slower than 1 beside the running graph (2 cores, loaded)
    corrections: tuple[str, ...] = ()  # correction logs whose operator steps are added (HG-DAgger)
    architecture: dict = dataclasses.field(default_factory=dict)  # overrides of the policy's config class
    state_feature: str = DEFAULT_STATE_KEY  # LeRobot folders: the features read as state, action, cameras
    action_feature: str = DEFAULT_ACTION_KEY
    image_features: tuple[str, ...] = ()  # one per camera; default observation.images.<camera>
    aux_positions: tuple[str, ...] = ()  # logged state keys (e.g. "cube_pose") whose xyz the image features
    # regress during training only (the checkpoint never reads them); needs cameras
    aux_weight: float = 1.0  # weight of that auxiliary loss (mean squared error on standardised xyz)

    def __post_init__(self):
        if self.kind not in POLICY_TYPES:
            raise ConfigError(f"policy kind '{self.kind}' is not one of {sorted(POLICY_TYPES)}")
        if self.labels not in LABEL_SOURCES:
            raise ConfigError(f"labels '{self.labels}' is not one of {'|'.join(LABEL_SOURCES)}")
        if self.batch_size < 1 or not self.learning_rate > 0:
            raise ConfigError("batch_size and learning_rate must be positive")
        unknown = [k for k in self.aux_positions if k not in STATE_DIMS]
        if unknown:
            raise ConfigError(f"aux_positions {unknown}: not state keys {sorted(STATE_DIMS)}")
        if self.aux_positions and not self.cameras:
            raise ConfigError(f"aux_positions {list(self.aux_positions)} need cameras: the auxiliary head reads "
                              "the image features")
        if self.aux_weight < 0:
            raise ConfigError(f"aux_weight {self.aux_weight} must be >= 0")
        if self.steps < MIN_STEPS:
            raise ConfigError(f"steps {self.steps}: at least {MIN_STEPS} (the learning-rate schedule's warm-up, "
                              "peak and decay)")


@dataclasses.dataclass
class Dataset:
    images: torch.Tensor  # (N, C, 3, h, w) uint8
    states: torch.Tensor  # (N, S) float32
    actions: torch.Tensor  # (N, H, A) float32
    episodes: list[int]  # episode indices used, per source folder order
    aux: torch.Tensor | None = None  # (N, 3 K) float32: xyz of each aux_positions key, or None


def observation_tensors(frames: dict[str, np.ndarray], state_values: dict[str, np.ndarray],
                        metadata: PolicyMetadata) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-step camera frames {camera: (N, H, W, 3) uint8} and state values {key: (N, d)} as tensors, through
    `batch_from_observations` (the function inference uses), whichever reader they came from:
    -> (images (N, C, 3, h, w) uint8 at the policy's size, states (N, S) float32)."""
    n = len(next(iter(state_values.values())))
    images, states = [], []
    for start in range(0, n, DECODE_BATCH):
        stop = min(start + DECODE_BATCH, n)
        observations = [Observation(0.0, {**{camera_key(c): frames[c][i] for c in metadata.image_keys},
                                          **{k: state_values[k][i] for k in metadata.state_keys}}, {})
                        for i in range(start, stop)]
        batch = batch_from_observations(observations, metadata)
        images.append((batch["images"] * 255).round().to(torch.uint8))
        states.append(batch["state"])
    return torch.cat(images), torch.cat(states)


def step_tensors(episode, keep: np.ndarray, metadata: PolicyMetadata) -> tuple[torch.Tensor, torch.Tensor]:
    """The observations of a logged episode's kept steps as tensors (`observation_tensors`)."""
    return observation_tensors({c: episode.frames(c)[keep] for c in metadata.image_keys},
                               {k: episode.steps[k][keep] for k in metadata.state_keys}, metadata)


def episode_labels(steps: dict, metadata: PolicyMetadata, labels: str) -> tuple[np.ndarray, np.ndarray]:
    """-> (steps used (T,) bool, their chunk labels (N, H, A)) of one logged episode. "proposed": what the
    writer in authority commanded (the acting policy's chunks; the operator's where they had taken over)."""
    usable = np.isfinite(steps["ee_pose"]).all(axis=1)
    if labels == "executed":
        keep = usable & np.isfinite(steps["executed_action"]).all(axis=1)
        return keep, chunk_labels(steps["stamp_s"][keep], steps["executed_action"][keep], metadata.dt_s,
                                  metadata.horizon)
    commanded, chunks = commanded_chunk_labels(steps, metadata.dt_s)
    if chunks.shape[1] < metadata.horizon:
        raise ConfigError(f"logged chunks hold {chunks.shape[1]} points, the policy's horizon is {metadata.horizon}")
    keep = usable & commanded
    return keep, chunks[keep][:, :metadata.horizon]


def load_dataset(roots: list[Path], metadata: PolicyMetadata, max_episodes: int = 0, labels: str = "proposed",
                 corrections: tuple[Path, ...] = (), aux_positions: tuple[str, ...] = ()) -> Dataset:
    """Samples from the successful episodes of `roots` (labels as chosen) and from the operator-controlled
    steps of every episode of the correction logs `corrections` (labels: the operator's own chunks: HG-DAgger),
    with the logged xyz of each `aux_positions` key as auxiliary targets. ConfigError when there is nothing, or
    a field is missing."""
    images, states, actions, aux, used = [], [], [], [], []
    sources = [(root, False) for root in roots] + [(root, True) for root in corrections]
    for root, is_correction in sources:
        for summary in list_episodes(root):
            if not is_correction and not (summary.outcome or {}).get("success"):
                continue
            if max_episodes and not is_correction and len(used) >= max_episodes:
                break
            episode = read_episode(summary.path)
            kind = "proposed" if is_correction else labels
            needed = (("executed_action",) if kind == "executed" else
                      POLICY_CHUNK_FIELDS + (OPERATOR_CHUNK_FIELDS if is_correction else ()))
            missing = [k for k in (*metadata.state_keys, *aux_positions, *needed, "stamp_s", "intervention")
                       if k not in episode.steps]
            if missing:
                raise ConfigError(f"episode {summary.path} has no field(s) {missing}")
            keep, targets = episode_labels(episode.steps, metadata, kind)
            if is_correction:  # only where the operator had authority
                operator = episode.steps["intervention"][keep] > 0.5
                keep[keep] = operator
                targets = targets[operator]
            if aux_positions:  # a step whose aux target is unknown is dropped, not taught a NaN
                known = np.isfinite(np.concatenate([episode.steps[k][:, :3] for k in aux_positions], 1)).all(1)
                targets = targets[known[keep]]
                keep = keep & known
            if not keep.any():
                continue
            episode_images, episode_states = step_tensors(episode, keep, metadata)
            images.append(episode_images)
            states.append(episode_states)
            actions.append(torch.from_numpy(targets.astype(np.float32)))
            if aux_positions:
                aux.append(torch.from_numpy(np.concatenate([episode.steps[k][keep][:, :3] for k in aux_positions],
                                                           1).astype(np.float32)))
            used.append(summary.index)
    if not used:
        raise ConfigError(f"no successful episode in {[str(r) for r in roots]} and no operator step in "
                          f"{[str(r) for r in corrections]}")
    return Dataset(torch.cat(images), torch.cat(states), torch.cat(actions), used,
                   torch.cat(aux) if aux_positions else None)


def load_lerobot_dataset(root: Path, metadata: PolicyMetadata, config: BCConfig) -> Dataset:
    """Every episode of a LeRobotDataset v3 folder (`deploy.learning.lerobot_source`) as samples."""
    source = read_lerobot(root, metadata.state_keys, metadata.image_keys, metadata.horizon, config.state_feature,
                          config.action_feature, config.image_features, config.max_episodes)
    images, states = observation_tensors(source["frames"], source["state_values"], metadata)
    return Dataset(images, states, torch.from_numpy(source["actions"]), source["episodes"])


def random_shift(images: torch.Tensor, pad: int, generator: torch.Generator) -> torch.Tensor:
    """(B, C, 3, h, w) float -> the same, each image shifted by up to `pad` pixels (replicate padding)."""
    if pad == 0:
        return images
    b, c, _, h, w = images.shape
    padded = F.pad(images.flatten(0, 1), (pad,) * 4, mode="replicate")  # (B*C, 3, h+2p, w+2p)
    dx = torch.randint(0, 2 * pad + 1, (b * c,), generator=generator)
    dy = torch.randint(0, 2 * pad + 1, (b * c,), generator=generator)
    rows = (dy[:, None] + torch.arange(h)[None])[:, None, :, None].expand(-1, 3, -1, w + 2 * pad)
    shifted = padded.gather(2, rows)
    cols = (dx[:, None] + torch.arange(w)[None])[:, None, None, :].expand(-1, 3, h, -1)
    return shifted.gather(3, cols).unflatten(0, (b, c))



class AuxiliaryHead(nn.Module):
    """Training-only head: the image encoder's per-camera features (B, C, D) -> standardised targets (B, T).
    Fit with `fit` to the dataset's targets first; never saved in the checkpoint."""

    def __init__(self, n_cameras: int, d_model: int, n_targets: int, hidden: int = 128):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(n_cameras * d_model, hidden), nn.ReLU(), nn.Linear(hidden, n_targets))
        self.register_buffer("mean", torch.zeros(n_targets))
        self.register_buffer("std", torch.ones(n_targets))

    def fit(self, targets: torch.Tensor) -> None:
        self.mean.copy_(targets.mean(0))
        self.std.copy_(targets.std(0).clamp(min=1e-3))

    def loss(self, features: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """features (B, C, D), raw targets (B, T) -> mean squared error in standard units."""
        return F.mse_loss(self.net(features.flatten(1)), (targets - self.mean) / self.std)


def image_features_tap(policy) -> tuple[dict, object]:
    """Keep the last output of the policy's image encoder ((B, C, D) features) in the returned dict, under
    "features", whenever the policy encodes a batch; -> (that dict, the hook handle to remove)."""
    tap: dict = {}
    handle = policy.observation_encoder.images.register_forward_hook(
        lambda module, inputs, output: tap.__setitem__("features", output))
    return tap, handle


def one_cycle(optimizer: torch.optim.Optimizer, learning_rate: float, steps: int):
    """One-cycle learning rate over `steps`: a 5 % warm-up, but at least two steps of it (OneCycleLR divides by
    the warm-up's length, zero for a short run: `train-bc --steps 20` crashed), and at most half the run."""
    warm_up = min(0.5, max(0.05, 2.0 / steps))
    return torch.optim.lr_scheduler.OneCycleLR(optimizer, learning_rate, total_steps=steps, pct_start=warm_up)


def train_bc(roots: list[Path], output: Path, config: BCConfig, progress: bool = True) -> Path:
    """Train on the successful episodes of the episode logs `roots`, or on every episode of one LeRobotDataset
    v3 folder (chunk spacing 1/fps); writes the checkpoint + loss.csv + loss.png to `output`."""
    torch.set_num_threads(config.threads)
    lerobot = [root for root in roots if is_lerobot_dataset(root)]
    if lerobot and (len(roots) > 1 or config.corrections):
        raise ConfigError(f"a LeRobot dataset ({lerobot[0]}) trains alone: no other logs or --corrections with it")
    dt_s = 1.0 / read_info(lerobot[0])["fps"] if lerobot else 0.05
    metadata = PolicyMetadata(action_space="cartesian", dt_s=dt_s, horizon=config.horizon,
                              image_keys=config.cameras, image_size_hw=(config.image_size, config.image_size),
                              state_keys=config.state_keys)
    if lerobot and config.aux_positions:
        raise ConfigError(f"aux_positions {list(config.aux_positions)} need logged episodes; {lerobot[0]} is a "
                          "LeRobot dataset")
    if lerobot:
        data = load_lerobot_dataset(lerobot[0], metadata, config)
    else:
        data = load_dataset(roots, metadata, config.max_episodes, config.labels,
                            tuple(Path(c) for c in config.corrections), config.aux_positions)
    cls = POLICY_TYPES[config.kind]
    policy = cls(cls.config_class(**{"seed": config.seed, **config.architecture}), metadata)
    policy.normalizer.fit(data.states.numpy(), data.actions.numpy())
    policy.train()
    parameters = list(policy.parameters())
    aux_head = None
    if data.aux is not None:
        aux_head = AuxiliaryHead(len(config.cameras), policy.config.d_model, data.aux.shape[1])
        aux_head.fit(data.aux)
        parameters += list(aux_head.parameters())
        tap, tap_handle = image_features_tap(policy)
    optimizer = torch.optim.AdamW(parameters, lr=config.learning_rate, weight_decay=config.weight_decay)
    schedule = one_cycle(optimizer, config.learning_rate, config.steps)
    generator = torch.Generator().manual_seed(config.seed)
    n, losses, aux_losses, started = len(data.states), [], [], time.monotonic()
    bar = tqdm(range(config.steps), desc=f"train-bc {config.kind} on {n} steps of {len(data.episodes)} episodes",
               disable=not progress)
    for step in bar:
        index = torch.randint(0, n, (config.batch_size,), generator=generator)
        images = random_shift(data.images[index].float() / 255.0, config.shift_pixels, generator)
        loss = policy.loss({"images": images, "state": data.states[index], "actions": data.actions[index]})
        losses.append(loss.item())
        if aux_head is not None:  # the policy's encoder ran once inside loss(); the tap holds its features
            aux_loss = aux_head.loss(tap["features"], data.aux[index])
            aux_losses.append(aux_loss.item())
            loss = loss + config.aux_weight * aux_loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(parameters, 10.0)
        optimizer.step()
        schedule.step()
        if step % 50 == 0:
            bar.set_postfix(loss=f"{np.mean(losses[-50:]):.4f}",
                            **({"aux": f"{np.mean(aux_losses[-50:]):.4f}"} if aux_losses else {}))
    if aux_head is not None:
        tap_handle.remove()
    policy.eval()
    output.mkdir(parents=True, exist_ok=True)
    path = save_checkpoint(policy, output, weight_version=f"bc-{config.kind}-{len(data.episodes)}ep-{config.steps}st")
    _write_loss_curve(output, losses, {"episodes": len(data.episodes), "samples": n,
                                       "minutes": (time.monotonic() - started) / 60}, aux_losses)
    return path


def _write_loss_curve(output: Path, losses: list[float], facts: dict, aux_losses: list[float] = ()) -> None:
    """loss.csv (step, the policy's loss[, the auxiliary loss]) and loss.png."""
    with open(output / "loss.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["step", "loss", "aux_loss"] if aux_losses else ["step", "loss"])
        writer.writerows(zip(range(len(losses)), losses, aux_losses) if aux_losses else enumerate(losses))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    smooth = np.convolve(losses, np.ones(25) / 25, mode="valid") if len(losses) >= 25 else losses
    ax.plot(losses, alpha=0.3, label="per step")
    ax.plot(np.arange(len(smooth)) + (len(losses) - len(smooth)), smooth, label="running mean (25)")
    if len(aux_losses):
        ax.plot(aux_losses, alpha=0.5, label="auxiliary (train only)")
    ax.set_xlabel("gradient step")
    ax.set_ylabel("training loss")
    ax.set_yscale("log")
    ax.set_title(f"BC: {facts['episodes']} episodes, {facts['samples']} samples, {facts['minutes']:.1f} min")
    ax.legend()
    fig.tight_layout()
    fig.savefig(output / "loss.png", dpi=100)
    plt.close(fig)
