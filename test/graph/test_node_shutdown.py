"""Every node kind stops cleanly on the signals `ros2 launch` and a terminal deliver: on Ctrl-C the terminal
sends SIGINT to the whole process group and launch sends each node another at once; launch escalates with
SIGTERM. Repeated signals must be one clean stop: exit code 0 and no traceback.

Real processes: the package's graphs, started node by node by the graph runner (each in its own process group,
as `ros2 launch` runs them), then signalled by this test directly, all nodes at once.
"""
import io
import signal
import time
from pathlib import Path

import pytest
from diagnostic_msgs.msg import DiagnosticStatus
from rclpy.serialization import serialize_message
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Bool, String

from deploy.bags.store import BagWriter
from deploy.graph.description import ResolvedGraph, resolve
from deploy.graph.runner import GraphRunner, check_modules
from deploy.nodes.common import SENSOR_QOS
from harness import ros_environment, wait_until

SIGNALS = {"SIGINT twice": (signal.SIGINT, signal.SIGINT), "SIGTERM then SIGINT": (signal.SIGTERM, signal.SIGINT)}
ROOT = Path(__file__).resolve().parents[2]
BAD_OUTPUT = ("Traceback", "KeyboardInterrupt", "terminate called", "Segmentation fault")


def every_node_kind(tmp_path) -> ResolvedGraph:
    """teleop_session with the recorder (sim, controller, camera, proprioception, policy, intervention, episodes,
    learner, recorder) plus the demo's frame recorder: every node the package ships but the replay."""
    session = resolve("teleop_session", {"policy": str(ROOT / "checkpoints/push_weak"), "cameras": "front",
                                         "record": "true", "bag": str(tmp_path / "bag"),
                                         "session": str(tmp_path / "session")})
    frames = resolve("demo", {"cameras": "front", "video": str(tmp_path / "front.mp4")}).node("frame_recorder")
    return ResolvedGraph("every_node_kind", session.args, session.nodes + (frames,))


def looping_replay(tmp_path) -> ResolvedGraph:
    bag = tmp_path / "chatter"
    with BagWriter(bag) as writer:
        writer.add_topic("/chatter", "std_msgs/msg/String")
        for i in range(20):
            writer.write("/chatter", 1_700_000_000 * 10**9 + i * 10**8, serialize_message(String(data=f"{i}")))
    return resolve("bag_play", {"bag": str(bag), "loop": "true"})


def stop_with(graph: ResolvedGraph, signals, probe, domain_id, ready_topics: dict) -> dict[str, tuple[int, str]]:
    """Start `graph`, wait until it runs (every node in the ROS graph, `ready_topics` flowing), send the first of
    `signals` to every node's process group at once, then the second, twice, 0.1 s and 0.5 s after the first
    (identical signals that arrive together coalesce into one); -> node name -> (exit code, its output)."""
    check_modules(graph)
    seen = {topic: probe.collect(msg_type, topic, SENSOR_QOS) for topic, msg_type in ready_topics.items()}
    out, err = io.StringIO(), io.StringIO()
    runner = GraphRunner(graph, ros_environment(domain_id), out=out, err=err)
    names = {node.name for node in graph.nodes}
    try:
        runner.start()
        running = wait_until(lambda: names <= set(probe.node.get_node_names()) and all(seen.values()), 180.0)
        assert running, (f"graph not up: nodes {sorted(set(probe.node.get_node_names()) & names)} of {sorted(names)}, "
                         f"silent topics {[t for t, m in seen.items() if not m]}\n{err.getvalue()[-3000:]}")
        time.sleep(2.0)  # spinning, threads and child processes started
        first, then = signals
        for sig, after_s in ((first, 0.0), (then, 0.1), (then, 0.4)):  # a node may be closing when `then` lands
            time.sleep(after_s)
            for child in runner.children:
                runner._signal_group(child.proc, sig)
        deadline = time.monotonic() + 60.0
        codes = {}
        for child in runner.children:
            try:
                codes[child.node.name] = child.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except Exception:  # noqa: BLE001  (still running: reported below, killed by stop())
                codes[child.node.name] = None
            for reader in child.readers:
                reader.join(timeout=5.0)
    finally:
        runner.stop()
    lines = (out.getvalue() + err.getvalue()).splitlines()
    return {name: (code, "\n".join(line for line in lines if line.startswith(f"[{name}] ")))
            for name, code in codes.items()}


@pytest.mark.timeout(400)
@pytest.mark.parametrize("signals", SIGNALS.values(), ids=SIGNALS.keys())
def test_every_node_stops_cleanly_on_repeated_signals(signals, tmp_path, probe, domain_id):
    ready = {"/proprio/joint_states": JointState, "/cameras/front/image_raw": Image, "/learner/status": DiagnosticStatus,
             "/episode/active": Bool, "/intervention/active": Bool}
    results = stop_with(every_node_kind(tmp_path), signals, probe, domain_id, ready)
    assert set(results) >= {"sim", "controller", "camera_front", "proprioception", "policy", "intervention",
                            "episodes", "learner", "recorder", "frame_recorder"}
    unclean = {name: (code, [line for line in output.splitlines() if any(b in line for b in BAD_OUTPUT)][:3])
               for name, (code, output) in results.items()
               if code != 0 or any(b in output for b in BAD_OUTPUT)}
    assert unclean == {}, "\n\n".join(f"{n}:\n{results[n][1][-2000:]}" for n in unclean)


@pytest.mark.timeout(200)
@pytest.mark.parametrize("signals", SIGNALS.values(), ids=SIGNALS.keys())
def test_replay_stops_cleanly_on_repeated_signals(signals, tmp_path, probe, domain_id):
    results = stop_with(looping_replay(tmp_path), signals, probe, domain_id, {"/chatter": String})
    assert list(results) == ["replay"]
    code, output = results["replay"]
    assert code == 0 and not any(b in output for b in BAD_OUTPUT), output[-2000:]
