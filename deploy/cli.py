"""`deploy` command line: `deploy launch <graph> [name:=value ...] [--domain-id N] [--duration S]`, `deploy demo`,
`deploy check [name:=value ...]`, `deploy operator <device>` (an operator node in this terminal), and the
subcommands of the modules in `COMMAND_MODULES`.

Each subcommand is a function taking the parsed namespace and returning the exit code. A module in
`COMMAND_MODULES` exposes `register(commands)` adding its parsers to the subparsers action (keep its top-level
imports light: `deploy --help` imports them all). A `ConfigError` anywhere becomes one line
`deploy: error: <message>` on stderr and exit code 2.
"""
from __future__ import annotations

import argparse
import importlib
import os
import shlex
import sys
from pathlib import Path

from deploy.errors import ConfigError

EXIT_USAGE = 2
COMMAND_MODULES: tuple[str, ...] = ("deploy.data.commands", "deploy.learning.commands",
                                    "deploy.bags.commands",
                                    "deploy.data.export_commands")  # each has register(commands)


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors, like the ConfigError path."""

    def error(self, message):
        self.exit(EXIT_USAGE, f"deploy: error: {message} (see '{self.prog} --help')\n")


def _show_args(graph_name: str) -> str:
    """The graph's arguments as `ros2 launch --show-args` lists a launch file's."""
    from deploy.graph.description import GRAPHS

    graph = GRAPHS.get(graph_name)
    if graph is None:
        raise ConfigError(f"unknown graph '{graph_name}' (choose {'|'.join(sorted(GRAPHS))})")
    lines = ["Arguments (pass arguments as '<name>:=<value>'):"]
    for arg in graph.args:
        choices = f". Valid choices are: {list(arg.choices)}" if arg.choices is not None else ""
        lines += ["", f"    '{arg.name}':", f"        {arg.description}{choices}", f"        (default: '{arg.default}')"]
    return "\n".join(lines)


def _cmd_launch(ns: argparse.Namespace) -> int:
    from deploy.graph.description import operator_note, parse_launch_args, resolve
    from deploy.graph.runner import child_environment, node_command, run_graph

    if ns.show_args:
        print(_show_args(ns.graph))
        return 0
    graph = resolve(ns.graph, parse_launch_args(ns.args))
    note = operator_note(graph, ns.domain_id)
    if note:
        print(note, flush=True)
    if ns.dry_run:
        env = child_environment({}, ns.domain_id)
        print(" ".join(f"{k}={shlex.quote(v)}" for k, v in sorted(env.items())))
        for node in graph.nodes:
            print(("required " if node.required else "") + shlex.join(node_command(node)))
        return 0
    if ns.duration is not None and ns.duration <= 0:
        raise ConfigError(f"--duration must be positive, got {ns.duration:g}")
    return run_graph(graph, domain_id=ns.domain_id, duration_s=ns.duration, grace_s=ns.grace)


def _cmd_operator(ns: argparse.Namespace) -> int:
    """Replace this process with the operator node, in this terminal, on the graph's DDS settings and domain."""
    import os

    from deploy.graph.runner import child_environment

    env = child_environment(os.environ, ns.domain_id)
    argv = [sys.executable, "-m", "deploy.nodes.operator_node", "--ros-args", "-r", f"__node:={ns.device}_operator",
            "-p", f"device:={ns.device}"]
    for token in ns.args:
        argv += ["-p", token]
    os.execve(sys.executable, argv, env)


def _cmd_demo(ns: argparse.Namespace) -> int:
    """The embedded-sim demo: the full graph with the placeholder policy, recording the front camera."""
    from deploy.graph.description import resolve
    from deploy.graph.runner import run_graph

    if ns.duration <= 0:
        raise ConfigError(f"--duration must be positive, got {ns.duration:g}")
    video = str(Path(ns.output) / "front.mp4")
    strip = Path(video).with_suffix(".strip.png")
    for previous in (Path(video), strip):  # a file left by an earlier run must not pass for this one's
        previous.unlink(missing_ok=True)
    code = run_graph(resolve("demo", {"video": video}), domain_id=ns.domain_id, duration_s=ns.duration)
    if code != 0:
        return code
    if not strip.is_file():  # the recorder writes no strip when no frame came
        print(f"deploy demo: error: no frame from the front camera within {ns.duration:g} s (the sim's renderer "
              "starts last on a busy machine); try --duration 60", file=sys.stderr)
        return 1
    print(f"deploy demo: front camera saved to {video} and {strip}")
    return 0


def _cmd_check(ns: argparse.Namespace) -> int:
    """The bring-up pre-flight: a table of checks, exit 1 when one failed (deploy/check.py)."""
    from deploy.check import exit_code, format_table, run_checks
    from deploy.graph.description import parse_launch_args

    if ns.domain_id is not None:  # the sim's link and the DDS row follow the domain, as under deploy launch
        if not 0 <= ns.domain_id <= 232:
            raise ConfigError(f"--domain-id {ns.domain_id} is out of range (0..232)")
        os.environ["ROS_DOMAIN_ID"] = str(ns.domain_id)
    rows = run_checks(parse_launch_args(ns.args), sample_s=ns.sample)
    print(format_table(rows))
    failed = [row.check for row in rows if row.status == "FAIL"]
    print(f"deploy check: {len(failed)} failed ({', '.join(failed)})" if failed else "deploy check: all passed")
    return exit_code(rows)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="deploy", description="Run and inspect deploy's ROS 2 node graphs.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)

    launch = commands.add_parser("launch", help="start a node graph (like `ros2 launch deploy <graph>.launch.py`)",
                                 description="Start every node of a graph, each in its own process.")
    launch.add_argument("graph", help="graph name, e.g. sim or real_robot")
    launch.add_argument("args", nargs="*", metavar="name:=value", help="launch arguments, e.g. robot:=franka")
    launch.add_argument("--domain-id", type=int, default=None, help="ROS_DOMAIN_ID for the nodes")
    launch.add_argument("--duration", type=float, default=None, help="stop cleanly after this many seconds")
    launch.add_argument("--grace", type=float, default=5.0,
                        help="seconds each node gets after SIGINT before SIGTERM (default 5)")
    launch.add_argument("--dry-run", action="store_true", help="print the environment and node commands, start nothing")
    launch.add_argument("--show-args", "-s", action="store_true",
                        help="list the graph's launch arguments with their descriptions, start nothing")
    launch.set_defaults(func=_cmd_launch)

    operator = commands.add_parser("operator", help="run an operator device node in this terminal (like "
                                   "`ros2 run deploy keyboard_operator`)",
                                   description="Publish an operator device on /operator/joy and /operator/twist for "
                                               "the intervention node (teleop_session device:=keyboard).")
    operator.add_argument("device", choices=("keyboard", "gamepad", "spacemouse"))
    operator.add_argument("args", nargs="*", metavar="name:=value",
                          help="node parameters, e.g. device_params.key_hold_s:=0.3 or rate_hz:=100")
    operator.add_argument("--domain-id", type=int, default=None, help="ROS_DOMAIN_ID of the graph")
    operator.set_defaults(func=_cmd_operator)

    demo = commands.add_parser("demo", help="run the embedded MuJoCo demo and save a video of it",
                               description="Start the sim graph for a while and record the front camera.")
    demo.add_argument("--duration", type=float, default=40.0, help="seconds to run (default 40)")
    demo.add_argument("--output", default="runs/demo", help="folder for front.mp4 and front.strip.png")
    demo.add_argument("--domain-id", type=int, default=None, help="ROS_DOMAIN_ID for the nodes")
    demo.set_defaults(func=_cmd_demo)
    check = commands.add_parser(
        "check", help="bring-up pre-flight: robot, RT kernel, joint-state rate, cameras, DDS, disk (moves nothing)",
        description="Check, without moving the arm, what `deploy launch real_robot` with the same arguments needs. "
                    "Prints one row per check; exit 0 when none failed, 1 otherwise.")
    check.add_argument("args", nargs="*", metavar="name:=value",
                       help="real_robot launch arguments, e.g. robot:=franka robot_ip:=172.16.0.2 cameras:=front")
    check.add_argument("--sample", type=float, default=2.0, help="seconds to measure each rate (default 2)")
    check.add_argument("--domain-id", type=int, default=None,
                       help="ROS_DOMAIN_ID of the graph to check (robot:=sim attaches to that domain's sim)")
    check.set_defaults(func=_cmd_check)
    for module in COMMAND_MODULES:
        importlib.import_module(module).register(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    ns, extra = parser.parse_known_args(argv)
    if ns.command in ("launch", "check", "operator"):  # name:=value arguments may come after options too
        ns.args += [token for token in extra if ":=" in token]
        extra = [token for token in extra if ":=" not in token]
    if extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        return ns.func(ns)
    except ConfigError as exc:
        print(f"deploy: error: {exc}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
