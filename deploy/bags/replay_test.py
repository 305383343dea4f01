"""`deploy replay-test`: replay a bag's observations into a checkpoint in lockstep, read its chunks back,
evaluate them against the bag's chunks and the controller's blending and safety, and write the report.

The graph `replay_test` (deploy/graph/description.py) runs the policy node on bag time and the replay node in
lockstep mode, which writes the policy's chunks to `<report dir>/replayed` (a bag, viewable in Foxglove).
Chunks are decoded with the package's one message <-> array mapping (deploy.nodes.conversions), so this step
needs rclpy, like the nodes it drives.
"""
from __future__ import annotations

import collections
import json
import os
import sys
import time
from pathlib import Path
from typing import IO

from deploy.bags import lockstep, metrics
from deploy.bags.report import ReplayTestResult, controller_configs, evaluate, write
from deploy.bags.store import BagReader, check_policy_inputs, stamp_ns
from deploy.bags.thresholds import Thresholds
from deploy.bags.topics import policy_inputs, qos_overrides_from_yaml, read_policy_metadata
from deploy.errors import ConfigError, DeployError
from deploy.graph.description import config_dir, resolve
from deploy.graph.runner import GraphRunner, check_modules, child_environment
from deploy.robots.mujoco_model import MujocoRobotModel  # the safety layer's model (the Panda)

REPLAYED = "replayed"  # the bag of replayed chunks inside the report directory
STOP_GRACE_S = 2.0  # after the replay, the policy gets this long to stop on SIGINT (it has nothing to save)


def run(bag: str | Path, policy: str | Path, report_dir: str | Path, *, thresholds: Thresholds = Thresholds(),
        image_max_age_s: float = lockstep.DEFAULT_IMAGE_MAX_AGE_S,
        state_max_age_s: float = lockstep.DEFAULT_STATE_MAX_AGE_S, seed: int = 0, domain_id: int | None = None,
        controller_config: str | Path | None = None, qos_override: str | Path | None = None,
        out: IO[str] | None = None, err: IO[str] | None = None) -> ReplayTestResult:
    """Replay-test `policy` on `bag`; writes report.json, summary.txt, report.png into report_dir.
    `qos_override`: a rosbag2 QoS override YAML for the replayed topics."""
    bag, policy, report_dir = Path(bag), Path(policy), Path(report_dir)
    metadata = read_policy_metadata(policy)
    if metadata.action_space != "cartesian":
        raise ConfigError(f"checkpoint '{policy}' acts in '{metadata.action_space}' space; the policy node and "
                          "replay-test run Cartesian policies")
    inputs = policy_inputs(metadata)
    if qos_override:
        qos_overrides_from_yaml(qos_override)  # a bad file fails here, in one line
    with BagReader(bag) as reader:
        check_policy_inputs(reader, metadata, f"policy '{policy}'")
        collections.deque(reader.messages(list(inputs.topics)), maxlen=0)  # a damaged file fails here, in one line
        start_ns, has_chunks = reader.start_ns, reader.types.get(inputs.chunk_topic) == inputs.chunk_type
    executor_config, safety_config = controller_configs(controller_config or config_dir() / "controller_sim.yaml")
    replayed_bag = report_dir / REPLAYED
    if replayed_bag.exists():
        raise ConfigError(f"report directory '{report_dir}' already holds a replay ({replayed_bag}); choose a new one")
    graph = resolve("replay_test", {"bag": str(bag.resolve()), "policy": str(policy.resolve()),
                                    "output": str(replayed_bag.resolve()), "image_max_age": repr(image_max_age_s),
                                    "state_max_age": repr(state_max_age_s), "seed": str(seed),
                                    "qos_override": str(Path(qos_override).resolve()) if qos_override else ""})
    _run_replay(graph, domain_id, out, err)
    replayed, rejected = read_chunks(replayed_bag, inputs.chunk_topic, inputs.chunk_type)
    recorded, _ = read_chunks(bag, inputs.chunk_topic, inputs.chunk_type) if has_chunks else ([], [])
    with BagReader(replayed_bag) as reader:
        skipped = json.loads(reader.custom.get("skipped_sets", "{}"))
    result = evaluate(start_ns=start_ns, recorded=recorded, replayed=replayed, rejected=rejected,
                      skipped_sets=skipped, thresholds=thresholds, executor_config=executor_config,
                      safety_config=safety_config, model=MujocoRobotModel(),
                      info={"bag": str(bag), "policy": str(policy), "replayed_bag": str(replayed_bag),
                            "chunk_topic": inputs.chunk_topic,
                            "image_max_age_s": image_max_age_s, "state_max_age_s": state_max_age_s,
                            "seed": seed})
    write(result, report_dir)
    return result


def read_chunks(bag: Path, topic: str, msgtype: str) -> tuple[list[metrics.TimedChunk], list[str]]:
    """A bag's chunks with their log time as arrival; chunks that do not decode (NaN, bad shape) are listed."""
    from deploy.control.chunks import ChunkError
    from deploy.nodes.conversions import chunk_from_msg, message_from_cdr

    chunks, rejected = [], []
    with BagReader(bag) as reader:
        for _, log_ns, data in reader.messages([topic]):
            try:
                chunk, _ = chunk_from_msg(message_from_cdr(data, msgtype))
            except (ChunkError, IndexError, ValueError) as error:
                rejected.append(f"chunk stamped {stamp_ns(data)} ns: {error}")
                continue
            chunks.append(metrics.TimedChunk(chunk, stamp_ns(data), log_ns * 1e-9))
    return chunks, rejected


def _run_replay(graph, domain_id: int | None, out, err) -> None:
    """Run the graph until the replay node exits; DeployError if it (or the policy before it) fails."""
    check_modules(graph)
    runner = GraphRunner(graph, child_environment(os.environ, domain_id), grace_s=STOP_GRACE_S,
                         out=out or sys.stdout, err=err or sys.stderr)
    try:
        runner.start()
        children = {child.node.name: child for child in runner.children}
        while (code := children["replay"].proc.poll()) is None:
            if children["policy"].proc.poll() is not None:
                raise DeployError(f"the policy node exited (code {children['policy'].proc.returncode}) before "
                                  "the replay finished; see its output above")
            time.sleep(0.1)
        if code != 0:
            raise DeployError(f"the lockstep replay failed (exit code {code}); see the replay node's output above")
    finally:
        runner.stop()


__all__ = ["REPLAYED", "read_chunks", "run"]
