"""CLI: `deploy record`, `deploy replay`, `deploy replay-test` (rosbag2 MCAP; see deploy/bags/).

Record and replay run the nodes `recorder_node` / `replay_node` through the graph runner (one process each,
the package's DDS environment, Ctrl-C stops them cleanly). replay-test exits 0 when the checkpoint passes,
1 when a threshold is crossed, 2 on bad input, 3 when the replay itself could not run, 4 for a dry run: the bag
has no recorded chunks, so nothing was compared (latency, smoothness and safety were within thresholds).
"""
from __future__ import annotations

import argparse
import datetime
import sys
from pathlib import Path

from deploy.errors import ConfigError, DeployError

EXIT_FAILED, EXIT_NOT_RUN, EXIT_DRY_RUN = 1, 3, 4
EXIT_CODES = {"passed": 0, "failed": EXIT_FAILED, "dry run": EXIT_DRY_RUN}


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def _limit(text: str) -> float | None:
    """A threshold: a number >= 0, or "off"."""
    if text == "off":
        return None
    value = float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0 or 'off', got {text}")
    return value


def _positive_duration(ns: argparse.Namespace) -> float | None:
    if ns.duration is not None and ns.duration <= 0:
        raise ConfigError(f"--duration must be positive, got {ns.duration:g}")
    return ns.duration


def _cmd_record(ns: argparse.Namespace) -> int:
    from deploy.bags.store import default_bag_path
    from deploy.graph.description import resolve
    from deploy.graph.runner import run_graph

    output = ns.output or str(default_bag_path(_now()))
    if Path(output).exists():
        raise ConfigError(f"bag '{output}' exists already (choose a new --output)")
    graph = resolve("record", {"bag": output, "topics": ns.topics, "preset": ns.preset,
                               "use_sim_time": "true" if ns.use_sim_time else "false"})
    code = run_graph(graph, domain_id=ns.domain_id, duration_s=_positive_duration(ns))
    if code == 0:
        print(f"deploy record: bag written to {output}")
    return code


def _cmd_replay(ns: argparse.Namespace) -> int:
    from deploy.bags.store import BagReader
    from deploy.bags.topics import qos_overrides_from_yaml
    from deploy.graph.description import resolve
    from deploy.graph.runner import run_graph

    BagReader(ns.bag).close()  # a missing or truncated bag fails here, in one line
    if ns.qos_override:
        qos_overrides_from_yaml(ns.qos_override)  # and so does a bad override file
    graph = resolve("bag_play", {"bag": str(Path(ns.bag).resolve()), "rate": repr(ns.rate),
                                 "start_offset": repr(ns.start_offset), "loop": "true" if ns.loop else "false",
                                 "topics": ns.topics, "clock": "true" if ns.clock else "false",
                                 "wait_for_subscribers": "true" if ns.wait_for_subscribers else "false",
                                 "qos_override": str(Path(ns.qos_override).resolve()) if ns.qos_override else ""})
    return run_graph(graph, domain_id=ns.domain_id)


def _cmd_replay_test(ns: argparse.Namespace) -> int:
    from deploy.bags import replay_test
    from deploy.bags.thresholds import Thresholds

    thresholds = Thresholds(max_position_diff_m=ns.max_position_diff, max_rotation_diff_rad=ns.max_rotation_diff,
                            max_gripper_diff_m=ns.max_gripper_diff, min_matched_fraction=ns.min_matched,
                            max_latency_s=ns.max_latency, max_accel_jump_m_s2=ns.max_accel_jump,
                            max_safety_trips=ns.max_safety_trips)
    report_dir = Path(ns.report or Path("runs/replay_test") / _now().strftime("%Y%m%d-%H%M%S"))
    try:
        result = replay_test.run(ns.bag, ns.policy, report_dir, thresholds=thresholds,
                                 image_max_age_s=ns.image_max_age, state_max_age_s=ns.state_max_age, seed=ns.seed,
                                 domain_id=ns.domain_id, controller_config=ns.controller_config,
                                 qos_override=ns.qos_override)
    except ConfigError:
        raise
    except DeployError as error:
        print(f"deploy replay-test: error: {error}", file=sys.stderr)
        return EXIT_NOT_RUN
    print((report_dir / "summary.txt").read_text(), end="")
    print(f"deploy replay-test: report in {report_dir}")
    return EXIT_CODES[result.outcome]


QOS_OVERRIDE_HELP = ("rosbag2 QoS override YAML (as ros2 bag play --qos-profile-overrides-path): topic -> "
                     "reliability, durability, history, depth, ...; default: the bag's offered QoS, or rosbag2's "
                     "default (reliable, volatile, keep-last 10) when it recorded none")


def register(commands) -> None:
    from deploy.bags.lockstep import DEFAULT_IMAGE_MAX_AGE_S, DEFAULT_STATE_MAX_AGE_S
    from deploy.bags.thresholds import Thresholds
    from deploy.bags.topics import PRESETS

    record = commands.add_parser("record", help="record the stack's topics to a rosbag2 MCAP bag",
                                 description="Subscribe to the selected topics as they appear and write them, "
                                             "undeserialized, to a rosbag2 MCAP bag (ros2 bag / Foxglove open it).")
    record.add_argument("--output", default="", help="bag directory to create (default runs/bags/<UTC date-time>)")
    which = record.add_mutually_exclusive_group()
    which.add_argument("--topics", default="", help="comma-separated topic names or * patterns")
    which.add_argument("--preset", default="stack", choices=sorted(PRESETS), help="named topic set (default stack)")
    record.add_argument("--duration", type=float, default=None, help="stop after this many seconds (default: Ctrl-C)")
    record.add_argument("--use-sim-time", action="store_true", help="log times from /clock (lockstep graphs)")
    record.add_argument("--domain-id", type=int, default=None, help="ROS_DOMAIN_ID of the graph to record")
    record.set_defaults(func=_cmd_record)

    replay = commands.add_parser("replay", help="publish a bag with its recorded timing and /clock",
                                 description="Publish a bag's messages with their recorded timing (relative to "
                                             "its first message) and /clock from bag time.")
    replay.add_argument("bag", help="rosbag2 directory (or .mcap file)")
    replay.add_argument("--rate", type=float, default=1.0, help="playback speed (default 1)")
    replay.add_argument("--start-offset", type=float, default=0.0, help="seconds of the bag to skip")
    replay.add_argument("--loop", action="store_true", help="play again and again (time goes on)")
    replay.add_argument("--topics", default="", help="comma-separated topics or * patterns (default: all)")
    replay.add_argument("--clock", action=argparse.BooleanOptionalAction, default=True,
                        help="publish /clock from bag time (default on)")
    replay.add_argument("--wait-for-subscribers", action="store_true",
                        help="start once every replayed topic has a subscriber (default: at once)")
    replay.add_argument("--qos-override", default="", metavar="FILE", help=QOS_OVERRIDE_HELP)
    replay.add_argument("--domain-id", type=int, default=None, help="ROS_DOMAIN_ID to publish on")
    replay.set_defaults(func=_cmd_replay)

    test = commands.add_parser("replay-test", help="replay a bag into a checkpoint and report on its chunks",
                               description="Replay a bag's observations into the policy node running CKPT, one "
                                           "observation set at a time (deterministic), and report chunk "
                                           "differences, latency, smoothness after blending and safety trips. "
                                           "Exit 0 = passed, 1 = a threshold crossed, 2 = bad input, 3 = not run, "
                                           "4 = dry run (the bag has no chunks: nothing compared).")
    test.add_argument("bag", help="rosbag2 directory with the policy's inputs (and, to compare, its chunks)")
    test.add_argument("--policy", required=True, help="checkpoint directory to test")
    test.add_argument("--report", default="", help="report directory (default runs/replay_test/<UTC date-time>)")
    defaults = Thresholds()
    for flag, field, what in (("--max-position-diff", "max_position_diff_m", "TCP position difference [m]"),
                              ("--max-rotation-diff", "max_rotation_diff_rad", "TCP rotation difference [rad]"),
                              ("--max-gripper-diff", "max_gripper_diff_m", "gripper difference [m]"),
                              ("--min-matched", "min_matched_fraction", "fraction of the bag's chunks compared"),
                              ("--max-latency", "max_latency_s", "p99 inference latency [s]"),
                              ("--max-accel-jump", "max_accel_jump_m_s2", "acceleration jump at a splice [m/s²]"),
                              ("--max-safety-trips", "max_safety_trips",
                               "workspace / orientation / NaN trips plus rejected chunks")):
        default = getattr(defaults, field)
        test.add_argument(flag, type=_limit, default=default, metavar="X|off",
                          help=f"{what} (default {'off' if default is None else default})")
    test.add_argument("--image-max-age", type=float, default=DEFAULT_IMAGE_MAX_AGE_S,
                      help=f"the policy's image_max_age_s during the replay [s] (default {DEFAULT_IMAGE_MAX_AGE_S})")
    test.add_argument("--state-max-age", type=float, default=DEFAULT_STATE_MAX_AGE_S,
                      help=f"the policy's state_max_age_s during the replay [s] (default {DEFAULT_STATE_MAX_AGE_S})")
    test.add_argument("--seed", type=int, default=0, help="seed of the policy (default 0)")
    test.add_argument("--controller-config", default=None,
                      help="controller params YAML for blending and safety (default config/controller_sim.yaml)")
    test.add_argument("--qos-override", default="", metavar="FILE", help=QOS_OVERRIDE_HELP)
    test.add_argument("--domain-id", type=int, default=None, help="ROS_DOMAIN_ID for the replay (isolate CI runs)")
    test.set_defaults(func=_cmd_replay_test)


__all__ = ["register"]
