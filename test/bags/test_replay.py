"""Replay over real DDS, on bags written directly with rosbags (not by our recorder): `deploy replay` keeps the
recorded timing, publishes /clock and loops with time going on; the `replay` graph drives the policy node on
bag time; lockstep replays are deterministic; bad bags fail in one line naming the topic or file."""
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import JointState
from trajectory_msgs.msg import MultiDOFJointTrajectory

from bag_helpers import joints_checkpoint, write_bag, write_push_bag
from deploy.bags.lockstep import matching_stamp
from deploy.bags.replay_test import REPLAYED, read_chunks
from deploy.bags.store import BagReader, stamp_ns
from deploy.bags.testing import assert_replay_passes
from deploy.nodes.common import SENSOR_QOS
from harness import ros_environment, wait_until

ROOT = Path(__file__).resolve().parents[2]
JOINTS = "/proprio/joint_states"
CHUNK_TYPE = "trajectory_msgs/msg/MultiDOFJointTrajectory"


def deploy_cli(domain_id, *args, timeout_s=120):
    return subprocess.run([sys.executable, "-m", "deploy.cli", *args], env=ros_environment(domain_id),
                          capture_output=True, text=True, timeout=timeout_s)


def stamp_of(msg) -> int:
    return msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec


def bag_stamps(bag, topic):
    with BagReader(bag) as reader:
        return [stamp_ns(data) for _, _, data in reader.messages([topic])]


def test_replay_keeps_the_recorded_timing_scaled_by_rate_and_publishes_clock(tmp_path, probe, domain_id):
    bag = write_bag(tmp_path / "bag", seconds=3.0, joint_hz=50.0, topics=(JOINTS,))
    joints = probe.collect(JointState, JOINTS, SENSOR_QOS)
    clock = probe.collect(Clock, "/clock", SENSOR_QOS)
    done = deploy_cli(domain_id, "replay", str(bag), "--rate", "2", "--wait-for-subscribers", "--domain-id",
                      str(domain_id))
    assert done.returncode == 0, done.stdout + done.stderr
    recorded = bag_stamps(bag, JOINTS)
    got = [stamp_of(m) for _, m in joints]
    assert set(got) <= set(recorded) and got == sorted(got)  # the bag's own stamps, in order
    assert len(got) >= 0.9 * len(recorded)  # best effort, as recorded (a reader may still be matching at first)
    wall_s = joints[-1][0] - joints[0][0]
    bag_s = (got[-1] - got[0]) * 1e-9
    assert 0.25 * bag_s < wall_s < 1.0 * bag_s, (wall_s, bag_s)  # rate 2: about half the recorded span
    clock_ns = [m.clock.sec * 10**9 + m.clock.nanosec for _, m in clock]
    assert clock_ns == sorted(clock_ns) and clock_ns[0] == recorded[0] and clock_ns[-1] >= recorded[-1] - 10**8
    assert "replayed" in done.stdout + done.stderr


def test_loop_and_start_offset_shift_time_forward(tmp_path, probe, domain_id):
    bag = write_bag(tmp_path / "bag", seconds=1.0, joint_hz=50.0, topics=(JOINTS,))
    recorded = bag_stamps(bag, JOINTS)
    joints = probe.collect(JointState, JOINTS, SENSOR_QOS)
    proc = subprocess.Popen([sys.executable, "-m", "deploy.cli", "replay", str(bag), "--loop", "--rate", "4",
                             "--start-offset", "0.5", "--wait-for-subscribers", "--domain-id", str(domain_id)],
                            env=ros_environment(domain_id),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        assert wait_until(lambda: len(joints) > 60, timeout_s=90)
    finally:
        proc.send_signal(signal.SIGINT)
        output = proc.communicate(timeout=30)[0]
    assert proc.returncode == 0, output
    got = [stamp_of(m) for _, m in joints]
    assert got[0] >= recorded[0] + 5 * 10**8 - 10**6  # the first half second is skipped
    assert got == sorted(got) and got[-1] > recorded[-1] + 10**8  # the second pass is later, not a jump back
    assert set(got[:10]) <= set(recorded)


def test_replay_graph_drives_the_policy_on_bag_time(tmp_path, probe, launch_graph):
    bag = write_bag(tmp_path / "bag", seconds=4.0)
    checkpoint = joints_checkpoint(tmp_path / "ckpt")
    chunks = probe.collect(MultiDOFJointTrajectory, "/policy/chunk", 10)
    graph = launch_graph("replay", f"bag:={bag}", f"policy:={checkpoint}")
    graph.wait(timeout_s=150)  # the graph stops when the bag is done
    assert len(chunks) >= 3, graph.output[-3000:]
    recorded = sorted(bag_stamps(bag, JOINTS))  # stamped with the bag's observation times (through float seconds)
    assert all(matching_stamp(stamp_of(m), recorded) is not None for _, m in chunks)
    assert all(len(m.points) == 16 for _, m in chunks)


@pytest.mark.parametrize("checkpoint", ["push_demo", "push_weak"])
def test_replay_graph_feeds_the_shipped_checkpoints(checkpoint, tmp_path, probe, launch_graph):
    """The README example, `deploy launch replay bag:=... policy:=checkpoints/push_demo`: the push checkpoints
    read /sim/cube_pose besides the observations preset, and the replay publishes it too."""
    bag = write_push_bag(tmp_path / "bag", seconds=4.0)
    chunks = probe.collect(MultiDOFJointTrajectory, "/policy/chunk", 10)
    graph = launch_graph("replay", f"bag:={bag}", f"policy:={ROOT / 'checkpoints' / checkpoint}")
    assert graph.wait(timeout_s=150) == 0, graph.output[-3000:]  # the graph stops when the bag is done
    assert len(chunks) >= 3, graph.output[-3000:]
    recorded = sorted(bag_stamps(bag, "/proprio/ee_pose"))  # the reference input: chunks carry its bag stamps
    assert all(matching_stamp(stamp_of(m), recorded) is not None for _, m in chunks)


def test_lockstep_replays_are_deterministic_and_the_helper_passes(tmp_path, domain_id):
    bag = write_bag(tmp_path / "bag", seconds=2.0)
    checkpoint = joints_checkpoint(tmp_path / "ckpt")
    runs = [assert_replay_passes(bag, checkpoint, tmp_path / f"report{i}", domain_id=domain_id, dry_run_ok=True)
            for i in (1, 2)]
    assert runs[0].report["chunks"]["replayed"] >= 8  # one chunk per 0.2 s observation set
    assert runs[0].outcome == "dry run"  # the bag has no chunks: nothing compared, not "passed"
    chunks = []
    for i in (1, 2):
        with BagReader(tmp_path / f"report{i}" / REPLAYED) as reader:
            chunks.append([(stamp_ns(d), bytes(d)) for _, _, d in reader.messages(["/policy/chunk"])])
    assert chunks[0] == chunks[1]
    decoded, _ = read_chunks(tmp_path / "report1" / REPLAYED, "/policy/chunk", CHUNK_TYPE)
    assert np.ptp([c.chunk.actions[0, 0] for c in decoded]) > 0  # the observations (and so the chunks) change


def test_bad_bags_fail_in_one_line_naming_topic_or_file(tmp_path, domain_id):
    checkpoint = joints_checkpoint(tmp_path / "ckpt")
    no_camera = write_bag(tmp_path / "no_camera", seconds=0.5, topics=(JOINTS,))
    done = deploy_cli(domain_id, "replay-test", str(no_camera), "--policy", str(checkpoint))
    assert done.returncode == 2
    assert done.stderr.strip() == (f"deploy: error: bag '{no_camera}' has no topic /cameras/front/image_raw "
                                   f"(policy '{checkpoint}' needs sensor_msgs/msg/Image)")
    wrong = write_bag(tmp_path / "wrong", seconds=0.5, joint_type="std_msgs/msg/String")
    done = deploy_cli(domain_id, "replay-test", str(wrong), "--policy", str(checkpoint))
    assert done.returncode == 2
    assert done.stderr.strip() == (f"deploy: error: bag '{wrong}': topic /proprio/joint_states has type "
                                   "std_msgs/msg/String, expected sensor_msgs/msg/JointState "
                                   f"(policy '{checkpoint}')")
    truncated = write_bag(tmp_path / "truncated", seconds=1.0)
    (mcap,) = truncated.glob("*.mcap")
    mcap.write_bytes(mcap.read_bytes()[:-100])
    done = deploy_cli(domain_id, "replay", str(truncated))
    assert done.returncode == 2
    assert done.stderr.startswith(f"deploy: error: bag '{truncated}': {mcap} is truncated at offset ")
    assert len(done.stderr.strip().splitlines()) == 1
    # The replay node itself (as launch files start it) refuses a bag lacking the policy's inputs.
    node = subprocess.run([sys.executable, "-m", "deploy.nodes.replay_node", "--ros-args", "-p", f"bag:={no_camera}",
                           "-p", f"policy:={checkpoint}"], env=ros_environment(domain_id), capture_output=True,
                          text=True, timeout=60)
    assert node.returncode == 2
    assert node.stderr.strip().endswith(f"error: bag '{no_camera}' has no topic /cameras/front/image_raw "
                                        f"(policy '{checkpoint}' needs sensor_msgs/msg/Image)")
