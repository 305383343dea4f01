"""Episode node: runs seeded episodes on the graph and logs every step to the episode log.

Per episode: deactivate the policy (lifecycle), drive the arm to the start pose with homing chunks on the policy's
chunk topic (while the policy is inactive nothing else writes it), place the cube (`/sim/reset`), activate the
policy, log a step at `step_rate_hz` until the task reports success for `success_hold_s` or `timeout_s` passes,
deactivate the policy and close the episode with its outcome.

A log that cannot be written (a full disk) ends the episode at once: the writer says ERROR once naming the folder,
the controller holds the arm where it is (`/controller/hold`, no jump; `/controller/release` frees it), the policy
is deactivated, and no further episode starts. The graph stays up, the arm held: the session keeps re-sending a
chunk at the held reference, so the controller's stale-chunk watchdog does not soften the arm (softened, it
drifted 5 mm in 3 s and more on a loaded machine; test/test_episode_log_full_disk.py).

A step holds the camera frames, proprioception, the cube pose (sim), the executed action (the controller's
reference + gripper), the policy's latest chunk and weight version, the operator's latest chunk and due action,
the intervention flag, success and reward, each as the newest sample at the step's time. Used by `deploy collect-demos`,
`deploy eval` (in-process, see deploy/learning/commands.py).
"""
from __future__ import annotations

import dataclasses
import os
import re
import signal
import threading
import time
from pathlib import Path

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticStatus
from geometry_msgs.msg import PoseStamped
from lifecycle_msgs.msg import Transition
from lifecycle_msgs.srv import ChangeState
from rclpy.node import Node
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Bool, Header
from std_srvs.srv import Trigger
from trajectory_msgs.msg import MultiDOFJointTrajectory

from deploy.control.chunks import CARTESIAN, Chunk
from deploy.data.episodes import EpisodeWriter
from deploy.errors import ConfigError, DeployError
from deploy.graph.description import TOPICS, resolve
from deploy.graph.runner import GraphRunner, check_modules, child_environment
from deploy.learning.episodes import (EpisodeClock, EpisodeConfig, LatestValues, console_line, due_action,
                                      homing_actions, status_line)
from deploy.lists import comma_list
from deploy.nodes.common import COMMAND_QOS, LATCHED_QOS, SENSOR_QOS, BackgroundSpin, declare_config, run_node
from deploy.nodes.conversions import (chunk_from_msg, chunk_to_msg, chunk_version_from_msg, image_from_msg,
                                      joint_state_from_msg, pose_from_msg, time_from_msg)

SERVICE_TIMEOUT_S = 30.0  # a policy node still loading its checkpoint on a loaded 2-core machine took > 10 s
HOMING_REPUBLISH_S = 0.2  # below the controller's stale-chunk timeout
HUMAN_SILENCE_S = 0.5  # an operator chunk this long past its end no longer counts as a human action
REFERENCE_SILENCE_S = 2.0  # the controller publishes its reference at its state rate: this long silent = not running
SERVICE_NODES = {"/sim/reset": "sim", "/policy/change_state": "policy",  # who answers the services the runner calls
                 "/controller/hold": "controller"}


def step_shapes(horizon: int) -> dict[str, tuple[int, ...]]:
    """The numeric fields of one logged step (besides stamps, frames and the weight version)."""
    return {"ee_pose": (7,), "gripper_width": (1,), "joint_positions": (7,), "joint_velocities": (7,),
            "cube_pose": (7,), "executed_action": (8,), "reference_pose": (7,), "policy_chunk": (horizon, 8),
            "policy_chunk_stamp_s": (), "human_chunk": (horizon, 8), "human_chunk_times_s": (horizon,),
            "human_chunk_stamp_s": (), "human_action": (8,), "intervention": (), "success": ()}


class EpisodeStopped(Exception):
    """The node is closing: the thread driving episodes unwinds (the open episode is logged as interrupted)."""


class EpisodeNode(Node):
    def __init__(self, cameras: tuple[str, ...], config: EpisodeConfig, horizon: int = 16, context=None):
        super().__init__("episodes", context=context)
        self.stopping = threading.Event()  # set by close(); every wait of the episode loop watches it
        self.cameras, self.config, self.horizon = tuple(cameras), config, horizon
        self.latest = LatestValues(step_shapes(horizon))
        self.weight_version = "none"
        self._tcp: np.ndarray | None = None
        self._human: Chunk | None = None
        self._policy_active: bool | None = None  # unknown until we set it
        self._reference_heard: float | None = None  # time.monotonic() of the last /controller/reference
        self.running_since_s: float | None = None  # node-clock start of the episode being logged, None between
        self.watch_cameras(self.cameras)
        self.create_subscription(PoseStamped, TOPICS["ee_pose"], self.on_pose, SENSOR_QOS)
        self.create_subscription(JointState, TOPICS["joint_states"], self.on_joints, SENSOR_QOS)
        self.create_subscription(PoseStamped, "/controller/reference", self.on_reference, SENSOR_QOS)
        self.create_subscription(PoseStamped, TOPICS["cube_pose"], self.on_cube, COMMAND_QOS)
        self.create_subscription(Bool, "/sim/success", lambda m: self.latest.set("success", float(m.data)), COMMAND_QOS)
        self.create_subscription(Bool, TOPICS["intervention_active"],
                                 lambda m: self.latest.set("intervention", float(m.data)), COMMAND_QOS)
        self.create_subscription(MultiDOFJointTrajectory, TOPICS["policy_chunk"], self.on_policy_chunk, COMMAND_QOS)
        self.create_subscription(Header, "/policy/chunk_version", self.on_chunk_version, COMMAND_QOS)
        self.create_subscription(MultiDOFJointTrajectory, "/intervention/human_chunk", self.on_human_chunk,
                                 COMMAND_QOS)
        self.homing_pub = self.create_publisher(MultiDOFJointTrajectory, TOPICS["policy_chunk"], COMMAND_QOS)
        self.active_pub = self.create_publisher(Bool, "/episode/active", LATCHED_QOS)  # the operator's cue
        self.reset_client = self.create_client(Trigger, "/sim/reset")
        self.lifecycle_client = self.create_client(ChangeState, "/policy/change_state")
        self.hold_client = self.create_client(Trigger, "/controller/hold")

    # --- inputs ------------------------------------------------------------------------------------------
    def watch_cameras(self, cameras: tuple[str, ...]):
        self.cameras = cameras
        for camera in cameras:
            self.create_subscription(Image, f"/cameras/{camera}/image_raw",
                                     lambda msg, c=camera: self.latest.set_frame(c, time_from_msg(msg.header.stamp),
                                                                                  image_from_msg(msg)), SENSOR_QOS)

    def on_pose(self, msg: PoseStamped):
        _, position, quat = pose_from_msg(msg)
        self._tcp = position
        self.latest.set("ee_pose", np.concatenate([position, quat]))

    def on_joints(self, msg: JointState):
        _, q, dq, _, gripper = joint_state_from_msg(msg)
        self.latest.set("joint_positions", q)
        self.latest.set("joint_velocities", dq)
        self.latest.set("gripper_width", [gripper])

    def on_reference(self, msg: PoseStamped):
        self._reference_heard = time.monotonic()
        _, position, quat = pose_from_msg(msg)
        self.latest.set("reference_pose", np.concatenate([position, quat]))

    def on_cube(self, msg: PoseStamped):
        _, position, quat = pose_from_msg(msg)
        self.latest.set("cube_pose", np.concatenate([position, quat]))

    def on_policy_chunk(self, msg: MultiDOFJointTrajectory):
        chunk, _ = chunk_from_msg(msg)
        self.latest.set("policy_chunk", self.padded(chunk.actions))
        self.latest.set("policy_chunk_stamp_s", chunk.stamp_s)

    def padded(self, values: np.ndarray) -> np.ndarray:
        """A chunk's first `horizon` points (or times), NaN after its last one: every step has the same shape."""
        out = np.full((self.horizon, *values.shape[1:]), np.nan)
        n = min(self.horizon, len(values))
        out[:n] = values[:n]
        return out

    def on_chunk_version(self, msg: Header):
        self.weight_version = chunk_version_from_msg(msg)[1]

    def on_human_chunk(self, msg: MultiDOFJointTrajectory):
        """What the operator commanded, whole: the label of the steps they had authority over."""
        self._human = chunk_from_msg(msg)[0]
        self.latest.set("human_chunk", self.padded(self._human.actions))
        self.latest.set("human_chunk_times_s", self.padded(self._human.times_s))
        self.latest.set("human_chunk_stamp_s", self._human.stamp_s)

    # --- episode -----------------------------------------------------------------------------------------
    def now_s(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    def pause(self, seconds: float) -> None:
        if self.stopping.wait(seconds):
            raise EpisodeStopped

    def wait_for_inputs(self, timeout_s: float = 180.0) -> None:
        """Block until the graph is up: camera frames, proprioception and the services."""
        deadline = time.monotonic() + timeout_s
        while missing := self.missing_inputs():
            if time.monotonic() > deadline:
                raise DeployError(f"the graph did not come up within {timeout_s:.0f} s: "
                                  f"still no {'; no '.join(missing)}")
            self.pause(0.1)

    def missing_inputs(self) -> list[str]:
        """What the runner needs before an episode and has not yet heard, each with the node that provides it."""
        missing = [f"/cameras/{c}/image_raw from camera_{c}" for c in self.cameras if not self.latest.has_frames((c,))]
        if self._tcp is None:
            missing.append(f"{TOPICS['ee_pose']} from proprioception")
        missing += [f"service {client.srv_name} from the {SERVICE_NODES[client.srv_name]} node"
                    for client in (self.reset_client, self.lifecycle_client) if not client.service_is_ready()]
        return missing

    def call(self, client, request):
        future = client.call_async(request)
        done = threading.Event()
        future.add_done_callback(lambda _: done.set())
        deadline = time.monotonic() + SERVICE_TIMEOUT_S
        while not done.wait(0.05):
            if self.stopping.is_set():
                raise EpisodeStopped
            if time.monotonic() > deadline:
                raise DeployError(f"service {client.srv_name} did not answer within {SERVICE_TIMEOUT_S:.0f} s: is "
                                  f"the {SERVICE_NODES.get(client.srv_name, 'providing')} node running?")
        return future.result()

    def set_policy_active(self, active: bool) -> None:
        """Lifecycle activate / deactivate the policy node (it autostarts active); no-op when already so."""
        if self._policy_active == active:
            return
        transition = Transition.TRANSITION_ACTIVATE if active else Transition.TRANSITION_DEACTIVATE
        response = self.call(self.lifecycle_client, ChangeState.Request(transition=Transition(id=transition)))
        if not response.success:
            raise DeployError(f"the policy node refused to {'activate' if active else 'deactivate'}")
        self._policy_active = active

    def home(self) -> None:
        """Drive the TCP to the start pose: one homing chunk, re-sent (same stamp, longer hold) until reached."""
        cfg = self.config
        dt_s = 1.0 / cfg.step_rate_hz
        stamp_s, actions = self.now_s(), homing_actions(self._tcp, dt_s, cfg.homing_speed_m_s, cfg.gripper_width_m)
        target = actions[-1]
        deadline = time.monotonic() + cfg.homing_timeout_s
        reached_since = None
        while True:
            hold = int(np.ceil(max(0.0, self.now_s() + 1.0 - stamp_s) / dt_s)) - len(actions)
            padded = np.vstack([actions, np.tile(target, (max(0, hold), 1))])
            times_s = dt_s * np.arange(1, len(padded) + 1)
            self.homing_pub.publish(chunk_to_msg(Chunk(stamp_s, times_s, padded), CARTESIAN))
            self.pause(HOMING_REPUBLISH_S)
            if np.linalg.norm(self._tcp - target[:3]) < cfg.homing_tolerance_m:
                reached_since = reached_since or time.monotonic()
                if time.monotonic() - reached_since > 0.3:
                    return
            else:
                reached_since = None
            if time.monotonic() > deadline:
                raise DeployError(self.homing_failure(target[:3]))

    def homing_failure(self, target_xyz: np.ndarray) -> str:
        """Why homing timed out, naming the silent link on the path /policy/chunk -> intervention ->
        /controller/chunk -> controller -> arm, before the symptom (the arm is not at the start pose)."""
        cfg = self.config
        relays = {info.node_name for info in self.get_subscriptions_info_by_topic(TOPICS["policy_chunk"])}
        if "intervention" not in relays:
            return (f"no intervention node subscribes to {TOPICS['policy_chunk']}: nothing relays the homing chunks "
                    f"to {TOPICS['controller_chunk']} (is the intervention node running?)")
        if self._reference_heard is None or time.monotonic() - self._reference_heard > REFERENCE_SILENCE_S:
            silent = ("ever" if self._reference_heard is None
                      else f"for {time.monotonic() - self._reference_heard:.0f} s")
            return f"no /controller/reference from the controller {silent}: is the controller node running?"
        return (f"the arm did not reach the start pose {np.round(target_xyz, 3).tolist()} within "
                f"{cfg.homing_timeout_s:.0f} s (TCP at {np.round(self._tcp, 3).tolist()})")

    def reset_task(self) -> int:
        response = self.call(self.reset_client, Trigger.Request())
        match = re.search(r"seed (-?\d+)", response.message)
        if not response.success or match is None:
            raise DeployError(f"/sim/reset failed: {response.message}")
        return int(match.group(1))

    def episode_started(self) -> None:
        """Called by the episode thread as the policy starts acting (the session's console shows it at once)."""

    def run_episode(self, root, meta: dict) -> dict:
        """One episode, logged under `root`; -> its outcome."""
        cfg = self.config
        self.active_pub.publish(Bool(data=False))
        self.set_policy_active(False)
        self.home()
        seed = self.reset_task()
        self.pause(cfg.settle_s)
        writer = EpisodeWriter(root, {**meta, "seed": seed, "cameras": list(self.cameras),
                                      "step_rate_hz": cfg.step_rate_hz}, on_error=self.get_logger().error)
        clock, reason, intervened = EpisodeClock(cfg, self.now_s()), None, []
        if writer.error is None:
            self.active_pub.publish(Bool(data=True))
            self.set_policy_active(True)
        else:
            reason = "log_failed"
        self.running_since_s = clock.start_s
        self.episode_started()
        period_s, next_s = 1.0 / cfg.step_rate_hz, time.monotonic()
        try:
            while reason is None:
                now_s = self.now_s()
                values, frames = self.latest.snapshot(self.cameras)
                values.update(stamp_s=np.array(now_s), weight_version=self.weight_version,
                              human_action=due_action(self._human, now_s, HUMAN_SILENCE_S),
                              executed_action=np.append(values["reference_pose"], values["gripper_width"]),
                              reward=np.array(float(values["success"] > 0.5)))
                if not writer.add_step(values, frames):
                    reason = "log_failed"
                    break
                intervened.append(bool(values["intervention"] > 0.5))
                reason = clock.update(now_s, bool(values["success"] > 0.5))
                next_s += period_s
                self.pause(max(0.0, next_s - time.monotonic()))
        finally:
            self.running_since_s = None
            self.active_pub.publish(Bool(data=False))
            outcome = {"success": reason == "success", "reason": reason or "interrupted", "seed": seed,
                       "duration_s": self.now_s() - clock.start_s,
                       "intervention_fraction": float(np.mean(intervened)) if intervened else 0.0}
            writer.close(outcome)  # after a failed write it writes nothing: the episode reads as incomplete
            if not self.stopping.is_set():  # stopping: the graph is going down, the policy with it
                if writer.error is not None:
                    self.hold_arm()
                self.set_policy_active(False)
        return {**outcome, "index": writer.index, "log_error": writer.error}

    def hold_arm(self) -> None:
        """Freeze the controller's reference where it is (before the policy stops: nothing more moves the arm)."""
        response = self.call(self.hold_client, Trigger.Request())
        if not response.success:
            raise DeployError(f"the controller refused to hold the arm: {response.message}")
        self.get_logger().info("the arm is held (/controller/hold); /controller/release frees it")


def run_episodes(policy: str, episodes: int, seed: int, output: Path, cameras: list[str], domain_id: int | None,
                 timeout_s: float, label: str, params_file: str = "") -> list[dict]:
    """Start the sim graph with `policy` (and the graph's `params_file`, YAML layered over the shipped config;
    "" = none), run `episodes` logged episodes under `output`; -> their outcomes."""
    if episodes < 1:
        raise ConfigError(f"--episodes must be >= 1, got {episodes}")
    graph = resolve("sim", {"policy": policy, "seed": str(seed), "cameras": ",".join(cameras),
                            "params_file": params_file})
    check_modules(graph)
    env = child_environment(os.environ, domain_id)
    os.environ.update(env)  # this process's own node joins the graph with the same DDS transport and domain
    runner = GraphRunner(graph, env, out=open(output / "graph.log", "w"), err=open(output / "graph.err.log", "w"))
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=int(env.get("ROS_DOMAIN_ID", "0")))
    node = EpisodeNode(tuple(cameras), EpisodeConfig(timeout_s=timeout_s), context=context)
    spin = BackgroundSpin(node, context)
    interrupted = threading.Event()
    previous = signal.signal(signal.SIGINT, lambda *_: interrupted.set())
    outcomes = []
    try:
        runner.start()
        node.wait_for_inputs()
        for k in range(episodes):
            if interrupted.is_set():
                break
            started = time.monotonic()
            outcome = node.run_episode(output, {"policy": policy, "label": label})
            if outcome["log_error"] is not None:
                raise DeployError(f"{label}: stopped in episode {k + 1}: the episode log under {output} cannot be "
                                  f"written (the ERROR above says why)")
            outcomes.append(outcome)
            rate = sum(o["success"] for o in outcomes) / len(outcomes)
            print(f"{label} episode {k + 1}/{episodes}: seed {outcome['seed']} "
                  f"{'success' if outcome['success'] else 'FAIL (' + outcome['reason'] + ')'} after "
                  f"{outcome['duration_s']:.1f} s ({time.monotonic() - started:.0f} s with homing); "
                  f"success so far {rate:.0%}", flush=True)
    finally:
        signal.signal(signal.SIGINT, previous)
        spin.close()
        runner.stop()
    return outcomes



@dataclasses.dataclass
class SessionConfig:
    cameras: str = "front,wrist"  # comma-separated camera names to log
    output: str = "runs/session/episodes"  # the correction log
    episodes: int = 0  # stop the graph after this many; 0 = until Ctrl-C
    timeout_s: float = 30.0
    console_window: int = 10  # success / intervention rates over this many recent episodes
    status_period_s: float = 1.0  # the console's live line while an episode runs, this often and on every change


class SessionNode(EpisodeNode):
    """The teleop session's episode runner and operator console on stdout: a live line while an episode runs
    (authority, deadman, weights, rates; at its start, every status_period_s and at once when authority or the
    deadman changes) and a summary line per episode."""

    def __init__(self):
        super().__init__((), EpisodeConfig())
        self.session = declare_config(self, SessionConfig)
        self.config = EpisodeConfig(timeout_s=self.session.timeout_s)
        self.watch_cameras(comma_list(self.session.cameras))
        self.learner_status: dict[str, str] = {}
        self.create_subscription(DiagnosticStatus, "/learner/status", self.on_learner_status, COMMAND_QOS)
        self.outcomes: list[dict] = []
        self.operator_authority: bool | None = None  # None: not heard yet
        self.deadman: bool | None = None
        self.create_subscription(Bool, TOPICS["intervention_active"],
                                 lambda m: setattr(self, "operator_authority", m.data), COMMAND_QOS)
        self.create_subscription(Bool, TOPICS["intervention_deadman"], lambda m: setattr(self, "deadman", m.data),
                                 COMMAND_QOS)
        self._shown: tuple = ()  # (episode start, authority, deadman) of the last live line, and when it was shown
        self._show_lock = threading.Lock()  # the timer and the episode thread both show it
        self._shown_at = -float("inf")
        self.create_timer(0.05, self.print_status)
        self._thread = threading.Thread(target=self.run_session, name="session", daemon=True)
        self._thread.start()

    def on_learner_status(self, msg: DiagnosticStatus):
        self.learner_status = {kv.key: kv.value for kv in msg.values}

    def print_status(self):
        started_s = self.running_since_s
        shown = (started_s, self.operator_authority, self.deadman)
        with self._show_lock:
            if started_s is None or (shown == self._shown
                                     and time.monotonic() - self._shown_at < self.session.status_period_s):
                return
            self._shown, self._shown_at = shown, time.monotonic()
            print(status_line(len(self.outcomes) + 1, self.now_s() - started_s, *shown[1:], self.weight_version,
                              self.outcomes, self.session.console_window), flush=True)

    def episode_started(self) -> None:
        self.print_status()

    def run_session(self):
        try:
            self.wait_for_inputs()
            while self.session.episodes == 0 or len(self.outcomes) < self.session.episodes:
                self.outcomes.append(self.run_episode(self.session.output, {"label": "session"}))
                print(console_line(self.outcomes, self.session.console_window, self.learner_status,
                                   self.weight_version), flush=True)
                if self.outcomes[-1]["log_error"] is not None:
                    print("episodes: the session logs no more episodes (its log cannot be written, see the ERROR); "
                          "the arm stays held: free space, then Ctrl-C and restart the session", flush=True)
                    self.keep_held()  # the graph stays up, the arm held, until the operator stops it
        except EpisodeStopped:
            return
        except DeployError as error:
            print(f"episodes: error: {error}", flush=True)
            os._exit(2)  # a failed session is not a finished one: the runner stops the graph with an error
        os.kill(os.getpid(), signal.SIGINT)  # done: end this node; the runner stops the graph

    def keep_held(self) -> None:
        """Until the node stops: every HOMING_REPUBLISH_S, a 1 s chunk at the controller's reference (frozen by
        the hold), so the controller sees live chunks and keeps the arm stiff where it is."""
        dt_s = 1.0 / self.config.step_rate_hz
        times_s = dt_s * np.arange(1, int(np.ceil(1.0 / dt_s)) + 1)
        while True:
            values, _ = self.latest.snapshot(())
            action = np.append(values["reference_pose"], values["gripper_width"])
            if np.isfinite(action).all():
                self.homing_pub.publish(chunk_to_msg(Chunk(self.now_s(), times_s, np.tile(action, (len(times_s), 1))),
                                                     CARTESIAN))
            self.pause(HOMING_REPUBLISH_S)

    def close(self):
        self.stopping.set()
        self._thread.join(timeout=10.0)


def main():
    run_node(SessionNode)


if __name__ == "__main__":
    main()
