"""Recorder node: writes the selected topics to a rosbag2 MCAP (`deploy record`, `record:=true` in the graphs).

Topics are discovered as they appear (a wall-clock timer, so it also runs before a sim clock exists),
subscribed raw (the CDR bytes go to the bag undeserialized) with a QoS every publisher can serve, and recorded
with their publishers' QoS and kilted type definitions. Log time = receive time (the node clock under
use_sim_time). SIGINT/SIGTERM close the bag: the MCAP summary and metadata.yaml are written in close().
"""
from __future__ import annotations

import dataclasses
import datetime
import functools

from rclpy.clock import Clock, ClockType
from rclpy.node import Node

from deploy.bags.store import BagWriter, default_bag_path, known_type, type_hash
from deploy.bags.topics import PRESETS, adapted_qos, expected_type, parse_topics, selected
from deploy.errors import ConfigError
from deploy.nodes.common import declare_config, run_node
from deploy.nodes.conversions import message_class, qos_from_profile, qos_to_profile


@dataclasses.dataclass
class RecorderConfig:
    output: str = ""  # bag directory (must not exist); "" = runs/bags/<UTC date-time>
    topics: str = ""  # comma-separated topic names or `*` patterns; "" = the preset's
    preset: str = "stack"  # topic set when `topics` is empty (deploy.bags.topics.PRESETS)
    discovery_period_s: float = 0.5  # how often new topics are looked for [s, wall time]
    queue_depth: int = 100  # subscription queue per topic: absorbs bursts while the bag is written

    def __post_init__(self):
        parse_topics(self.topics)
        if self.preset not in PRESETS:
            raise ConfigError(f"unknown topic preset '{self.preset}' (choose {'|'.join(PRESETS)})")
        if not 0.05 <= self.discovery_period_s <= 10.0:
            raise ConfigError(f"discovery_period_s {self.discovery_period_s} outside [0.05, 10]")
        if not 1 <= self.queue_depth <= 10000:
            raise ConfigError(f"queue_depth {self.queue_depth} outside [1, 10000]")


class RecorderNode(Node):
    def __init__(self):
        super().__init__("recorder")
        self.config = declare_config(self, RecorderConfig)
        self.patterns = parse_topics(self.config.topics) or PRESETS[self.config.preset]
        path = self.config.output or default_bag_path(datetime.datetime.now(datetime.timezone.utc))
        self.bag = BagWriter(path)
        self.refused: set[str] = set()
        self.unclocked = 0  # messages dropped because they arrived before the first /clock
        self.sim_time = bool(self.get_parameter("use_sim_time").value)
        self.create_timer(self.config.discovery_period_s, self.discover, clock=Clock(clock_type=ClockType.STEADY_TIME))
        self.get_logger().info(f"recording {', '.join(self.patterns)} to {self.bag.path}")
        self.discover()

    def discover(self):
        for topic, types in self.get_topic_names_and_types():
            if topic in self.bag or topic in self.refused or not selected(topic, self.patterns):
                continue
            publishers = self.get_publishers_info_by_topic(topic)
            if not publishers:
                continue
            problem = self.problem(topic, types, publishers)
            if problem:
                self.refused.add(topic)
                self.get_logger().warning(f"not recording {topic}: {problem}")
                continue
            offered = [qos_from_profile(p.qos_profile) for p in publishers]
            self.bag.add_topic(topic, types[0], offered)
            qos = qos_to_profile(adapted_qos(offered, self.config.queue_depth))
            self.create_subscription(message_class(types[0]), topic, functools.partial(self.on_message, topic),
                                     qos, raw=True)
            self.get_logger().info(f"recording {topic} ({types[0]})")

    def problem(self, topic: str, types: list[str], publishers) -> str:
        """Why `topic` cannot be recorded faithfully ("" if it can)."""
        if len(types) != 1:
            return f"published with several types {types}"
        msgtype, expected = types[0], expected_type(topic)
        if expected is not None and msgtype != expected:
            return f"type {msgtype}, expected {expected}"
        if not known_type(msgtype):
            return f"{msgtype} is not a kilted message type (the bag could not describe it)"
        try:
            message_class(msgtype)
        except ValueError as error:
            return str(error)
        hashes = {str(p.topic_type_hash) for p in publishers} - {"INVALID"}
        if hashes - {type_hash(msgtype)}:
            return f"a publisher's {msgtype} definition differs from kilted's"
        return ""

    def on_message(self, topic: str, data: bytes, info):
        received_ns = info["received_timestamp"]
        log_ns = self.get_clock().now().nanoseconds if self.sim_time or not received_ns else received_ns
        if log_ns == 0:  # sim time before the first /clock: no time to log it at
            self.unclocked += 1
            return
        self.bag.write(topic, log_ns, data)

    def close(self):
        self.bag.close()
        counts = ", ".join(f"{topic} {count}" for topic, count in sorted(self.bag.counts.items()))
        self.get_logger().info(f"wrote {sum(self.bag.counts.values())} messages to {self.bag.path} ({counts})")
        if self.unclocked:
            self.get_logger().warning(f"dropped {self.unclocked} messages that arrived before the first /clock")
        exact = [t for t in parse_topics(self.config.topics) if "*" not in t and t not in self.bag]
        if exact:
            self.get_logger().warning(f"never recorded: {', '.join(exact)}")


def main():
    run_node(RecorderNode)


if __name__ == "__main__":
    main()
