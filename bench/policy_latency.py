"""The policy node's overhead through the running sim graph: model forward vs observation stamp -> chunk
published, per architecture (act, flow) and torch thread count.

For each case a small random-weight checkpoint (2 cameras-worth of vision off: the front camera only, 64x64,
d_model 64) is written to a temp dir; `deploy launch robot cameras:=front` (sim, controller, camera,
proprioception) runs, and the policy node is started beside it with `checkpoint:=<dir> torch_threads:=<n>`,
its chunks remapped straight to /controller/chunk so the controller executes them; after warm-up, for
`--seconds`, the numbers are the node's own, read from its /diagnostics (windows of the last 200 chunks):
- forward: `predict_chunk` wall time (observation -> tensors -> model -> numpy);
- receipt -> published: the node's own latency from receiving the ee_pose sample to publishing the chunk;
- stamp -> published: from the ee_pose sample's stamp (the robot state sample) to the chunk leaving the node.
stamp -> published minus forward is our overhead (target <= 5 ms p99): the node's part (receipt -> published
minus forward) plus the upstream age of the sample on arrival (controller -> proprioception -> DDS).

    /tmp/venvtest/bin/python bench/policy_latency.py [--seconds 20] [--threads 1 2]
"""
import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.executors import SingleThreadedExecutor

from deploy.graph.runner import child_environment
from deploy.policies.runtime import write_random_checkpoint

SMALL = dict(d_model=64, n_heads=4, dim_feedforward=128, vision_channels=(16, 16, 32), n_keypoints=16)
ARCHITECTURES = {"act": dict(n_encoder_layers=1, n_decoder_layers=1, n_vae_encoder_layers=1),
                 "flow": dict(n_encoder_layers=1, n_decoder_layers=1, n_steps=4)}
KEYS = ("forward_p50_ms", "forward_p99_ms", "receipt_to_publish_p50_ms", "receipt_to_publish_p99_ms",
        "stamp_to_publish_p50_ms", "stamp_to_publish_p99_ms", "chunk_rate_hz", "chunks")


def run_case(kind: str, threads: int, seconds: float, domain_id: int, workdir: Path) -> dict[str, str]:
    checkpoint = write_random_checkpoint(workdir / kind, kind, image_keys=("front",), image_size_hw=(64, 64),
                                         **SMALL, **ARCHITECTURES[kind])
    env = child_environment(os.environ, domain_id)  # the package's DDS transport, as every launched graph
    os.environ.update(env)  # this process's own probe node too
    cmd = [sys.executable, "-m", "deploy.cli", "launch", "robot", "cameras:=front", "--domain-id", str(domain_id)]
    policy_cmd = [sys.executable, "-m", "deploy.nodes.policy_node", "--ros-args", "-r", "__node:=policy",
                  "-r", "~/chunk:=/controller/chunk", "-p", f"checkpoint:={checkpoint}",
                  "-p", f"torch_threads:={threads}"]
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=domain_id)
    node = rclpy.create_node("policy_latency_bench", context=context)
    latest: dict[str, str] = {}

    def on_diagnostics(msg: DiagnosticArray):
        for status in msg.status:
            if status.name == "policy: inference":
                latest.update({kv.key: kv.value for kv in status.values})

    node.create_subscription(DiagnosticArray, "/diagnostics", on_diagnostics, 10)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    graph = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
                             start_new_session=True)
    policy = subprocess.Popen(policy_cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
                              start_new_session=True)
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and int(latest.get("chunks", "0")) < 5:
            executor.spin_once(timeout_sec=0.1)
        latest.clear()
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.1)
    finally:
        for process in (policy, graph):
            process.send_signal(2)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, 9)
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown(context=context)
    return latest


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--domain-id", type=int, default=57)
    args = parser.parse_args()
    print(f"{'policy':6} {'thr':>3} {'forward p50/p99':>16} {'receipt->pub p50/p99':>21} "
          f"{'stamp->pub p50/p99':>19} {'overhead p99':>12} {'rate':>6}")
    with tempfile.TemporaryDirectory() as workdir:
        for kind in ARCHITECTURES:
            for threads in args.threads:
                d = run_case(kind, threads, args.seconds, args.domain_id, Path(workdir) / f"{kind}{threads}")
                if not d:
                    print(f"{kind:6} {threads:>3}  no diagnostics from the policy node")
                    continue
                f = lambda k: float(d.get(k, "nan"))  # noqa: E731
                overhead = f("stamp_to_publish_p99_ms") - f("forward_p99_ms")
                print(f"{kind:6} {threads:>3} {f('forward_p50_ms'):7.1f}/{f('forward_p99_ms'):5.1f} ms "
                      f"{f('receipt_to_publish_p50_ms'):11.1f}/{f('receipt_to_publish_p99_ms'):5.1f} ms "
                      f"{f('stamp_to_publish_p50_ms'):9.1f}/{f('stamp_to_publish_p99_ms'):5.1f} ms "
                      f"{overhead:9.1f} ms {f('chunk_rate_hz'):5.1f}")


if __name__ == "__main__":
    main()
