"""A checkpoint trained by `deploy train-bc` on a LeRobot v3 folder runs in the real policy node over DDS: fed a
dataset row's frame and state on the node's topics, it publishes a chunk of the policy's horizon, finite."""
import subprocess
import sys

import numpy as np
from geometry_msgs.msg import PoseStamped
from sensor_msgs.msg import Image, JointState
from trajectory_msgs.msg import MultiDOFJointTrajectory

from deploy.cli import main
from deploy.learning.lerobot_source import read_lerobot
from deploy.nodes.common import SENSOR_QOS
from deploy.nodes.conversions import image_to_msg, joint_state_to_msg, pose_to_msg
from harness import interrupt_process, ros_environment, wait_until
from test_lerobot_training import SMALL, STATE, dataset  # noqa: F401 (the fixture)


def test_the_policy_node_runs_a_checkpoint_trained_on_a_lerobot_folder(dataset, domain_id, probe,  # noqa: F811
                                                                         tmp_path):
    _, root = dataset
    checkpoint = tmp_path / "ckpt"
    assert main(["train-bc", str(root), "--output", str(checkpoint), "--steps", "30", "--batch-size", "8",
                 "--cameras", "front", "--image-size", "32", "--arch", SMALL]) == 0
    source = read_lerobot(root, STATE, ("front",), 16)
    frame, pose, width = source["frames"]["front"][5], source["state_values"]["ee_pose"][5], \
        source["state_values"]["gripper_width"][5]
    pose = pose.astype(float)
    pose[3:] /= np.linalg.norm(pose[3:])
    chunks = probe.collect(MultiDOFJointTrajectory, "/policy/chunk")
    pose_pub = probe.node.create_publisher(PoseStamped, "/proprio/ee_pose", SENSOR_QOS)
    joint_pub = probe.node.create_publisher(JointState, "/proprio/joint_states", SENSOR_QOS)
    image_pub = probe.node.create_publisher(Image, "/cameras/front/image_raw", SENSOR_QOS)

    def publish_inputs():
        stamp_s = probe.node.get_clock().now().nanoseconds * 1e-9
        pose_pub.publish(pose_to_msg(pose[:3], pose[3:], stamp_s))
        joint_pub.publish(joint_state_to_msg(stamp_s, np.zeros(7), np.zeros(7), np.zeros(7), float(width[0])))
        image_pub.publish(image_to_msg(np.ascontiguousarray(frame), stamp_s, "front"))

    probe.node.create_timer(0.02, publish_inputs)
    proc = subprocess.Popen([sys.executable, "-m", "deploy.nodes.policy_node", "--ros-args", "-r", "__node:=policy",
                             "-r", "~/chunk:=/policy/chunk", "-p", f"checkpoint:={checkpoint}",
                             "-p", "inference_rate_hz:=10.0"], env=ros_environment(domain_id),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        assert wait_until(lambda: len(chunks) >= 1, timeout_s=60), "no chunk from the policy node"
        chunk = chunks[0][1]
        assert len(chunk.points) == 16
        values = [[t.translation.x, t.translation.y, t.translation.z, t.rotation.x, t.rotation.y, t.rotation.z,
                   t.rotation.w] for p in chunk.points for t in p.transforms]
        assert np.isfinite(values).all()
    finally:
        interrupt_process(proc, timeout_s=10)
