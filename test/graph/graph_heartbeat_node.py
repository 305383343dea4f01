"""Test-only rclpy node for the graph-runner tests: publishes a std_msgs/String heartbeat on `~/heartbeat`.

The heartbeat's data is JSON {"name", "greeting", "tag"} so tests can check that the runner applied the node
name, the parameter file (`greeting`) and inline parameters (`tag`). With `exit_after_s > 0` the node exits
on its own with `exit_code` after that many seconds (to test required-node handling); with
`ignore_sigint` it only stops on SIGTERM (rclpy's handler) or SIGKILL.
"""
import json
import signal
import sys

import rclpy
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from std_msgs.msg import String


class Heartbeat(Node):
    def __init__(self):
        super().__init__("heartbeat")
        self.greeting = self.declare_parameter("greeting", "").value
        self.tag = self.declare_parameter("tag", "").value
        rate_hz = self.declare_parameter("rate_hz", 10.0).value
        self.exit_after_s = self.declare_parameter("exit_after_s", 0.0).value
        self.exit_code = self.declare_parameter("exit_code", 3).value
        if self.declare_parameter("ignore_sigint", False).value:  # to test the runner's SIGTERM escalation
            signal.signal(signal.SIGINT, signal.SIG_IGN)
        self.done = False
        self.started_ns = self.get_clock().now().nanoseconds
        self.pub = self.create_publisher(String, "~/heartbeat", 10)
        self.create_timer(1.0 / rate_hz, self.tick)

    def tick(self):
        data = {"name": self.get_name(), "greeting": self.greeting, "tag": self.tag}
        self.pub.publish(String(data=json.dumps(data)))
        age_s = (self.get_clock().now().nanoseconds - self.started_ns) * 1e-9
        if self.exit_after_s > 0 and age_s >= self.exit_after_s:
            self.done = True


def main() -> int:
    rclpy.init()
    node = Heartbeat()
    name = node.get_name()
    print(f"heartbeat {name} up", flush=True)
    try:
        while rclpy.ok() and not node.done:
            rclpy.spin_once(node, timeout_sec=0.1)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
    if node.done:
        print(f"heartbeat {name} failing on purpose with code {node.exit_code}", file=sys.stderr, flush=True)
        return node.exit_code
    print(f"heartbeat {name} stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
