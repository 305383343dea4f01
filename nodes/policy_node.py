"""Policy node: assembles fresh observations, runs inference in a worker thread (the executor never blocks),
and publishes each action chunk stamped with the time of the observation it was computed from.

A lifecycle node (`rclpy.lifecycle`): configure loads the policy and warms it up with one dummy inference,
activate starts publishing chunks, deactivate stops them, cleanup forgets the policy. With `autostart: true`
(default) it configures and activates itself, so graphs need no lifecycle manager; a manager (or
`ros2 lifecycle set /policy deactivate`) drives it through the standard `~/change_state` service.

Topics: `~/chunk` (or `~/joint_chunk`) chunks; `~/chunk_version` (std_msgs/Header: the chunk's stamp and the
weight version, published right before each chunk); `~/weight_version` latched; `/diagnostics` at 1 Hz.
Weights: setting `weights_path` verifies the file and swaps it in between two inferences (all-or-nothing; a
bad file is refused with the reason and the old weights keep running); `~/load_weights` (std_srvs/Trigger)
reloads the file `weights_path` names. The swap blocks this node's executor for at most one inference.
"""
from __future__ import annotations

import collections
import dataclasses
import threading
import time
from pathlib import Path

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import PoseStamped
from rcl_interfaces.msg import SetParametersResult
from rclpy.lifecycle import Node as LifecycleNode
from rclpy.lifecycle import TransitionCallbackReturn
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Bool, Float64MultiArray, Header, String
from std_srvs.srv import Trigger
from trajectory_msgs.msg import JointTrajectory, MultiDOFJointTrajectory

from deploy.control.chunks import CARTESIAN, JOINT, Chunk
from deploy.errors import ConfigError, DeployError
from deploy.graph.description import TOPICS
from deploy.nodes.common import COMMAND_QOS, LATCHED_QOS, SENSOR_QOS, declare_config, run_node
from deploy.nodes.conversions import (chunk_to_msg, chunk_version_to_msg, image_from_msg, joint_state_from_msg,
                                      labelled_array_from_msg, pose_from_msg, time_from_msg, time_to_msg)
from deploy.policies import expert, scripted  # noqa: F401  (registers the scripted policies)
from deploy.policies.base import Policy, make_policy
from deploy.policies.runtime import ExecutedFractionTrigger, LatencyWindow, committed_prefix, dummy_observation
from deploy.sensing.observation import ObservationAssembler

SCRIPTED_PREFIX = "scripted:"
TRIGGERS = ("rate", "executed_fraction")
VERSION_CHARS = 12  # published weight version = this many hex digits of the weights file's sha256
STATUS_SILENCE_S = 1.0  # executed_fraction falls back to the rate timer when chunk_status is this old


@dataclasses.dataclass
class PolicyNodeConfig:
    checkpoint: str = ""  # checkpoint directory, or "scripted:<name>"; "" = the package's demo policy
    inference_rate_hz: float = 5.0  # trigger "rate": chunks per second; "executed_fraction": fallback rate [Hz]
    image_max_age_s: float = 0.2  # older camera frames stop inference [s]
    state_max_age_s: float = 0.1  # older proprioception stops inference [s]
    seed: int = 0  # seeds stochastic policies
    torch_threads: int = 1  # torch intra-op threads; 1 gave the lower p99 beside the running sim graph (bench)
    autostart: bool = True  # configure + activate at startup (no lifecycle manager needed)
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
    return version[:VERSION_CHARS] if len(version) == 64 else version


class PolicyNode(LifecycleNode):
    def __init__(self):
        super().__init__("policy")
        self.config = declare_config(self, PolicyNodeConfig)
        self.policy: Policy | None = None
        self.version = "none"
        self._active = False
        self._publish_lock = threading.Lock()  # active flag vs. publishing: nothing is published after deactivate
        self._swap_lock = threading.Lock()  # one inference or one weight swap at a time: swaps land between chunks
        self._configure_error: DeployError | None = None
        self._autostarting = self.config.autostart  # its configure error is raised (one line), not logged
        self._entities: list = []  # subscriptions made at configure
        self.chunk_pub = self.chunk_version_pub = None
        self._receipt_s: collections.deque = collections.deque(maxlen=64)  # (reference stamp, receipt time) [s]
        self.forward = LatencyWindow()  # predict_chunk wall time
        self.stamp_to_publish = LatencyWindow()  # observation stamp -> chunk published (node clock)
        self.receipt_to_publish = LatencyWindow()  # reference input received -> chunk published
        self.skipped, self.last_reason = 0, ""
        self.last_chunk: Chunk | None = None
        self.trigger: ExecutedFractionTrigger | None = None
        self._status_at_s = -float("inf")
        self._armed = False  # next reference sample starts an inference

        self.add_on_set_parameters_callback(self.on_set_parameters)
        self.version_pub = self.create_publisher(String, "~/weight_version", LATCHED_QOS)
        self.diagnostics_pub = self.create_publisher(DiagnosticArray, "/diagnostics", COMMAND_QOS)
        self.create_service(Trigger, "~/load_weights", self.on_load_weights)
        self.create_subscription(Float64MultiArray, "/controller/chunk_status", self.on_chunk_status, SENSOR_QOS)
        self._intervening = False
        self.create_subscription(Bool, TOPICS["intervention_active"], self.on_intervention, COMMAND_QOS)
        self.create_timer(1.0, self.publish_diagnostics)
        self.create_timer(1.0 / self.config.inference_rate_hz, self.on_rate_tick)
        self._wake, self._stop = threading.Event(), threading.Event()
        self._worker = threading.Thread(target=self.inference_loop, name="inference", daemon=True)
        self._worker.start()
        if self.config.autostart:
            if self.trigger_configure() != TransitionCallbackReturn.SUCCESS:
                raise self._configure_error or ConfigError("policy node: configure failed")
            self.trigger_activate()
        self._autostarting = False

    # --- lifecycle ---------------------------------------------------------------------------------------
    def on_configure(self, state) -> TransitionCallbackReturn:
        try:
            self.configure_policy()
        except DeployError as error:
            self._configure_error = error
            if not self._autostarting:
                self.get_logger().error(str(error))
            self.teardown()
            return TransitionCallbackReturn.FAILURE
        return super().on_configure(state)

    def configure_policy(self):
        if not self.config.checkpoint.startswith(SCRIPTED_PREFIX) and self.config.checkpoint:
            import torch

            torch.set_num_threads(self.config.torch_threads)
        policy = load_policy(self.config.checkpoint, self.config.seed)
        if self.config.weights_path:
            self.swap_weights(policy, self.config.weights_path)
        meta = policy.metadata
        policy.predict_chunk(dummy_observation(meta))  # warm-up: first-call allocations happen now
        policy.reset()
        self.policy, self.version = policy, short_version(policy.weight_version)
        self.space = CARTESIAN if meta.action_space == "cartesian" else JOINT
        self.reference_key = "ee_pose" if "ee_pose" in meta.state_keys else meta.state_keys[0]
        max_age = {f"camera {name}": self.config.image_max_age_s for name in meta.image_keys}
        max_age.update({key: self.config.state_max_age_s for key in meta.state_keys})
        self.assembler = ObservationAssembler(max_age, reference_key=self.reference_key)
        for name in meta.image_keys:
            self._entities.append(self.create_subscription(
                Image, f"/cameras/{name}/image_raw", lambda msg, key=f"camera {name}": self.on_image(key, msg),
                SENSOR_QOS))
        if "ee_pose" in meta.state_keys:
            self._entities.append(self.create_subscription(PoseStamped, TOPICS["ee_pose"], self.on_pose, SENSOR_QOS))
        if "cube_pose" in meta.state_keys:  # privileged sim state, read by the scripted expert
            self._entities.append(self.create_subscription(PoseStamped, TOPICS["cube_pose"], self.on_cube_pose,
                                                           COMMAND_QOS))
        if {"gripper_width", "joint_positions"} & set(meta.state_keys):
            self._entities.append(self.create_subscription(JointState, TOPICS["joint_states"], self.on_joints,
                                                           SENSOR_QOS))
        chunk_type = MultiDOFJointTrajectory if self.space is CARTESIAN else JointTrajectory
        topic = "~/chunk" if self.space is CARTESIAN else "~/joint_chunk"
        self.chunk_pub = self.create_lifecycle_publisher(chunk_type, topic, COMMAND_QOS)
        self.chunk_version_pub = self.create_lifecycle_publisher(Header, "~/chunk_version", COMMAND_QOS)
        if self.config.trigger == "executed_fraction":
            self.trigger = ExecutedFractionTrigger(self.config.execute_fraction, meta.horizon,
                                                   timeout_s=meta.horizon * meta.dt_s)
        self.version_pub.publish(String(data=self.version))
        self.get_logger().info(f"loaded {self.config.checkpoint or 'the demo policy'} (weights {self.version}, "
                               f"cameras {list(meta.image_keys)}, state {list(meta.state_keys)})")

    def on_activate(self, state) -> TransitionCallbackReturn:
        with self._publish_lock:
            self._active, self.last_chunk = True, None
        return super().on_activate(state)

    def on_deactivate(self, state) -> TransitionCallbackReturn:
        with self._publish_lock:
            self._active = False
        return super().on_deactivate(state)

    def on_cleanup(self, state) -> TransitionCallbackReturn:
        self.teardown()
        return super().on_cleanup(state)

    def on_shutdown(self, state) -> TransitionCallbackReturn:
        with self._publish_lock:
            self._active = False
        self.teardown()
        return super().on_shutdown(state)

    def teardown(self):
        with self._swap_lock:
            for entity in self._entities:
                self.destroy_subscription(entity)
            for publisher in (self.chunk_pub, self.chunk_version_pub):
                if publisher is not None:
                    self.destroy_lifecycle_publisher(publisher)
            self._entities, self.chunk_pub, self.chunk_version_pub = [], None, None
            self.policy, self.trigger, self.last_chunk = None, None, None

    # --- inputs ------------------------------------------------------------------------------------------
    def on_image(self, key: str, msg: Image):
        self.assembler.update(key, time_from_msg(msg.header.stamp), image_from_msg(msg))
        self._maybe_start((key,), msg.header.stamp)

    def on_pose(self, msg: PoseStamped):
        stamp_s, position, quat = pose_from_msg(msg)
        self.assembler.update("ee_pose", stamp_s, np.concatenate([position, quat]))
        self._maybe_start(("ee_pose",), msg.header.stamp)

    def on_cube_pose(self, msg: PoseStamped):
        stamp_s, position, quat = pose_from_msg(msg)
        self.assembler.update("cube_pose", stamp_s, np.concatenate([position, quat]))

    def on_joints(self, msg: JointState):
        stamp_s, q, _, _, gripper = joint_state_from_msg(msg)
        self.assembler.update("joint_positions", stamp_s, q)
        self.assembler.update("gripper_width", stamp_s, np.array([gripper]))
        self._maybe_start(("joint_positions", "gripper_width"), msg.header.stamp)

    def _maybe_start(self, keys: tuple[str, ...], stamp):
        """An armed trigger starts inference on the next reference sample, so the observation is as fresh as
        the sensors allow (not up to one sensor period old, as at an arbitrary timer tick)."""
        if self.reference_key not in keys:
            return
        self._receipt_s.append((time_from_msg(stamp), self.now_s()))
        if self._armed:
            self._armed = False
            self._wake.set()

    def on_chunk_status(self, msg: Float64MultiArray):
        trigger = self.trigger
        if trigger is None or not self._active:
            return
        status = labelled_array_from_msg(msg)
        now_s = self.now_s()
        self._status_at_s = now_s
        if trigger.update(status.get("lag_s", float("nan")), status.get("steps_remaining", 0.0),
                          bool(status.get("exhausted", 1.0)), now_s):
            self._armed = True

    def on_intervention(self, msg: Bool):
        """The operator handed back: restart from the current state, with no RTC prefix from a stale chunk."""
        if self._intervening and not msg.data:
            with self._swap_lock:
                self.last_chunk = None
                if self.policy is not None:
                    self.policy.reset()
            self.get_logger().info("operator handed back: policy reset, restarting from the current state")
        self._intervening = msg.data

    def on_rate_tick(self):
        if not self._active:
            return
        if self.trigger is not None and self.now_s() - self._status_at_s < STATUS_SILENCE_S:
            return  # the chunk status decides
        if self._armed:  # a whole period without a reference sample: infer anyway, to report why not
            self._wake.set()
        self._armed = True

    # --- inference ---------------------------------------------------------------------------------------
    def inference_loop(self):
        while not self._stop.is_set():
            if not self._wake.wait(timeout=0.5):
                continue
            self._wake.clear()
            if self._active:
                published = False
                try:
                    published = self.infer_once()
                except Exception as error:  # noqa: BLE001  (the worker must survive; the reason is reported)
                    self.skip(f"inference failed: {type(error).__name__}: {error}")
                if self.trigger is not None:
                    self.trigger.done(published)

    def infer_once(self) -> bool:
        now_s = self.now_s()
        observation, verdict = self.assembler.assemble(now_s)
        if observation is None:
            self.skip(verdict)
            return False
        with self._swap_lock:
            policy = self.policy
            if policy is None:
                return False
            meta = policy.metadata
            prefix = self.prefix_for(observation.stamp_s, now_s, meta) if self.config.rtc_prefix else None
            start = time.perf_counter()
            actions = policy.predict_chunk(observation, prefix)  # (H, A)
            forward_s = time.perf_counter() - start
            version = self.version
        chunk = Chunk(stamp_s=observation.stamp_s, times_s=meta.dt_s * np.arange(1, len(actions) + 1),
                      actions=actions, weight_version=version)
        msg, version_msg = chunk_to_msg(chunk, self.space), chunk_version_to_msg(chunk.stamp_s, version)
        with self._publish_lock:
            if not self._active or self.chunk_pub is None:
                return False
            self.chunk_version_pub.publish(version_msg)
            self.chunk_pub.publish(msg)
        published_s = self.now_s()
        self.last_chunk = chunk
        self.forward.add(forward_s, published_s)
        self.stamp_to_publish.add(published_s - observation.stamp_s, published_s)
        receipt = next((r for s, r in reversed(self._receipt_s) if s == observation.stamp_s), None)
        if receipt is not None:
            self.receipt_to_publish.add(published_s - receipt, published_s)
        if self.last_reason:
            self.get_logger().info("inferring again")
            self.last_reason = ""
        return True

    def prefix_for(self, stamp_s: float, now_s: float, meta) -> np.ndarray | None:
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

    def skip(self, reason: str):
        self.skipped += 1
        if reason != self.last_reason:
            self.get_logger().warning(f"not inferring: {reason}")
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
        if self.policy is None:
            return False, "policy node is not configured: no policy to load weights into"
        if not path:
            return False, "weights_path is empty"
        try:
            self.swap_weights(self.policy, path)
        except DeployError as error:
            self.get_logger().error(f"refused weights: {error}")
            return False, str(error)
        self.version_pub.publish(String(data=self.version))
        self.get_logger().info(f"swapped in weights {self.version} from {path}")
        return True, f"weights {self.version}"

    def on_set_parameters(self, parameters) -> SetParametersResult:
        for parameter in parameters:
            if parameter.name == "weights_path" and parameter.value != self.config.weights_path:
                if self.policy is None:  # not configured: configure will verify and load it
                    self.config.weights_path = parameter.value
                    continue
                ok, reason = self.reload(parameter.value)
                if not ok:
                    return SetParametersResult(successful=False, reason=reason)
                self.config.weights_path = parameter.value
            elif parameter.name in {f.name for f in dataclasses.fields(PolicyNodeConfig)} and \
                    parameter.name != "weights_path" and parameter.value != getattr(self.config, parameter.name):
                return SetParametersResult(successful=False,
                                           reason=f"parameter '{parameter.name}' is read at startup only")
        return SetParametersResult(successful=True)

    def on_load_weights(self, request, response):
        response.success, response.message = self.reload(self.config.weights_path)
        return response

    # --- diagnostics -------------------------------------------------------------------------------------
    def publish_diagnostics(self):
        now_s = self.now_s()
        ms = lambda window, q: f"{1000 * window.percentile_s(q):.1f}"  # noqa: E731
        state = self._state_machine.current_state[1]
        values = {"state": state, "weight_version": self.version, "trigger": self.config.trigger,
                  "forward_p50_ms": ms(self.forward, 50), "forward_p99_ms": ms(self.forward, 99),
                  "stamp_to_publish_p50_ms": ms(self.stamp_to_publish, 50),
                  "stamp_to_publish_p99_ms": ms(self.stamp_to_publish, 99),
                  "receipt_to_publish_p50_ms": ms(self.receipt_to_publish, 50),
                  "receipt_to_publish_p99_ms": ms(self.receipt_to_publish, 99),
                  "chunk_rate_hz": f"{self.forward.rate_hz(now_s):.2f}", "chunks": str(self.forward.count),
                  "skipped_observations": str(self.skipped), "last_skip_reason": self.last_reason,
                  "torch_threads": str(self.config.torch_threads)}
        level = DiagnosticStatus.WARN if self.last_reason or state != "active" else DiagnosticStatus.OK
        message = self.last_reason or ("ok" if state == "active" else state)
        diag = DiagnosticStatus(level=level, name="policy: inference", hardware_id=self.config.checkpoint or "demo",
                                message=message, values=[KeyValue(key=k, value=v) for k, v in values.items()])
        array = DiagnosticArray(status=[diag])
        array.header.stamp = time_to_msg(now_s)
        self.diagnostics_pub.publish(array)

    def now_s(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    def close(self):
        self._active = False
        self._stop.set()
        self._worker.join(timeout=2.0)


def main():
    run_node(PolicyNode, skip_teardown=True)


if __name__ == "__main__":
    main()
