"""Learner node: fine-tunes the running policy from the correction log and swaps the new weights in.

A worker thread ingests new complete episodes of `log` (and once, the demonstrations in `demos`), runs
`updates_per_cycle` actor-critic updates per cycle, and every `publish_period_s` writes the next weight version
and sets the policy node's `weights_path` parameter (the policy node verifies the file and swaps it in at the
next chunk boundary). It resumes from `workdir` after a crash. Status (step, losses, version) on
`/learner/status` (diagnostic_msgs/DiagnosticStatus) once per cycle.
"""
from __future__ import annotations

import dataclasses
import threading
import time

from diagnostic_msgs.msg import DiagnosticStatus, KeyValue
from rcl_interfaces.msg import Parameter as ParameterMsg
from rcl_interfaces.msg import ParameterType, ParameterValue
from rcl_interfaces.srv import SetParameters
from rclpy.node import Node

from deploy.errors import ConfigError
from deploy.learning.learner import Learner, LearnerConfig
from deploy.nodes.common import COMMAND_QOS, declare_config, run_node

SWAP_TIMEOUT_S = 30.0  # the policy node verifies and swaps between two inferences


@dataclasses.dataclass
class LearnerNodeConfig:
    checkpoint: str = ""  # the policy being fine-tuned (its architecture and starting weights)
    demos: str = ""  # episode log of demonstrations (human-labelled); "" = none
    log: str = "runs/session/episodes"  # the session's correction log
    workdir: str = "runs/session/learner"  # learner state, weight versions
    publish_period_s: float = 30.0  # new weights this often (once there is data)
    updates_per_cycle: int = 20
    min_transitions: int = 100  # no updates before the replay holds this many transitions
    policy_node: str = "/policy"

    def __post_init__(self):
        if not self.checkpoint:
            raise ConfigError("learner: parameter 'checkpoint' (the policy to fine-tune) is empty")
        if not self.publish_period_s > 0 or self.updates_per_cycle < 1:
            raise ConfigError("learner: publish_period_s must be > 0 and updates_per_cycle >= 1")


class LearnerNode(Node):
    def __init__(self):
        super().__init__("learner")
        self.config = declare_config(self, LearnerNodeConfig)
        self.learner = Learner(self.config.checkpoint, self.config.workdir, LearnerConfig())
        if self.config.demos:
            self.learner.ingest(self.config.demos, demonstrations=True)
        self.status_pub = self.create_publisher(DiagnosticStatus, "/learner/status", COMMAND_QOS)
        self.set_params = self.create_client(SetParameters, f"{self.config.policy_node}/set_parameters")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self.loop, name="learner", daemon=True)
        self._thread.start()

    def loop(self):
        last_publish = time.monotonic()
        while not self._stop.is_set():
            self.learner.ingest(self.config.log)
            if len(self.learner.replay.rewards) < self.config.min_transitions:
                self._stop.wait(1.0)
                self.publish_status("waiting for data")
                continue
            for _ in range(self.config.updates_per_cycle):  # one at a time: a stop request is seen at once
                if self._stop.is_set():
                    return
                self.learner.update(1)
            if time.monotonic() - last_publish >= self.config.publish_period_s:
                last_publish = time.monotonic()
                self.push(str(self.learner.publish()))
            self.publish_status("training")

    def push(self, path: str):
        """Point the policy node's weights_path at the new file; it verifies and swaps."""
        value = ParameterValue(type=ParameterType.PARAMETER_STRING, string_value=path)
        request = SetParameters.Request(parameters=[ParameterMsg(name="weights_path", value=value)])
        deadline = time.monotonic() + SWAP_TIMEOUT_S  # every wait also watches the stop request
        while not self.set_params.service_is_ready():
            if self._stop.wait(0.1) or time.monotonic() > deadline:
                self.get_logger().error(f"{self.config.policy_node} is not reachable: weights {path} not swapped in")
                return
        future = self.set_params.call_async(request)
        done = threading.Event()
        future.add_done_callback(lambda _: done.set())
        while not (done.wait(0.1) or self._stop.is_set() or time.monotonic() > deadline):
            pass
        if done.is_set() and future.result().results and future.result().results[0].successful:
            self.get_logger().info(f"weights version {self.learner.version} swapped in ({path})")
        else:
            reason = future.result().results[0].reason if done.is_set() and future.result().results else "timeout"
            self.get_logger().error(f"policy node refused weights {path}: {reason}")

    def publish_status(self, message: str):
        values = {"step": self.learner.steps, "version": self.learner.version,
                  "transitions": len(self.learner.replay.rewards), **self.learner.last_losses}
        self.status_pub.publish(DiagnosticStatus(
            level=DiagnosticStatus.OK, name="learner", message=message,
            values=[KeyValue(key=k, value=f"{v:.4g}" if isinstance(v, float) else str(v)) for k, v in values.items()]))

    def close(self):
        self._stop.set()
        self._thread.join(timeout=10.0)
        self.learner.save()


def main():
    run_node(LearnerNode, skip_teardown=True)


if __name__ == "__main__":
    main()
