import os
import subprocess

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


@pytest.fixture
def small_disk(tmp_path):
    """-> mount(size_kb): a fresh tmpfs of that size (a disk that fills), unmounted at teardown. Needs root (the
    suite runs as root); a test that cannot mount one fails saying so, it never passes without the disk."""
    mounted = []

    def mount(size_kb: int):
        point = tmp_path / f"disk{len(mounted)}"
        point.mkdir()
        result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_kb}k", "tmpfs", str(point)],
                                capture_output=True, text=True)
        if result.returncode != 0:
            pytest.fail(f"cannot mount a {size_kb} kB tmpfs at {point} to fill: {result.stderr.strip()} (needs root)")
        mounted.append(point)
        return point

    yield mount
    for point in mounted:
        subprocess.run(["umount", "--lazy", str(point)], check=True)
