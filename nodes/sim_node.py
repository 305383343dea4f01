"""Sim node: the embedded MuJoCo Panda playing the hardware. Physics, cameras and the link to the robot and
camera backends run in deploy.sim.process; this shell publishes the task state (and /clock in lockstep) and
offers reset and push inputs for tests and the scripted operator."""
from __future__ import annotations

import threading

from geometry_msgs.msg import PoseStamped, WrenchStamped
from rclpy.node import Node
from rclpy.parameter import Parameter
from rosgraph_msgs.msg import Clock
from std_msgs.msg import Bool
from std_srvs.srv import Trigger

from deploy.control.loop import request_priority_below
from deploy.graph.description import TOPICS
from deploy.nodes.common import COMMAND_QOS, declare_config, run_node
from deploy.nodes.conversions import pose_to_msg, time_to_msg, wrench_from_msg
from deploy.sim.link import default_link_name
from deploy.sim.process import SimConfig, SimRunner

TASK_PUBLISH_RATE_HZ = 30.0
CLOCK_PERIOD_S = 0.01  # lockstep: /clock every 5 simulated ms (every node with sim time receives it)


class SimNode(Node):
    def __init__(self):
        super().__init__("sim")
        self.config = declare_config(self, SimConfig)
        self.set_parameters([Parameter("use_sim_time", value=False)])  # the sim is the clock's source
        self.clock_pub = self.create_publisher(Clock, "/clock", 10)
        self._next_clock_s = 0.0
        self.cube_pub = self.create_publisher(PoseStamped, TOPICS["cube_pose"], COMMAND_QOS)
        self.success_pub = self.create_publisher(Bool, "/sim/success", COMMAND_QOS)
        self.create_subscription(WrenchStamped, "/sim/ee_wrench", self.on_wrench, COMMAND_QOS)
        self.create_service(Trigger, "/sim/reset", self.on_reset)
        on_step = self.publish_clock if self.config.mode == "lockstep" else None
        self.runner = SimRunner(self.config, self.config.link_name or default_link_name(), on_step=on_step)
        self._thread = threading.Thread(target=self.runner.run, name="sim", daemon=True)
        self._thread.start()
        if self.config.mode == "realtime":  # this thread and the task publisher share the lock with physics
            request_priority_below(self.config.realtime_priority)
        self._task_thread = threading.Thread(target=self.publish_task_loop, name="task", daemon=True)
        self._task_thread.start()

    def publish_clock(self, stamp_s: float):
        if stamp_s + 1e-9 < self._next_clock_s or not self.context.ok():  # not due, or shutting down
            return
        self._next_clock_s = stamp_s + CLOCK_PERIOD_S
        self.clock_pub.publish(Clock(clock=time_to_msg(stamp_s)))

    def publish_task_loop(self):
        """Task state at ~30 Hz of wall time (a thread: in lockstep the node's timers would follow no clock)."""
        while not self.runner.stopped.wait(1.0 / TASK_PUBLISH_RATE_HZ):
            stamp_s, position, quat, success = self.runner.task_snapshot()
            self.cube_pub.publish(pose_to_msg(position, quat, stamp_s))
            self.success_pub.publish(Bool(data=success))

    def on_wrench(self, msg: WrenchStamped):
        _, wrench = wrench_from_msg(msg)
        self.runner.apply_ee_wrench(wrench[:3], wrench[3:])

    def on_reset(self, request, response):
        seed = self.runner.reset()
        response.success, response.message = True, f"episode {self.runner.episode}, cube seed {seed}"
        return response

    def close(self):
        self.runner.stop()  # also called before the context goes down on SIGTERM; see publish_clock
        self._thread.join(timeout=5.0)
        self._task_thread.join(timeout=2.0)


def main():
    run_node(SimNode)


if __name__ == "__main__":
    main()
