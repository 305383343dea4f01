"""Replay speed (x real time), without the policy and with it in the loop.

A stack-like bag is written first (`--seconds` of two 128x128 rgb8 cameras at 30 Hz with camera_info,
/robot/joint_states at 250 Hz, /proprio/joint_states + ee_pose + ee_twist at 100 Hz: ~880 messages and 3 MB
per second), unless `--bag` names one.
- without the policy: `deploy replay BAG --rate R --wait-for-subscribers` for each R; speed = bag time
  covered / wall time, as the replay node reports it (it falls below R when it cannot keep up), and the
  fraction a raw (undeserialized) best-effort subscriber in this process received. Target >= 10x.
- with the policy: `deploy replay-test` (lockstep: one observation set per 0.2 s of bag time, each answered by
  a small random ACT reading the front camera + TCP pose before the next); speed = bag time / wall time of the
  lockstep phase, as the replay node reports it.

    /tmp/venvtest/bin/python bench/replay_speed.py [--seconds 10] [--rates 1 10 30 100]
"""
import argparse
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import QoSProfile, ReliabilityPolicy
from rclpy.serialization import serialize_message

from deploy.bags.store import BagReader, BagWriter
from deploy.bags.topics import QosSpec
from deploy.graph.description import dds_environment
from deploy.nodes.conversions import (camera_info_to_msg, image_to_msg, joint_state_to_msg, message_class,
                                      pose_to_msg, twist_to_msg)
from deploy.policies.runtime import write_random_checkpoint

T0 = 1_700_000_000.0
SENSOR = [QosSpec(reliable=False, depth=5)]
TINY = dict(d_model=32, n_heads=2, dim_feedforward=64, n_encoder_layers=1, n_decoder_layers=1,
            n_vae_encoder_layers=1, vision_channels=(8, 8, 16), n_keypoints=8)


def write_stack_bag(path: Path, seconds: float) -> Path:
    streams = {  # topic -> (rate Hz, msgtype, make(stamp_s, i))
        "/cameras/front/image_raw": (30, "sensor_msgs/msg/Image", lambda t, i: image_to_msg(
            np.full((128, 128, 3), i % 256, np.uint8), t, "front")),
        "/cameras/wrist/image_raw": (30, "sensor_msgs/msg/Image", lambda t, i: image_to_msg(
            np.full((128, 128, 3), (3 * i) % 256, np.uint8), t, "wrist")),
        "/cameras/front/camera_info": (30, "sensor_msgs/msg/CameraInfo",
                                       lambda t, i: camera_info_to_msg(128, 128, 100, 100, 64, 64, t, "front")),
        "/robot/joint_states": (250, "sensor_msgs/msg/JointState", lambda t, i: joint_state_to_msg(
            t, 0.001 * i * np.ones(7), np.zeros(7), np.zeros(7), 0.04)),
        "/proprio/joint_states": (100, "sensor_msgs/msg/JointState", lambda t, i: joint_state_to_msg(
            t, 0.001 * i * np.ones(7), np.zeros(7), np.zeros(7), 0.04)),
        "/proprio/ee_pose": (100, "geometry_msgs/msg/PoseStamped", lambda t, i: pose_to_msg(
            [0.45, 0.1 * np.sin(0.01 * i), 0.25], [1.0, 0.0, 0.0, 0.0], t)),
        "/proprio/ee_twist": (100, "geometry_msgs/msg/TwistStamped", lambda t, i: twist_to_msg(np.zeros(6), t)),
    }
    events = sorted((T0 + i / rate, topic, i) for topic, (rate, _, _) in streams.items()
                    for i in range(int(seconds * rate)))
    with BagWriter(path) as bag:
        for topic, (_, msgtype, _) in streams.items():
            bag.add_topic(topic, msgtype, SENSOR)
        for t, topic, i in events:
            bag.write(topic, round(t * 1e9), serialize_message(streams[topic][2](t, i)))
    return path


def replay_without_policy(bag: Path, rate: float, domain_id: int, env: dict) -> tuple[float, float]:
    """-> (x real time the replay node achieved, fraction a raw best-effort subscriber received) at `rate`."""
    with BagReader(bag) as reader:
        topics = {t: (message_class(i.msgtype), i.count) for t, i in reader.topics.items() if i.count}
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=domain_id)
    node = rclpy.create_node("replay_speed_bench", context=context)
    received = [0]
    qos = QoSProfile(depth=1000, reliability=ReliabilityPolicy.BEST_EFFORT)
    for topic, (msg_class, _) in topics.items():
        node.create_subscription(msg_class, topic, lambda data: received.__setitem__(0, received[0] + 1), qos,
                                 raw=True)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    spinning = threading.Event()
    spinning.set()

    def spin():
        while spinning.is_set():
            executor.spin_once(timeout_sec=0.05)

    spinner = threading.Thread(target=spin)
    spinner.start()
    try:
        done = subprocess.run([sys.executable, "-m", "deploy.cli", "replay", str(bag), "--rate", repr(rate),
                               "--wait-for-subscribers", "--domain-id", str(domain_id)], env=env, timeout=600,
                              capture_output=True, text=True)
        time.sleep(1.0)
    finally:
        spinning.clear()
        spinner.join()
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown(context=context)
    found = re.search(r"replayed \d+ messages in [\d.]+ s \(([\d.]+)x real time\)", done.stdout + done.stderr)
    if found is None:
        raise RuntimeError(f"deploy replay failed: {done.stderr[-1000:]}")
    return float(found.group(1)), received[0] / sum(count for _, count in topics.values())


def replay_with_policy(bag: Path, workdir: Path, domain_id: int, env: dict) -> str:
    checkpoint = write_random_checkpoint(workdir / "ckpt", "act", image_keys=("front",), image_size_hw=(32, 32),
                                         **TINY)
    done = subprocess.run([sys.executable, "-m", "deploy.cli", "replay-test", str(bag), "--policy", str(checkpoint),
                           "--report", str(workdir / "report"), "--max-safety-trips", "off", "--domain-id",
                           str(domain_id)], env=env, capture_output=True, text=True, timeout=900)
    found = re.search(r"lockstep: (\d+) chunks written to \S+ in ([\d.]+) s \(([\d.]+)x real time", done.stdout
                      + done.stderr)
    return f"{found.group(1)} sets in {found.group(2)} s: {found.group(3)}x" if found else done.stderr[-500:]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="length of the generated bag")
    parser.add_argument("--rates", type=float, nargs="+", default=[1.0, 10.0, 30.0, 100.0])
    parser.add_argument("--bag", default=None, help="replay this bag instead of a generated one")
    parser.add_argument("--domain-id", type=int, default=90 + os.getpid() % 50)
    args = parser.parse_args()
    env = dict(os.environ, **dds_environment(), RMW_IMPLEMENTATION="rmw_fastrtps_cpp")
    os.environ.update(dds_environment())
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        bag = Path(args.bag) if args.bag else write_stack_bag(workdir / "bag", args.seconds)
        print(f"load average {os.getloadavg()[0]:.1f}; bag {bag}")
        print(f"{'rate':>8}{'x real time':>14}{'delivered':>12}")
        for rate in args.rates:
            speed, delivered = replay_without_policy(bag, rate, args.domain_id, env)
            print(f"{rate:>8g}{speed:>14.1f}{delivered:>12.1%}")
        print(f"with the policy (lockstep replay-test): {replay_with_policy(bag, workdir, args.domain_id, env)}")
        print(f"load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
