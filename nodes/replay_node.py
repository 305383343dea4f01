"""Replay node: publishes a bag's messages (`deploy replay`, `launch/replay.launch.py`, `deploy replay-test`).

mode "realtime": the recorded timing (relative to the first played log time) scaled by `rate`, with /clock
from bag time so use_sim_time nodes run on it; loops shift time forward instead of jumping back. The bytes
are published as recorded (raw CDR, no deserialization).
mode "lockstep": feeds a policy node one observation set at a time and writes each chunk it answers with to
`output` (deploy/bags/lockstep.py explains why the chunks are then deterministic).
The node exits when the bag is done; an error ends it with one line and exit code 2.
"""
from __future__ import annotations

import _thread
import dataclasses
import functools
import json
import sys
import threading
import time

from rclpy.node import Node
from rosgraph_msgs.msg import Clock
from std_msgs.msg import Float64MultiArray

from deploy.bags import lockstep
from deploy.bags.schedule import ReplaySchedule, passes, timeline
from deploy.bags.store import BagReader, BagWriter, check_policy_inputs, check_type_definitions, has_stamp, stamp_ns
from deploy.bags.topics import (CHUNK_VERSION_TOPIC, CLOCK_TOPIC, HEADER, PRESETS, QosSpec, parse_topics,
                                playback_qos, policy_inputs, qos_overrides_from_yaml, read_policy_metadata,
                                replayed_patterns, selected)
from deploy.errors import ConfigError, DeployError
from deploy.nodes.common import declare_config, run_node
from deploy.nodes.conversions import clock_to_msg, labelled_array_to_msg, message_class, qos_to_profile

MODES = ("realtime", "lockstep")
CHUNK_QOS = QosSpec(reliable=True, depth=100)  # the policy publishes chunks reliably (COMMAND_QOS)
STATUS_TOPIC = "/controller/chunk_status"  # lockstep arms the policy's executed_fraction trigger with it


@dataclasses.dataclass
class ReplayConfig:
    bag: str = ""  # rosbag2 directory (or .mcap file)
    mode: str = "realtime"  # "realtime" | "lockstep"
    rate: float = 1.0  # realtime: playback speed (2.0 = twice as fast)
    start_offset_s: float = 0.0  # realtime: skip this much of the bag's beginning [s]
    loop: bool = False  # realtime: play again and again (time goes on; stamps are shifted)
    topics: str = ""  # comma-separated names or `*` patterns; "" = the preset's, or every topic
    preset: str = ""  # topic set (deploy.bags.topics.PRESETS) when `topics` is empty
    clock: bool = True  # publish /clock from bag time (a recorded /clock is then not replayed)
    clock_rate_hz: float = 100.0  # realtime: /clock messages per second of wall time
    policy: str = ""  # checkpoint directory: its inputs must be in the bag; realtime waits for its subscriptions
    qos_override: str = ""  # rosbag2 QoS override YAML (ros2 bag play --qos-profile-overrides-path)
    wait_for_subscribers: bool = False  # realtime: start once every played topic has a subscriber
    output: str = ""  # lockstep: bag the policy's chunks are written to
    image_max_age_s: float = lockstep.DEFAULT_IMAGE_MAX_AGE_S  # lockstep: the policy's image_max_age_s [s]
    state_max_age_s: float = lockstep.DEFAULT_STATE_MAX_AGE_S  # lockstep: the policy's state_max_age_s [s]
    attempt_timeout_s: float = 2.0  # lockstep: wait this long for a chunk before retrying a set [s]
    wait_timeout_s: float = 120.0  # how long the policy node (or other subscribers) may take to subscribe [s]

    def __post_init__(self):
        if not self.bag:
            raise ConfigError("parameter 'bag' is empty: name the bag to replay")
        if self.mode not in MODES:
            raise ConfigError(f"mode '{self.mode}' is not one of {'|'.join(MODES)}")
        parse_topics(self.topics)
        if self.preset and self.preset not in PRESETS:
            raise ConfigError(f"unknown topic preset '{self.preset}' (choose {'|'.join(PRESETS)})")
        if not 1.0 <= self.clock_rate_hz <= 1000.0:
            raise ConfigError(f"clock_rate_hz {self.clock_rate_hz} outside [1, 1000]")
        if self.mode == "lockstep" and not (self.policy and self.output and self.clock):
            raise ConfigError("mode lockstep needs 'policy', 'output' and clock:=true")
        for name in ("attempt_timeout_s", "wait_timeout_s"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name} {getattr(self, name)} must be > 0")


class ReplayNode(Node):
    def __init__(self):
        super().__init__("replay")
        self.config = declare_config(self, ReplayConfig)
        if self.get_parameter("use_sim_time").value:
            raise ConfigError("replay: use_sim_time must be false (the replay is the clock)")
        self.reader = BagReader(self.config.bag)
        self.qos_overrides = qos_overrides_from_yaml(self.config.qos_override) if self.config.qos_override else {}
        self.error: DeployError | None = None
        self.output: BagWriter | None = None
        self._stop = threading.Event()
        self.clock_pub = self.create_publisher(Clock, CLOCK_TOPIC, 10) if self.config.clock else None
        self.inputs = None
        if self.config.policy:
            metadata = read_policy_metadata(self.config.policy)
            self.inputs = policy_inputs(metadata)
            check_policy_inputs(self.reader, metadata, f"policy '{self.config.policy}'")
        work = self.prepare_lockstep() if self.config.mode == "lockstep" else self.prepare_realtime()
        self._thread = threading.Thread(target=self.run, args=(work,), name="replay", daemon=True)
        self._thread.start()

    def publishers_for(self, topics) -> dict:
        """One publisher per topic, offering what rosbag2's player would (deploy.bags.topics.playback_qos) or
        the override file's profile."""
        check_type_definitions(self.reader, topics)
        for topic in sorted(set(self.qos_overrides) - set(topics)):
            self.get_logger().warning(f"QoS override for {topic}: not a replayed topic ({self.config.qos_override})")
        publishers = {}
        for topic in topics:
            qos = self.qos_overrides.get(topic) or playback_qos(self.reader.topics[topic].offered_qos)
            if topic in self.qos_overrides:
                self.get_logger().info(f"overriding QoS for {topic}: {qos}")
            publishers[topic] = self.create_publisher(message_class(self.reader.types[topic]), topic,
                                                      qos_to_profile(qos))
        return publishers

    # --- realtime ----------------------------------------------------------------------------------------
    def prepare_realtime(self):
        cfg = self.config
        explicit = parse_topics(cfg.topics)
        patterns = replayed_patterns(cfg.topics, cfg.preset, self.inputs)
        missing = [t for t in explicit if "*" not in t and t not in self.reader.topics]
        if missing:
            raise ConfigError(f"bag '{cfg.bag}' has no topic {', '.join(missing)} "
                              f"(it has {', '.join(sorted(self.reader.topics))})")
        played = [t for t, info in sorted(self.reader.topics.items())
                  if info.count and selected(t, patterns) and not (cfg.clock and t == CLOCK_TOPIC)]
        if not played:
            raise ConfigError(f"bag '{cfg.bag}': no topic matches {', '.join(patterns)}")
        if self.inputs is not None:
            left_out = sorted(set(self.inputs.topics) - set(played))
            if left_out:
                raise ConfigError(f"the topic selection leaves out {', '.join(left_out)}, which policy '{cfg.policy}' "
                                  "needs")
        self.bag_pubs = self.publishers_for(played)
        schedule = ReplaySchedule.for_bag(self.reader.start_ns, self.reader.end_ns, cfg.start_offset_s, cfg.rate)
        stamped = {t for t in played if has_stamp(self.reader.types[t])}
        messages = passes(lambda: self.reader.messages(played, schedule.first_ns), schedule, cfg.loop, stamped)
        events = timeline(messages, schedule, 1.0 / cfg.clock_rate_hz if cfg.clock else None)
        return functools.partial(self.play, events, schedule)

    def play(self, events, schedule: ReplaySchedule):
        if self.config.wait_for_subscribers:
            self.wait_for_subscribers(list(self.bag_pubs.values()))
        elif self.inputs is not None:
            self.wait_for_subscribers([self.bag_pubs[t] for t in self.inputs.topics])
        self.get_logger().info(f"replaying {len(self.bag_pubs)} topics of {self.config.bag} at {schedule.rate:g}x")
        start, count, last_ns = time.monotonic(), 0, schedule.first_ns
        for due_s, topic, bag_ns, data in events:
            if self._stop.wait(max(0.0, start + due_s - time.monotonic())):
                return
            if topic is None:
                self.clock_pub.publish(clock_to_msg(bag_ns))
            else:
                self.bag_pubs[topic].publish(bytes(data))
                count, last_ns = count + 1, bag_ns
        wall_s = time.monotonic() - start
        speed = (last_ns - schedule.first_ns) * 1e-9 / wall_s if wall_s > 0 else float("inf")
        self.get_logger().info(f"replayed {count} messages in {wall_s:.2f} s ({speed:.1f}x real time)")

    # --- lockstep ----------------------------------------------------------------------------------------
    def prepare_lockstep(self):
        cfg, inputs = self.config, self.inputs
        topics = sorted(inputs.topics)
        unstamped = [t for t in topics if not has_stamp(inputs.topics[t])]
        if unstamped:
            raise ConfigError(f"topic {unstamped[0]} has no header stamp to replay in lockstep")
        chunk_stamps = []
        if self.reader.types.get(inputs.chunk_topic) == inputs.chunk_type:
            chunk_stamps = [stamp_ns(d) for _, _, d in self.reader.messages([inputs.chunk_topic])]
        samples = [lockstep.Sample(t, log_ns, stamp_ns(d), i)
                   for i, (t, log_ns, d) in enumerate(self.reader.messages(topics))]
        max_age_s = {t: cfg.image_max_age_s if t in inputs.images else cfg.state_max_age_s for t in topics}
        self.plan = lockstep.plan_sets(samples, inputs.reference_topic, max_age_s, inputs.after_reference,
                                       chunk_stamps)
        if not self.plan.sets:
            why = self.plan.skipped or f"no {inputs.reference_topic} message"
            raise ConfigError(f"bag '{cfg.bag}': no observation set to replay in lockstep ({why})")
        needed = self.plan.indices
        self.data = {i: d for i, (_, _, d) in enumerate(self.reader.messages(topics)) if i in needed}
        self.bag_pubs = self.publishers_for(topics)
        self.output = BagWriter(cfg.output)
        self.output.add_topic(inputs.chunk_topic, inputs.chunk_type, [CHUNK_QOS])
        self.output.add_topic(CHUNK_VERSION_TOPIC, HEADER, [CHUNK_QOS])
        provenance = {"source_bag": cfg.bag, "policy": cfg.policy, "max_age_s": json.dumps(max_age_s),
                      "observation_sets": str(len(self.plan.sets)), "skipped_sets": json.dumps(self.plan.skipped)}
        for key, value in provenance.items():
            self.output.set_custom(key, value)
        self.replies: dict[str, dict[int, tuple[float, bytes]]] = {inputs.chunk_topic: {}, CHUNK_VERSION_TOPIC: {}}
        self.replied = threading.Condition()
        self.surprises: list[str] = []
        self.expected = [obs.stamp_ns for obs in self.plan.sets]  # sorted: sets follow the bag's log order
        self.retries = 0
        self.status_pub = self.create_publisher(Float64MultiArray, STATUS_TOPIC, 10)
        qos = qos_to_profile(CHUNK_QOS)
        for topic, msgtype in ((inputs.chunk_topic, inputs.chunk_type), (CHUNK_VERSION_TOPIC, HEADER)):
            self.create_subscription(message_class(msgtype), topic, functools.partial(self.on_reply, topic), qos,
                                     raw=True)
        return self.step_through

    def on_reply(self, topic: str, data: bytes):
        """File a chunk (or its version) under the observation set it answers."""
        received, stamp = time.monotonic(), stamp_ns(data)
        with self.replied:
            answered = lockstep.matching_stamp(stamp, self.expected)
            if answered is None:
                self.surprises.append(f"a {topic} message stamped {stamp} ns answers no replayed set (another "
                                      "publisher?)")
            elif self.replies[topic].setdefault(answered, (received, data))[1] != data:
                self.surprises.append(f"two different {topic} messages for the set stamped {answered} ns")
            self.replied.notify_all()

    def step_through(self):
        cfg, chunk_topic = self.config, self.inputs.chunk_topic
        self.wait_for_subscribers(list(self.bag_pubs.values()) + [self.clock_pub, self.status_pub])
        self.get_logger().info(f"lockstep: {len(self.plan.sets)} observation sets from {cfg.bag} "
                               f"(left out: {self.plan.skipped or 'none'})")
        start = time.monotonic()
        for index, obs in enumerate(self.plan.sets):
            sent = time.monotonic()  # latency counts from the first attempt
            for attempt in range(lockstep.ATTEMPTS):
                for _ in range(lockstep.CLOCK_REPEATS):
                    self.clock_pub.publish(clock_to_msg(obs.stamp_ns))
                self.status_pub.publish(labelled_array_to_msg(lockstep.exhausted_status(index)))
                for sample in obs.samples:
                    self.bag_pubs[sample.topic].publish(bytes(self.data[sample.index]))
                if self.wait_reply(lambda: obs.stamp_ns in self.replies[chunk_topic], cfg.attempt_timeout_s):
                    break
            else:
                raise DeployError(f"the policy answered no observation set stamped {obs.stamp_ns} ns after "
                                  f"{lockstep.ATTEMPTS} attempts (see its output for why it did not infer)")
            self.retries += attempt
            with self.replied:
                if self.surprises:
                    raise DeployError(self.surprises[0])
                for topic, replies in self.replies.items():
                    if obs.stamp_ns in replies:
                        received, data = replies[obs.stamp_ns]
                        self.output.write(topic, obs.stamp_ns + round((received - sent) * 1e9), data)
        wall_s = time.monotonic() - start
        bag_s = (self.plan.sets[-1].stamp_ns - self.plan.sets[0].stamp_ns) * 1e-9
        self.get_logger().info(f"lockstep: {len(self.plan.sets)} chunks written to {cfg.output} in {wall_s:.2f} s "
                               f"({bag_s / wall_s:.1f}x real time, {self.retries} sets resent)")

    def wait_reply(self, predicate, timeout_s: float) -> bool:
        with self.replied:
            return self.replied.wait_for(lambda: predicate() or self._stop.is_set(), timeout_s) and \
                not self._stop.is_set()

    # --- common ------------------------------------------------------------------------------------------
    def wait_for_subscribers(self, publishers: list):
        deadline = time.monotonic() + self.config.wait_timeout_s
        for publisher in publishers:
            while publisher.get_subscription_count() == 0:
                if time.monotonic() > deadline:
                    raise DeployError(f"nothing subscribed to {publisher.topic_name} within "
                                      f"{self.config.wait_timeout_s:g} s (is the policy node running?)")
                if self._stop.wait(0.05):
                    return

    def run(self, work):
        try:
            work()
        except Exception as error:  # noqa: BLE001  (the thread's end is the node's: main() reports it in one line)
            if not self._stop.is_set():  # errors of a replay stopped from outside are not its own
                self.error = error if isinstance(error, DeployError) else DeployError(
                    f"replay failed: {type(error).__name__}: {error}")
        finally:
            if not self._stop.is_set():
                _thread.interrupt_main()  # the bag is done: unwind run_node as Ctrl-C would

    def close(self):
        self._stop.set()
        self._thread.join(timeout=5.0)
        if self.output is not None:
            self.output.close()
        self.reader.close()


def main():
    nodes: list[ReplayNode] = []
    run_node(lambda: nodes.append(ReplayNode()) or nodes[-1])
    if nodes and nodes[0].error is not None:
        print(f"{sys.argv[0]}: error: {nodes[0].error}", file=sys.stderr, flush=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
