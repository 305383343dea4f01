"""`deploy export-lerobot SOURCE --output DIR`: an episode log (deploy.data.lerobot) or a rosbag2 bag
(deploy.data.export_bag) as a LeRobotDataset v3.0."""
from __future__ import annotations

import argparse

DEFAULT_TASK = "push the cube onto the green square"


def register(commands) -> None:
    export = commands.add_parser(
        "export-lerobot", help="write an episode log or a bag as a LeRobotDataset v3.0 folder (parquet + MP4)",
        description="Export the complete episodes of an episode log (demos, rollouts, corrections), or the "
                    "episodes of a rosbag2 bag (ours or any other tool's, through a topic-to-feature mapping), as a "
                    "LeRobotDataset v3.0, resampled to a fixed fps by nearest message stamp.")
    export.add_argument("log_root", metavar="SOURCE",
                        help="episode log folder (holds episode_NNNNNN/), or a rosbag2 bag (directory or .mcap)")
    export.add_argument("--mapping", default=None, metavar="YAML",
                        help="bags: which topics and fields make images, state, action, and how episodes split "
                             "(default: this package's topics; format in deploy/data/export_bag.py)")
    export.add_argument("--output", required=True, help="dataset folder to create (must not exist, or be empty)")
    export.add_argument("--repo-id", default=None, help="dataset name for the card (default: local/<output name>)")
    export.add_argument("--task", default=DEFAULT_TASK, help=f"task text of every episode (default: '{DEFAULT_TASK}')")
    export.add_argument("--only-successful", action="store_true", help="leave out episodes that did not succeed")
    export.add_argument("--fps", type=int, default=None,
                        help="rate of the resampled dataset (default: the log's step_rate_hz; a bag's mapping fps)")
    export.add_argument("--robot-type", default=None, help="info.json robot_type (default: null)")
    export.set_defaults(func=_cmd_export)


def _cmd_export(ns: argparse.Namespace) -> int:
    from deploy.data.export_bag import export_bag, is_bag, mapping_from_yaml
    from deploy.data.lerobot import export_lerobot
    from deploy.errors import ConfigError

    bag = is_bag(ns.log_root)
    if bag:
        if ns.only_successful:
            raise ConfigError("--only-successful needs an episode log (a bag has no episode outcomes)")
        mapping = mapping_from_yaml(ns.mapping) if ns.mapping else None
        summary = export_bag(ns.log_root, ns.output, ns.task, mapping, ns.fps, ns.robot_type, ns.repo_id)
    else:
        if ns.mapping:
            raise ConfigError(f"--mapping is for bags; {ns.log_root} is not a rosbag2 bag (no metadata.yaml)")
        summary = export_lerobot(ns.log_root, ns.output, ns.task, ns.only_successful, ns.fps, ns.robot_type,
                                 ns.repo_id)
    for index, reason in sorted(summary.skipped.items()):
        print(f"skipped {'bag' if bag else 'log'} episode {index}: {reason}")
    print(f"deploy export-lerobot: {len(summary.source_episodes)} episodes, {summary.total_frames} frames at "
          f"{summary.fps} fps, cameras {', '.join(summary.cameras) or 'none'} -> {summary.output}")
    print(f"resampling to the {summary.fps} Hz grid: worst stamp offset {summary.max_stamp_offset_s * 1000:.1f} ms, "
          f"{summary.repeated_rows} repeated rows, {summary.dropped_steps} dropped steps")
    return 0
