"""Running a policy online, ROS-free: what the policy node does between messages in and chunks out.

The node feeds samples in (`observe`, `on_chunk_status`, `on_intervention`, `on_rate_tick`) and publishes what
comes out through the two callbacks it passes; the reasons for each piece:

- Inference runs on a worker thread, so the node's executor never blocks. A trigger (the rate tick, or the
  controller's chunk status for "executed_fraction") arms it, and the next reference sample starts it: the
  observation is then as fresh as the sensors allow, not up to one sensor period old.
- A missing or stale input skips the inference; the skip is counted and its reason kept for the diagnostics
  and logged once per change, so a silent camera is named rather than guessed.
- A chunk is stamped with the stamp of the observation it was computed from (the controller places its points
  by that time) and carries the weight version that computed it.
- Weights are verified before they are swapped in, between two inferences, all-or-nothing: a bad file is
  refused with the reason and the old weights keep running.
- With `rtc_prefix`, each inference gets the part of the previous chunk that will run before its chunk lands.
"""
from __future__ import annotations

import collections
import dataclasses
import threading
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from deploy.control.chunks import CARTESIAN, JOINT, ActionSpace, Chunk
from deploy.control.runner import OK, WARN
from deploy.errors import ConfigError, DeployError
from deploy.policies import expert, scripted  # noqa: F401  (registers the scripted policies)
from deploy.policies.base import Policy, PolicyMetadata, make_policy
from deploy.policies.runtime import ExecutedFractionTrigger, LatencyWindow, committed_prefix, dummy_observation
from deploy.sensing.observation import ObservationAssembler

SCRIPTED_PREFIX = "scripted:"
TRIGGERS = ("rate", "executed_fraction")
VERSION_CHARS = 12  # published weight version = this many hex digits of the weights file's sha256
STATUS_SILENCE_S = 1.0  # executed_fraction falls back to the rate timer when chunk_status is this old
WAKE_POLL_S = 0.5  # how often the idle worker looks at the stop request


@dataclasses.dataclass
class PolicyRunnerConfig:
    checkpoint: str = ""  # checkpoint directory, or "scripted:<name>"; "" = the package's demo policy
    inference_rate_hz: float = 5.0  # trigger "rate": chunks per second; "executed_fraction": fallback rate [Hz]
    image_max_age_s: float = 0.2  # older camera frames stop inference [s]
    state_max_age_s: float = 0.1  # older proprioception stops inference [s]
    seed: int = 0  # seeds stochastic policies
    torch_threads: int = 1  # torch intra-op threads; 1 gave the lower p99 beside the running sim graph (bench)
    autostart: bool = True  # the node configures + activates itself at startup (no lifecycle manager needed)
    weights_path: str = ""  # safetensors file swapped into a learned policy; set at run time to hot-swap
    trigger: str = "rate"  # "rate" | "executed_fraction" (infer when the executing chunk is that far done)
    execute_fraction: float = 0.5  # trigger "executed_fraction": fraction of the chunk executed [0..1]
    rtc_prefix: bool = True  # pass the committed prefix of the previous chunk to predict_chunk

    def __post_init__(self):
        if not 0.1 <= self.inference_rate_hz <= 100.0:
            raise ConfigError(f"inference_rate_hz {self.inference_rate_hz} outside [0.1, 100]")
        for name in ("image_max_age_s", "state_max_age_s"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name} {getattr(self, name)} must be > 0")
        if not 1 <= self.torch_threads <= 64:
            raise ConfigError(f"torch_threads {self.torch_threads} outside [1, 64]")
        if self.trigger not in TRIGGERS:
            raise ConfigError(f"trigger '{self.trigger}' is not one of {'|'.join(TRIGGERS)}")
        if not 0.0 < self.execute_fraction < 1.0:
            raise ConfigError(f"execute_fraction {self.execute_fraction} must be in (0, 1)")


def load_policy(checkpoint: str, seed: int) -> Policy:
    """"" or "scripted:<name>" -> scripted policy; a directory -> learned checkpoint (ConfigError if bad)."""
    if checkpoint == "":
        checkpoint = SCRIPTED_PREFIX + "circle"
    if checkpoint.startswith(SCRIPTED_PREFIX):
        return make_policy(checkpoint[len(SCRIPTED_PREFIX):])
    from deploy.policies.checkpoint import load_checkpoint, weights_sha256  # torch only for learned policies

    policy = load_checkpoint(checkpoint, expected_action_space="cartesian", seed=seed)
    policy.weight_version = weights_sha256(Path(checkpoint) / "model.safetensors")
    return policy


def short_version(version: str) -> str:
    """A sha256 is published by its first VERSION_CHARS digits (readable in logs); other names as they are."""
    return version[:VERSION_CHARS] if len(version) == 64 else version


@dataclasses.dataclass(frozen=True)
class PolicyHealth:
    """What the diagnostics say about inference: level (OK/WARN), one-line message, key/value details."""

    level: int
    message: str
    values: dict[str, str]


class PolicyRunner:
    """One policy, its inputs, its worker thread and its weights; the node translates messages to and from it.

    `clock` -> now [s] on the node's clock (sim time in replay). `publish_chunk(chunk)` publishes a chunk and
    returns False if it could not (no publisher); it is called with the active flag held, so nothing is
    published after `deactivate`. `publish_version(version)` announces the running weights. `logger` has
    info/warning/error (rclpy's node logger or a logging.Logger).
    """

    def __init__(self, config: PolicyRunnerConfig, clock: Callable[[], float], logger,
                 publish_chunk: Callable[[Chunk], bool], publish_version: Callable[[str], None]):
        self.config = config
        self._clock, self._log = clock, logger
        self._publish_chunk, self._publish_version = publish_chunk, publish_version
        self.policy: Policy | None = None
        self.version = "none"
        self.space: ActionSpace | None = None
        self.reference_key = ""
        self.assembler: ObservationAssembler | None = None
        self.trigger: ExecutedFractionTrigger | None = None
        self.last_chunk: Chunk | None = None
        self.skipped, self.last_reason = 0, ""
        self.forward = LatencyWindow()  # predict_chunk wall time
        self.stamp_to_publish = LatencyWindow()  # observation stamp -> chunk published (node clock)
        self.receipt_to_publish = LatencyWindow()  # reference input received -> chunk published
        self._receipt_s: collections.deque = collections.deque(maxlen=64)  # (reference stamp, receipt time) [s]
        self._active = False
        self._armed = False  # next reference sample starts an inference
        self._intervening = False
        self._status_at_s = -float("inf")
        self._publish_lock = threading.Lock()  # active flag vs. publishing: nothing is published after deactivate
        self._swap_lock = threading.Lock()  # one inference or one weight swap at a time: swaps land between chunks
        self._wake, self._stop = threading.Event(), threading.Event()
        self._worker = threading.Thread(target=self._inference_loop, name="inference", daemon=True)
        self._worker.start()

    # --- lifecycle ---------------------------------------------------------------------------------------
    def configure(self) -> PolicyMetadata:
        """Load the policy (and `weights_path`), warm it up, wire its inputs; DeployError names what is bad.
        -> its metadata, which says which inputs the node must subscribe to."""
        if not self.config.checkpoint.startswith(SCRIPTED_PREFIX) and self.config.checkpoint:
            import torch

            torch.set_num_threads(self.config.torch_threads)
        policy = load_policy(self.config.checkpoint, self.config.seed)
        if self.config.weights_path:
            self.swap_weights(policy, self.config.weights_path)
        meta = policy.metadata
        policy.predict_chunk(dummy_observation(meta))  # warm-up: first-call allocations happen now
        policy.reset()
        self.space = CARTESIAN if meta.action_space == "cartesian" else JOINT
        self.reference_key = "ee_pose" if "ee_pose" in meta.state_keys else meta.state_keys[0]
        max_age = {f"camera {name}": self.config.image_max_age_s for name in meta.image_keys}
        max_age.update({key: self.config.state_max_age_s for key in meta.state_keys})
        self.assembler = ObservationAssembler(max_age, reference_key=self.reference_key)
        if self.config.trigger == "executed_fraction":
            self.trigger = ExecutedFractionTrigger(self.config.execute_fraction, meta.horizon,
                                                   timeout_s=meta.horizon * meta.dt_s)
        self.policy, self.version = policy, short_version(policy.weight_version)
        self._publish_version(self.version)
        self._log.info(f"loaded {self.config.checkpoint or 'the demo policy'} (weights {self.version}, "
                       f"cameras {list(meta.image_keys)}, state {list(meta.state_keys)})")
        return meta

    def activate(self) -> None:
        with self._publish_lock:
            self._active, self.last_chunk = True, None

    def deactivate(self) -> None:
        with self._publish_lock:
            self._active = False

    def forget(self) -> None:
        """Drop the policy (cleanup): a later configure loads it afresh."""
        with self._swap_lock:
            self.policy, self.trigger, self.last_chunk = None, None, None

    def close(self) -> None:
        self._active = False
        self._stop.set()
        self._worker.join(timeout=2.0)

    # --- inputs ------------------------------------------------------------------------------------------
    def observe(self, samples: dict[str, Any], stamp_s: float, starts_inference: bool = True) -> None:
        """Store samples sharing one stamp. An armed trigger starts inference on the next reference sample;
        `starts_inference=False` for inputs that never start one (the privileged cube pose)."""
        for key, value in samples.items():
            self.assembler.update(key, stamp_s, value)
        if not starts_inference or self.reference_key not in samples:
            return
        self._receipt_s.append((stamp_s, self._clock()))
        if self._armed:
            self._armed = False
            self._wake.set()

    def on_chunk_status(self, status: dict[str, float]) -> None:
        """The controller's chunk status (lag_s, steps_remaining, exhausted) drives trigger executed_fraction."""
        trigger = self.trigger
        if trigger is None or not self._active:
            return
        now_s = self._clock()
        self._status_at_s = now_s
        if trigger.update(status.get("lag_s", float("nan")), status.get("steps_remaining", 0.0),
                          bool(status.get("exhausted", 1.0)), now_s):
            self._armed = True

    def on_intervention(self, active: bool) -> None:
        """The operator handed back: restart from the current state, with no RTC prefix from a stale chunk."""
        if self._intervening and not active:
            with self._swap_lock:
                self.last_chunk = None
                if self.policy is not None:
                    self.policy.reset()
            self._log.info("operator handed back: policy reset, restarting from the current state")
        self._intervening = active

    def on_rate_tick(self) -> None:
        if not self._active:
            return
        if self.trigger is not None and self._clock() - self._status_at_s < STATUS_SILENCE_S:
            return  # the chunk status decides
        if self._armed:  # a whole period without a reference sample: infer anyway, to report why not
            self._wake.set()
        self._armed = True

    # --- inference ---------------------------------------------------------------------------------------
    def _inference_loop(self) -> None:
        while not self._stop.is_set():
            if not self._wake.wait(timeout=WAKE_POLL_S):
                continue
            self._wake.clear()
            if self._active:
                published = False
                try:
                    published = self.infer_once()
                except Exception as error:  # noqa: BLE001  (the worker must survive; the reason is reported)
                    self._skip(f"inference failed: {type(error).__name__}: {error}")
                if self.trigger is not None:
                    self.trigger.done(published)

    def infer_once(self) -> bool:
        """Assemble an observation, infer, publish the chunk stamped with the observation's stamp.
        -> whether a chunk was published (False: skipped, not configured, or inactive)."""
        now_s = self._clock()
        observation, verdict = self.assembler.assemble(now_s)
        if observation is None:
            self._skip(verdict)
            return False
        with self._swap_lock:
            policy = self.policy
            if policy is None:
                return False
            meta = policy.metadata
            prefix = self._prefix_for(observation.stamp_s, now_s, meta) if self.config.rtc_prefix else None
            start = time.perf_counter()
            actions = policy.predict_chunk(observation, prefix)  # (H, A)
            forward_s = time.perf_counter() - start
            version = self.version
        chunk = Chunk(stamp_s=observation.stamp_s, times_s=meta.dt_s * np.arange(1, len(actions) + 1),
                      actions=actions, weight_version=version)
        with self._publish_lock:
            if not self._active or not self._publish_chunk(chunk):
                return False
        published_s = self._clock()
        self.last_chunk = chunk
        self.forward.add(forward_s, published_s)
        self.stamp_to_publish.add(published_s - observation.stamp_s, published_s)
        receipt = next((r for s, r in reversed(self._receipt_s) if s == observation.stamp_s), None)
        if receipt is not None:
            self.receipt_to_publish.add(published_s - receipt, published_s)
        if self.last_reason:
            self._log.info("inferring again")
            self.last_reason = ""
        return True

    def _prefix_for(self, stamp_s: float, now_s: float, meta: PolicyMetadata) -> np.ndarray | None:
        """RTC: points of our previous chunk that will be executing before this inference's chunk lands
        (now + p50 of recent stamp->publish latency), on the new chunk's grid. Policies that cannot inpaint
        ignore it. (Our own previous chunk, not the controller's blended plan: simple, and exact for
        strategy rtc_frozen_prefix / replace.)"""
        last = self.last_chunk
        if last is None:
            return None
        latency_s = self.stamp_to_publish.percentile_s(50)
        latency_s = 0.0 if latency_s != latency_s else latency_s
        return committed_prefix(last.stamp_s, last.times_s, last.actions, stamp_s, meta.dt_s, meta.horizon,
                                until_s=now_s + latency_s, quat=self.space.quat)

    def _skip(self, reason: str) -> None:
        self.skipped += 1
        if reason != self.last_reason:
            self._log.warning(f"not inferring: {reason}")
        self.last_reason = reason

    # --- weights -----------------------------------------------------------------------------------------
    def swap_weights(self, policy: Policy, path: str) -> str:
        """Verify `path` and swap it into `policy` between two inferences; ConfigError leaves the old weights."""
        from deploy.policies.checkpoint import load_weights
        from deploy.policies.learned import LearnedPolicy

        if not isinstance(policy, LearnedPolicy):
            raise ConfigError(f"weights_path '{path}': the running policy ({self.config.checkpoint or 'demo'}) "
                              "is scripted and has no weights")
        with self._swap_lock:
            digest = load_weights(policy, path)
            if policy is self.policy:
                self.version = short_version(digest)
        return digest

    def reload(self, path: str) -> tuple[bool, str]:
        """Swap in the weights at `path`, announcing the new version. -> (swapped, reason or new version)."""
        if self.policy is None:
            return False, "policy node is not configured: no policy to load weights into"
        if not path:
            return False, "weights_path is empty"
        try:
            self.swap_weights(self.policy, path)
        except DeployError as error:
            self._log.error(f"refused weights: {error}")
            return False, str(error)
        self._publish_version(self.version)
        self._log.info(f"swapped in weights {self.version} from {path}")
        return True, f"weights {self.version}"

    def change_parameters(self, changes: list[tuple[str, Any]]) -> tuple[bool, str]:
        """Run-time parameter changes: only `weights_path`, which swaps weights (before configure it is only
        kept, for configure to load); every other config field is read at startup. -> (accepted, reason)."""
        fields = {field.name for field in dataclasses.fields(PolicyRunnerConfig)}
        for name, value in changes:
            if name == "weights_path" and value != self.config.weights_path:
                if self.policy is None:  # not configured: configure will verify and load it
                    self.config.weights_path = value
                    continue
                ok, reason = self.reload(value)
                if not ok:
                    return False, reason
                self.config.weights_path = value
            elif name in fields and name != "weights_path" and value != getattr(self.config, name):
                return False, f"parameter '{name}' is read at startup only"
        return True, ""

    # --- diagnostics -------------------------------------------------------------------------------------
    def health(self, state: str, now_s: float) -> PolicyHealth:
        """Latencies, chunk rate and skips; WARN while skipping or not active (`state`: the lifecycle state)."""
        ms = lambda window, q: f"{1000 * window.percentile_s(q):.1f}"  # noqa: E731
        values = {"state": state, "weight_version": self.version, "trigger": self.config.trigger,
                  "forward_p50_ms": ms(self.forward, 50), "forward_p99_ms": ms(self.forward, 99),
                  "stamp_to_publish_p50_ms": ms(self.stamp_to_publish, 50),
                  "stamp_to_publish_p99_ms": ms(self.stamp_to_publish, 99),
                  "receipt_to_publish_p50_ms": ms(self.receipt_to_publish, 50),
                  "receipt_to_publish_p99_ms": ms(self.receipt_to_publish, 99),
                  "chunk_rate_hz": f"{self.forward.rate_hz(now_s):.2f}", "chunks": str(self.forward.count),
                  "skipped_observations": str(self.skipped), "last_skip_reason": self.last_reason,
                  "torch_threads": str(self.config.torch_threads)}
        level = WARN if self.last_reason or state != "active" else OK
        return PolicyHealth(level, self.last_reason or ("ok" if state == "active" else state), values)
