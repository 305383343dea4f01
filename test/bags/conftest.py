"""One recorded sim session shared by the record and replay-test tests (recording it is the slow part)."""
import dataclasses
from pathlib import Path

import pytest
from trajectory_msgs.msg import MultiDOFJointTrajectory

from bag_helpers import TINY, tool_down
from deploy.policies.runtime import write_random_checkpoint
from harness import GraphProcess, Probe, fresh_domain_id, wait_until

CHUNKS = 15  # recorded after the first few: enough to compare, few enough to stay quick


@dataclasses.dataclass
class SimSession:
    bag: Path
    checkpoint: Path
    chunks_seen: list  # (receive time, MultiDOFJointTrajectory) by a probe while the session ran
    output: str


@pytest.fixture(scope="session")
def sim_session(tmp_path_factory) -> SimSession:
    """`deploy launch sim record:=true` with a tool-down random ACT (front camera + TCP pose) as the policy."""
    root = tmp_path_factory.mktemp("sim_session")
    checkpoint = tool_down(write_random_checkpoint(root / "ckpt", "act", image_keys=("front",),
                                                   image_size_hw=(32, 32), **TINY))
    domain_id = fresh_domain_id()
    probe = Probe(domain_id)
    chunks = probe.collect(MultiDOFJointTrajectory, "/policy/chunk", 10)
    graph = GraphProcess(["sim", "record:=true", f"bag:={root / 'bag'}", f"policy:={checkpoint}",
                          "cameras:=front"], domain_id)
    try:
        assert wait_until(lambda: len(chunks) >= 3, timeout_s=150), graph.output[-3000:]
        assert wait_until(lambda: len(chunks) >= 3 + CHUNKS, timeout_s=90), graph.output[-3000:]
        assert graph.interrupt() == 0, graph.output[-3000:]
    finally:
        graph.kill()
        probe.close()
    return SimSession(root / "bag", checkpoint, list(chunks), graph.output)
