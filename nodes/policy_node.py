"""Policy node: assembles fresh observations, runs inference in a worker thread (the executor never blocks),
and publishes each action chunk stamped with the time of the observation it was computed from."""
from __future__ import annotations

import dataclasses
import threading

import numpy as np
from geometry_msgs.msg import PoseStamped
from rclpy.node import Node
from sensor_msgs.msg import Image
from std_msgs.msg import String
from trajectory_msgs.msg import JointTrajectory, MultiDOFJointTrajectory

from deploy.control.chunks import CARTESIAN, JOINT, ActionSpace, Chunk
from deploy.errors import ConfigError
from deploy.nodes.common import COMMAND_QOS, LATCHED_QOS, SENSOR_QOS, declare_config, run_node
from deploy.nodes.conversions import chunk_to_msg, image_from_msg, pose_from_msg, time_from_msg
from deploy.sensing.observation import ObservationAssembler
from deploy.policies import scripted  # noqa: F401  (registers the scripted policies)
from deploy.policies.base import make_policy

SCRIPTED_PREFIX = "scripted:"


@dataclasses.dataclass
class PolicyNodeConfig:
    checkpoint: str = ""  # checkpoint directory, or "scripted:<name>"; "" = the package's demo policy
    inference_rate_hz: float = 5.0  # how often a new chunk is computed [Hz]
    image_max_age_s: float = 0.2  # older camera frames stop inference [s]
    state_max_age_s: float = 0.1  # older proprioception stops inference [s]
    seed: int = 0  # seeds stochastic policies

    def __post_init__(self):
        if not 0.1 <= self.inference_rate_hz <= 100.0:
            raise ConfigError(f"inference_rate_hz {self.inference_rate_hz} outside [0.1, 100]")


def load_policy(checkpoint: str):
    if checkpoint == "":
        checkpoint = SCRIPTED_PREFIX + "circle"
    if checkpoint.startswith(SCRIPTED_PREFIX):
        return make_policy(checkpoint[len(SCRIPTED_PREFIX):])
    raise ConfigError(f"checkpoint '{checkpoint}': learned checkpoints are not supported yet; use scripted:circle")


class PolicyNode(Node):
    def __init__(self):
        super().__init__("policy")
        self.config = declare_config(self, PolicyNodeConfig)
        self.policy = load_policy(self.config.checkpoint)
        meta = self.policy.metadata
        self.space = CARTESIAN if meta.action_space == "cartesian" else JOINT
        max_age = {f"camera {name}": self.config.image_max_age_s for name in meta.image_keys}
        max_age["ee_pose"] = self.config.state_max_age_s
        self.assembler = ObservationAssembler(max_age, reference_key="ee_pose")
        for name in meta.image_keys:
            self.create_subscription(Image, f"/cameras/{name}/image_raw",
                                     lambda msg, key=f"camera {name}": self.on_image(key, msg), SENSOR_QOS)
        self.create_subscription(PoseStamped, "/proprio/ee_pose", self.on_pose, SENSOR_QOS)
        chunk_type = MultiDOFJointTrajectory if self.space is CARTESIAN else JointTrajectory
        topic = "~/chunk" if self.space is CARTESIAN else "~/joint_chunk"
        self.chunk_pub = self.create_publisher(chunk_type, topic, COMMAND_QOS)
        self.version_pub = self.create_publisher(String, "~/weight_version", LATCHED_QOS)
        self.version_pub.publish(String(data=self.policy.weight_version))
        self.last_verdict = ""
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._worker = threading.Thread(target=self.inference_loop, daemon=True)
        self._worker.start()
        self.create_timer(1.0 / self.config.inference_rate_hz, self._wake.set)

    def on_image(self, key: str, msg: Image):
        self.assembler.update(key, time_from_msg(msg.header.stamp), image_from_msg(msg))

    def on_pose(self, msg: PoseStamped):
        stamp_s, position, quat = pose_from_msg(msg)
        self.assembler.update("ee_pose", stamp_s, np.concatenate([position, quat]))

    def inference_loop(self):
        while not self._stop.is_set():
            if not self._wake.wait(timeout=0.5):
                continue
            self._wake.clear()
            now_s = self.get_clock().now().nanoseconds * 1e-9
            observation, verdict = self.assembler.assemble(now_s)
            if observation is None:
                if verdict != self.last_verdict:
                    self.get_logger().warning(f"not inferring: {verdict}")
                self.last_verdict = verdict
                continue
            self.last_verdict = verdict
            actions = self.policy.predict_chunk(observation)  # (H, A)
            dt_s = self.policy.metadata.dt_s
            chunk = Chunk(stamp_s=observation.stamp_s, times_s=dt_s * np.arange(1, len(actions) + 1),
                          actions=actions, weight_version=self.policy.weight_version)
            self.chunk_pub.publish(chunk_to_msg(chunk, self.space))

    def close(self):
        self._stop.set()
        self._worker.join(timeout=2.0)


def main():
    run_node(PolicyNode)


if __name__ == "__main__":
    main()
