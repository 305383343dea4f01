import os

import pytest

from deploy.graph.description import dds_environment
from harness import GraphProcess, Probe, fresh_domain_id

os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.update(dds_environment())  # the test process's own participants (Probe) use the package's transport


@pytest.fixture
def domain_id(monkeypatch) -> int:
    """A private ROS domain for this test, exported so child processes inherit it."""
    domain = fresh_domain_id()
    monkeypatch.setenv("ROS_DOMAIN_ID", str(domain))
    return domain


@pytest.fixture
def probe(domain_id):
    node = Probe(domain_id)
    yield node
    node.close()


@pytest.fixture
def launch_graph(domain_id):
    """Start `deploy launch <args>` on this test's domain; every graph is reaped at teardown."""
    started: list[GraphProcess] = []

    def start(*args: str) -> GraphProcess:
        graph = GraphProcess(list(args), domain_id)
        started.append(graph)
        return graph

    yield start
    for graph in started:
        graph.interrupt()
