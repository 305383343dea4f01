"""Online fine-tuning from corrections: an off-policy actor-critic over action chunks, ROS-free.

- Transitions are chunk-level (Q-chunking / "RL with Action Sequence"): from the logged step at t, the action
  is the chunk commanded over [t, t + H dt] by whoever had authority, the policy or the operator
  (`commanded_chunk_labels`), the next state is the step at t + H dt, the reward
  is 1 when the task succeeds inside that window (terminal) and `-intervention_penalty` when the operator
  takes over inside it (RLIF: a takeover says "this was going wrong"), discounted per chunk.
- Critic: twin MLPs Q(s, chunk) on normalised state and chunk with a Polyak target (TD3).
- Actor: the BC policy itself (warm start, WSRL), updated with TD3+BC: maximise Q(s, pi(s)) (scaled by |Q|)
  plus an L1 pull towards human/demo chunks. Every batch is half human-labelled (demonstrations and
  intervention steps) and half online (policy-controlled) transitions (RLPD's symmetric sampling).
- State lives in one folder: `learner.json` (counters, seen episodes, weight versions) and safetensors files
  for actor, critic, target and optimiser moments, each written atomically, so a killed learner resumes where
  it stopped. New actor weights go to `weights/NNNNNN.safetensors`, named by version, hashed by the loader.
"""
from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import numpy as np
import safetensors.torch
import torch
import torch.nn.functional as F
from torch import nn

from deploy.data.episodes import finished_episodes, read_episode
from deploy.errors import ConfigError
from deploy.files import write_atomic
from deploy.learning.bc import step_tensors
from deploy.learning.episodes import OPERATOR_CHUNK_FIELDS, POLICY_CHUNK_FIELDS, commanded_chunk_labels
from deploy.policies.checkpoint import load_checkpoint
from deploy.policies.learned import LearnedPolicy

STATE_FILE = "learner.json"
TENSOR_FILES = ("actor", "critic", "target", "actor_optim", "critic_optim")


@dataclasses.dataclass(frozen=True)
class LearnerConfig:
    batch_size: int = 64
    actor_lr: float = 1e-4
    critic_lr: float = 3e-4
    discount: float = 0.9  # per chunk (H dt of time)
    target_tau: float = 0.01
    bc_weight: float = 1.0  # L1 pull towards human chunks, relative to the normalised Q term
    q_weight: float = 0.1  # the Q term only refines: early critics are noise and must not drag the actor away
    critic_warmup_steps: int = 500  # actor updates are BC-only until the critic has seen this many updates
    intervention_penalty: float = 0.5
    critic_hidden: int = 256
    actor_delay: int = 2  # critic updates per actor update (TD3)
    seed: int = 0
    threads: int = 1


@dataclasses.dataclass
class Transitions:
    """Chunk-level transitions, observations already as tensors (converted once, at ingest);
    `human` marks demonstration / intervention chunks."""

    images: torch.Tensor  # (N, C, 3, h, w) uint8
    states: torch.Tensor  # (N, S) float32, raw units
    next_index: np.ndarray  # (N,) row of the next observation in these arrays
    chunks: np.ndarray  # (N, H, A) raw
    rewards: np.ndarray  # (N,)
    done: np.ndarray  # (N,)
    human: np.ndarray  # (N,) bool

    @classmethod
    def empty(cls) -> Transitions:
        return cls(torch.zeros(0, dtype=torch.uint8), torch.zeros(0), np.zeros(0, int), np.zeros((0, 0, 0)),
                   np.zeros(0), np.zeros(0), np.zeros(0, bool))

    def extend(self, other: Transitions) -> None:
        if len(other.rewards) == 0:
            return
        first = len(self.rewards) == 0
        self.next_index = np.concatenate([self.next_index, other.next_index + len(self.rewards)])
        self.images = other.images if first else torch.cat([self.images, other.images])
        self.states = other.states if first else torch.cat([self.states, other.states])
        self.chunks = other.chunks if first else np.concatenate([self.chunks, other.chunks])
        self.rewards = np.concatenate([self.rewards, other.rewards])
        self.done = np.concatenate([self.done, other.done])
        self.human = np.concatenate([self.human, other.human])


def episode_transitions(path: Path, policy: LearnedPolicy, penalty: float, all_human: bool = False) -> Transitions:
    """Chunk-level transitions of one logged episode (see module docstring); `all_human` for demonstrations."""
    meta = policy.metadata
    episode = read_episode(path)
    steps = episode.steps
    needed = (*POLICY_CHUNK_FIELDS, "intervention", "success", *(() if all_human else OPERATOR_CHUNK_FIELDS))
    missing = [k for k in needed if k not in steps]
    if missing:
        raise ConfigError(f"episode {path} has no field(s) {missing}: it was logged by an older version")
    commanded, chunks = commanded_chunk_labels(steps, meta.dt_s)
    keep = commanded & np.isfinite(steps["ee_pose"]).all(axis=1)
    stamps = steps["stamp_s"][keep]
    if len(stamps) < 2:
        return Transitions.empty()
    chunks = chunks[keep][:, :meta.horizon]
    span_s = meta.horizon * meta.dt_s
    intervention = steps["intervention"][keep] > 0.5
    success = steps["success"][keep] > 0.5
    nxt = np.minimum(np.searchsorted(stamps, stamps + span_s), len(stamps) - 1)  # (T,)
    takeover = np.zeros(len(stamps), bool)
    takeover[1:] = intervention[1:] & ~intervention[:-1]
    first_takeover_after = _next_true_index(takeover)
    first_success_after = _next_true_index(success)
    index = np.arange(len(stamps))
    done = (first_success_after <= nxt) & (first_success_after > index) | (index == len(stamps) - 1)
    rewards = np.where((first_success_after <= nxt) & (first_success_after > index), 1.0, 0.0)
    rewards -= np.where((first_takeover_after <= nxt) & (first_takeover_after > index) & ~intervention, penalty, 0.0)
    images, states = step_tensors(episode, keep, meta)
    return Transitions(images=images, states=states, next_index=nxt, chunks=chunks, rewards=rewards,
                       done=done.astype(float),
                       human=np.full(len(stamps), True) if all_human else intervention)


def _next_true_index(flags: np.ndarray) -> np.ndarray:
    """For each i, the smallest j >= i with flags[j], or len(flags) when there is none."""
    out = np.full(len(flags), len(flags))
    following = len(flags)
    for i in range(len(flags) - 1, -1, -1):
        if flags[i]:
            following = i
        out[i] = following
    return out


class ChunkCritic(nn.Module):
    """Twin Q(s, chunk) MLPs on the normalised state and the flattened normalised chunk."""

    def __init__(self, state_dim: int, chunk_dim: int, hidden: int):
        super().__init__()
        self.heads = nn.ModuleList(nn.Sequential(nn.Linear(state_dim + chunk_dim, hidden), nn.LayerNorm(hidden),
                                                 nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                                                 nn.Linear(hidden, 1)) for _ in range(2))

    def forward(self, state: torch.Tensor, chunk: torch.Tensor) -> torch.Tensor:
        """state (B, S), chunk (B, H, A) -> (2, B)."""
        x = torch.cat([state, chunk.flatten(1)], dim=1)
        return torch.stack([head(x)[:, 0] for head in self.heads])


class Learner:
    """Holds actor, critic and replay; `ingest` new episodes, `update` a few steps, `publish` weights."""

    def __init__(self, checkpoint: str | os.PathLike, workdir: str | os.PathLike, config: LearnerConfig):
        torch.set_num_threads(config.threads)
        torch.manual_seed(config.seed)
        self.config, self.workdir = config, Path(workdir)
        self.checkpoint = Path(checkpoint)
        self.actor = load_checkpoint(self.checkpoint)
        meta = self.actor.metadata
        state_dim = self.actor.normalizer.state.mean.numel()
        self.critic = ChunkCritic(state_dim, meta.horizon * 8, config.critic_hidden)
        self.target = ChunkCritic(state_dim, meta.horizon * 8, config.critic_hidden)
        self.target.load_state_dict(self.critic.state_dict())
        self.actor_optim = torch.optim.Adam(self.actor.parameters(), lr=config.actor_lr)
        self.critic_optim = torch.optim.Adam(self.critic.parameters(), lr=config.critic_lr)
        self.replay = Transitions.empty()
        self.seen: dict[str, list[int]] = {}  # log root -> episode indices ingested
        self.demo_roots: list[str] = []  # roots whose every transition is human-labelled
        self.steps, self.version, self.last_losses = 0, 0, {}
        self.generator = np.random.default_rng(config.seed)
        if (self.workdir / STATE_FILE).is_file():
            self._resume()

    # --- data --------------------------------------------------------------------------------------------
    def ingest(self, root: str | os.PathLike, demonstrations: bool = False, only: set[int] | None = None) -> int:
        """Add every complete episode of `root` not seen yet (or exactly `only`, when resuming); -> number of
        transitions added. Demonstrations: successful episodes only, every chunk human-labelled."""
        root = Path(root)
        if not root.is_dir():
            return 0
        key = str(root.resolve())
        seen = self.seen.setdefault(key, [])
        if demonstrations and key not in self.demo_roots:
            self.demo_roots.append(key)
        added = 0
        for index, path, outcome in finished_episodes(root, skip=set(seen) if only is None else set()):
            if only is not None and index not in only:
                continue
            if only is None:
                seen.append(index)
            if demonstrations and not outcome.get("success"):
                continue
            transitions = episode_transitions(path, self.actor, self.config.intervention_penalty,
                                              all_human=demonstrations)
            self.replay.extend(transitions)
            added += len(transitions.rewards)
        return added

    def _batch(self, index: np.ndarray) -> dict:
        r = self.replay
        nxt = r.next_index[index]
        return {"obs": {"images": r.images[index].float() / 255.0, "state": r.states[index]},
                "next": {"images": r.images[nxt].float() / 255.0, "state": r.states[nxt]},
                "chunk": torch.from_numpy(r.chunks[index].astype(np.float32)),
                "reward": torch.from_numpy(r.rewards[index].astype(np.float32)),
                "done": torch.from_numpy(r.done[index].astype(np.float32)),
                "human": torch.from_numpy(r.human[index])}

    def sample_indices(self) -> np.ndarray:
        """Half human-labelled, half online transitions (all from one pool when the other is empty)."""
        human, online = np.flatnonzero(self.replay.human), np.flatnonzero(~self.replay.human)
        half = self.config.batch_size // 2
        pools = [p for p in (human, online) if len(p)]
        if not pools:
            raise ConfigError("the learner has no transitions yet: ingest episodes first")
        if len(pools) == 1:
            return self.generator.choice(pools[0], self.config.batch_size)
        return np.concatenate([self.generator.choice(human, half),
                               self.generator.choice(online, self.config.batch_size - half)])

    # --- learning ----------------------------------------------------------------------------------------
    def _state(self, batch) -> torch.Tensor:
        return self.actor.normalizer.state.normalize(batch["state"])

    def _policy_chunk(self, batch) -> torch.Tensor:
        """The actor's normalised chunk for a batch (differentiable)."""
        was_training = self.actor.training
        self.actor.eval()  # deterministic (no dropout) so Q gradients are not noise
        chunk = self.actor._sample(batch, None)
        self.actor.train(was_training)
        return chunk

    def update(self, n: int) -> dict[str, float]:
        cfg, norm = self.config, self.actor.normalizer.action
        for _ in range(n):
            batch = self._batch(self.sample_indices())
            state, next_state = self._state(batch["obs"]), self._state(batch["next"])
            chunk = norm.normalize(batch["chunk"])
            with torch.no_grad():
                next_q = self.target(next_state, self._policy_chunk(batch["next"])).min(0).values
                target = batch["reward"] + cfg.discount * (1 - batch["done"]) * next_q
            q = self.critic(state, chunk)
            critic_loss = F.mse_loss(q, target.expand_as(q))
            self.critic_optim.zero_grad(set_to_none=True)
            critic_loss.backward()
            self.critic_optim.step()
            self.last_losses["critic"] = critic_loss.item()
            self.steps += 1
            if self.steps % cfg.actor_delay:
                continue
            self.actor.train()
            predicted = self._policy_chunk(batch["obs"])
            q_pi = self.critic(state, predicted)[0]
            scale = q_pi.abs().mean().detach().clamp(min=1e-3)
            human = batch["human"]
            bc = (F.l1_loss(predicted[human], chunk[human]) if human.any() else torch.zeros(()))
            q_weight = cfg.q_weight if self.steps >= cfg.critic_warmup_steps else 0.0
            actor_loss = -q_weight * q_pi.mean() / scale + cfg.bc_weight * bc
            self.actor_optim.zero_grad(set_to_none=True)
            actor_loss.backward()
            torch.nn.utils.clip_grad_norm_(self.actor.parameters(), 10.0)
            with self.actor.weights_lock:
                self.actor_optim.step()
            self.actor.eval()
            with torch.no_grad():
                for p, tp in zip(self.critic.parameters(), self.target.parameters()):
                    tp.lerp_(p, cfg.target_tau)
            self.last_losses.update(actor=actor_loss.item(), bc=bc.item(), q=q_pi.mean().item())
        return dict(self.last_losses)

    # --- weights and resume ------------------------------------------------------------------------------
    def publish(self) -> Path:
        """Write the actor's weights as the next version; -> the safetensors file (for ~/load_weights)."""
        self.version += 1
        folder = self.workdir / "weights"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{self.version:06d}.safetensors"
        _write_tensors(path, self.actor.state_dict())
        self.save()
        return path

    def save(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        _write_tensors(self.workdir / "actor.safetensors", self.actor.state_dict())
        _write_tensors(self.workdir / "critic.safetensors", self.critic.state_dict())
        _write_tensors(self.workdir / "target.safetensors", self.target.state_dict())
        for name, optim in (("actor_optim", self.actor_optim), ("critic_optim", self.critic_optim)):
            _write_tensors(self.workdir / f"{name}.safetensors", _optimizer_tensors(optim))
        state = {"steps": self.steps, "version": self.version, "seen": self.seen, "demo_roots": self.demo_roots,
                 "losses": self.last_losses,
                 "checkpoint": str(self.checkpoint), "config": dataclasses.asdict(self.config)}
        write_atomic(self.workdir / STATE_FILE, json.dumps(state, indent=1))

    def _resume(self) -> None:
        try:
            state = json.loads((self.workdir / STATE_FILE).read_text())
            self.actor.load_state_dict(_read_tensors(self.workdir / "actor.safetensors"))
            self.critic.load_state_dict(_read_tensors(self.workdir / "critic.safetensors"))
            self.target.load_state_dict(_read_tensors(self.workdir / "target.safetensors"))
            for name, optim in (("actor_optim", self.actor_optim), ("critic_optim", self.critic_optim)):
                _load_optimizer_tensors(optim, _read_tensors(self.workdir / f"{name}.safetensors"))
        except (OSError, ValueError, KeyError, RuntimeError) as error:
            raise ConfigError(f"learner state in {self.workdir} is unreadable ({type(error).__name__}: {error}); "
                              "move the folder away to start fresh") from None
        self.steps, self.version, self.last_losses = state["steps"], state["version"], state["losses"]
        self.seen, self.demo_roots = state["seen"], state["demo_roots"]
        for root, indices in self.seen.items():  # the episode log is the replay buffer's durable form
            self.ingest(root, demonstrations=root in self.demo_roots, only=set(indices))


def _optimizer_tensors(optim: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
    out = {}
    for i, state in optim.state_dict()["state"].items():
        for key, value in state.items():
            out[f"{i}.{key}"] = value if torch.is_tensor(value) else torch.tensor(value)
    return out


def _load_optimizer_tensors(optim: torch.optim.Optimizer, tensors: dict[str, torch.Tensor]) -> None:
    state_dict = optim.state_dict()
    state: dict[int, dict] = {}
    for name, value in tensors.items():
        index, key = name.split(".", 1)
        state.setdefault(int(index), {})[key] = value
    state_dict["state"] = state
    optim.load_state_dict(state_dict)


def _write_tensors(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    write_atomic(path, safetensors.torch.save({k: v.detach().contiguous().clone() for k, v in tensors.items()}))


def _read_tensors(path: Path) -> dict[str, torch.Tensor]:
    return safetensors.torch.load(path.read_bytes())

