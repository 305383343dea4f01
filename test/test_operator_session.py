"""`deploy launch teleop_session device:=keyboard` as a user runs it: the launch prints the command that starts the
keyboard in another terminal; that exact command, run in a pseudo-terminal, takes authority during an episode;
and the intervention node's death stops the session with one line naming it (not, 30 s later, a misleading
'the arm did not reach the start pose')."""
import os
import shlex
import signal
import time
from pathlib import Path

from harness import wait_until
from std_msgs.msg import Bool

from deploy.policies.runtime import write_random_checkpoint
from test_intervention_node import Terminal, type_keys

NOTE = "deploy: device:=keyboard: start the keyboard in another terminal: "


def child_pids(pid: int) -> list[int]:
    return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def node_pid(runner_pid: int, node: str) -> int:
    for pid in child_pids(runner_pid):
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        if f"__node:={node}".encode() in argv:
            return pid
    raise AssertionError(f"no child of the runner runs node '{node}'")


def test_keyboard_session_prints_the_command_it_takes_over_and_a_dead_intervention_node_stops_it(
        tmp_path, domain_id, launch_graph, probe):
    checkpoint = write_random_checkpoint(tmp_path / "start", state_keys=("ee_pose", "gripper_width", "cube_pose"),
                                         d_model=32, dim_feedforward=64, n_encoder_layers=1, n_decoder_layers=1,
                                         use_vae=False)
    active = probe.collect(Bool, "/intervention/active", 100)
    episode = probe.collect(Bool, "/episode/active", 10)
    graph = launch_graph("teleop_session", f"policy:={checkpoint}", f"session:={tmp_path / 'session'}",
                         "device:=keyboard", "learn:=false", "cameras:=")
    assert wait_until(lambda: any(NOTE in line for line in graph.lines), timeout_s=30), graph.output
    command = next(line for line in graph.lines if NOTE in line)[len(NOTE):].split("  (")[0]
    assert command == f"deploy operator keyboard --domain-id {domain_id}"
    assert not [line for line in graph.lines if "[operator]" in line]  # no keyboard node inside the graph

    argv = shlex.split(command)
    assert argv[0] == "deploy"
    keyboard = Terminal(domain_id, argv[1:])  # `deploy ...` is `python -m deploy.cli ...`
    try:
        assert wait_until(lambda: any(m.data for _, m in episode), timeout_s=120), graph.output[-3000:]
        assert wait_until(lambda: "space  deadman on/off" in keyboard.screen, timeout_s=60), keyboard.screen
        time.sleep(1.0)
        assert not any(m.data for _, m in active)  # the policy drives until the operator asks
        type_keys(keyboard.master, b" ")
        assert wait_until(lambda: any(m.data for _, m in active), timeout_s=30), \
            graph.output[-3000:] + keyboard.screen

        os.kill(node_pid(graph.proc.pid, "intervention"), signal.SIGKILL)
        assert graph.wait(timeout_s=60) == 1, graph.output[-3000:]
        stopping = [line for line in graph.lines if "required node" in line]
        assert stopping == ["deploy: required node 'intervention' was killed by SIGKILL — stopping the graph"], \
            graph.output[-3000:]
        assert "did not reach the start pose" not in graph.output
    finally:
        keyboard.stop()
