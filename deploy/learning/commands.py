"""`deploy collect-demos`, `deploy eval` and `deploy train-bc`.

collect-demos and eval start the sim graph (every node in its own process, as `deploy launch sim` does) with
the scripted expert or a checkpoint as the policy, and run seeded episodes through it from an episode node in
this process, logging every step. Episode k of a run uses cube seed `--seed` + k, so eval seeds (default from
1000) never overlap demo seeds (default from 0).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from deploy.errors import ConfigError
from deploy.lists import comma_list

EXPERT = "scripted:push_expert"
DEFAULT_CAMERAS = "front,wrist"


def _summary(outcomes: list[dict], policy: str, output: Path) -> dict:
    successes = sum(o["success"] for o in outcomes)
    summary = {"policy": policy, "episodes": len(outcomes), "successes": successes,
               "success_rate": successes / max(1, len(outcomes)), "seeds": [o["seed"] for o in outcomes],
               "outcomes": outcomes}
    (output / "summary.json").write_text(json.dumps(summary, indent=1))
    return summary


def _run(policy: str, ns: argparse.Namespace, label: str) -> dict:
    """Run ns.episodes seeded episodes of `policy` through the sim graph, logged under ns.output; -> summary."""
    from deploy.nodes.episode_node import run_episodes

    output = Path(ns.output)
    output.mkdir(parents=True, exist_ok=True)
    params_file = str(Path(ns.params_file).resolve()) if ns.params_file else ""
    outcomes = run_episodes(policy, ns.episodes, ns.seed, output, comma_list(ns.cameras), ns.domain_id,
                            ns.timeout, label, params_file)
    return _summary(outcomes, policy, output)


def _cmd_collect(ns: argparse.Namespace) -> int:
    summary = _run(EXPERT, ns, "demo")
    print(f"deploy collect-demos: {summary['successes']}/{summary['episodes']} expert episodes succeeded; "
          f"episode log in {ns.output}")
    return 0 if summary["episodes"] else 1


def _cmd_eval(ns: argparse.Namespace) -> int:
    checkpoint = ns.policy if ns.policy.startswith("scripted:") else str(Path(ns.policy).resolve())
    if not ns.policy.startswith("scripted:"):
        from deploy.policies.checkpoint import load_checkpoint

        policy = load_checkpoint(checkpoint)  # a bad checkpoint fails here, in one line, before the graph starts
        reads = ",".join(policy.metadata.image_keys)
    else:
        reads = DEFAULT_CAMERAS
    if ns.cameras is None:  # render only what the policy reads: cameras cost CPU that the policy's latency needs
        ns.cameras = reads
    summary = _run(checkpoint, ns, "eval")
    print(f"deploy eval: success rate {summary['success_rate']:.0%} ({summary['successes']}/{summary['episodes']} "
          f"seeded episodes, seeds {ns.seed + 1}..{ns.seed + summary['episodes']}); "
          f"report in {Path(ns.output) / 'summary.json'}")
    return 0 if summary["episodes"] else 1


def _json_object(text: str, what: str) -> dict:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise ConfigError(f"{what} is not valid JSON ({error.msg} at column {error.colno}): {text}") from None
    if not isinstance(value, dict):
        raise ConfigError(f"{what} must be a JSON object, got {text}")
    return value


def _cmd_train_bc(ns: argparse.Namespace) -> int:
    if not ns.demos and not ns.corrections:
        raise ConfigError("train-bc needs demonstration logs, --corrections logs, or both")
    from deploy.learning.bc import BCConfig, train_bc

    config = BCConfig(kind=ns.kind, steps=ns.steps, batch_size=ns.batch_size, learning_rate=ns.lr, seed=ns.seed,
                      max_episodes=ns.max_episodes, cameras=comma_list(ns.cameras),
                      state_keys=comma_list(ns.state), image_size=ns.image_size,
                      architecture=_json_object(ns.arch, "--arch"), labels=ns.labels,
                      corrections=tuple(ns.corrections), state_feature=ns.state_feature,
                      action_feature=ns.action_feature, image_features=comma_list(ns.image_features),
                      aux_positions=comma_list(ns.aux_positions), aux_weight=ns.aux_weight, threads=ns.threads)
    path = train_bc([Path(d) for d in ns.demos], Path(ns.output), config)
    print(f"deploy train-bc: checkpoint written to {path}")
    return 0


def register(commands) -> None:
    collect = commands.add_parser("collect-demos", help="record scripted-expert episodes through the sim graph",
                                  description="Run the scripted expert through the full sim graph for N seeded "
                                              "episodes and log every step (frames, proprioception, actions).")
    collect.add_argument("--episodes", type=int, default=50, help="number of episodes (default 50)")
    collect.add_argument("--output", default="runs/demos", help="episode log folder (appends)")
    collect.add_argument("--seed", type=int, default=0, help="episode k uses cube seed SEED + k (default 0)")
    collect.set_defaults(func=_cmd_collect)

    evaluate = commands.add_parser("eval", help="success rate of a policy over seeded sim episodes",
                                   description="Run a checkpoint through the full sim graph for M seeded episodes "
                                               "and report the success rate.")
    evaluate.add_argument("--policy", required=True, help="checkpoint directory or scripted:<name>")
    evaluate.add_argument("--episodes", type=int, default=20, help="number of episodes (default 20)")
    evaluate.add_argument("--output", default="runs/eval", help="folder for the episode log and summary.json")
    evaluate.add_argument("--seed", type=int, default=1000, help="episode k uses cube seed SEED + k (default 1000)")
    evaluate.set_defaults(func=_cmd_eval)
    collect.add_argument("--cameras", default=DEFAULT_CAMERAS, help=f"cameras to run and log (default {DEFAULT_CAMERAS})")
    evaluate.add_argument("--cameras", default=None,
                          help="cameras to run and log (default: those the checkpoint reads; scripted: "
                               f"{DEFAULT_CAMERAS})")
    for sub in (collect, evaluate):
        sub.add_argument("--timeout", type=float, default=30.0, help="seconds before an episode fails (default 30)")
        sub.add_argument("--domain-id", type=int, default=None, help="ROS_DOMAIN_ID for the graph")
        sub.add_argument("--params-file", default="",
                         help="YAML (<node>: ros__parameters: ...) layered over the shipped config, as the graph's "
                              "params_file:= (e.g. policy: image_max_age_s); default none")

    train = commands.add_parser("train-bc", help="behaviour-clone a chunk policy from logged episodes or a "
                                                 "LeRobot dataset",
                                description="Train an ACT-style (or flow) chunk policy on successful episodes of "
                                            "one or more episode logs, or on every episode of one LeRobotDataset "
                                            "v3 folder, on CPU; writes a checkpoint directory with a loss curve.")
    train.add_argument("demos", nargs="*", help="episode log folders of demonstrations (e.g. runs/demos), or one "
                                                "LeRobotDataset v3 folder (has meta/info.json)")
    train.add_argument("--output", required=True, help="checkpoint directory to write")
    train.add_argument("--kind", default="act", help="architecture: act | flow (default act)")
    train.add_argument("--steps", type=int, default=3000, help="gradient steps (default 3000)")
    train.add_argument("--batch-size", type=int, default=64)
    train.add_argument("--lr", type=float, default=3e-4, help="learning rate (default 3e-4)")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--max-episodes", type=int, default=0, help="use at most this many episodes (0 = all)")
    train.add_argument("--cameras", default="front", help="cameras the policy reads (default front)")
    train.add_argument("--image-size", type=int, default=64, help="square input size in pixels (default 64)")
    train.add_argument("--state", default="ee_pose,gripper_width",
                       help="proprioceptive inputs (default ee_pose,gripper_width; cube_pose = privileged sim state)")
    train.add_argument("--corrections", nargs="*", default=[],
                       help="correction logs (teleop sessions) whose operator-controlled steps are added (HG-DAgger)")
    train.add_argument("--labels", default="proposed", choices=("proposed", "executed"),
                       help="action labels: the acting policy's proposed chunks (default) or the executed reference")
    train.add_argument("--state-feature", default="observation.state",
                       help="LeRobot folders: the vector feature split into --state (default observation.state)")
    train.add_argument("--action-feature", default="action",
                       help="LeRobot folders: the 8-D action feature, x y z qx qy qz qw gripper (default action)")
    train.add_argument("--image-features", default="",
                       help="LeRobot folders: the image/video feature of each --cameras entry, in order "
                            "(default observation.images.<camera>)")
    train.add_argument("--aux-positions", default="",
                       help="logged state keys (e.g. cube_pose) whose xyz the image features regress during "
                            "training only, an auxiliary loss; the checkpoint never reads them (default none)")
    train.add_argument("--aux-weight", type=float, default=1.0, help="weight of the auxiliary loss (default 1)")
    train.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    train.add_argument("--arch", default="{}", help='architecture overrides as JSON, e.g. \'{"d_model": 64}\'')
    train.set_defaults(func=_cmd_train_bc)

