"""The one description of `deploy`'s node graphs, and its resolution against launch arguments.

Both the genuine ROS 2 launch files (`launch/*.launch.py`, via `deploy.graph.ros_launch`) and our own graph
runner (`deploy.graph.runner`, `deploy launch ...`) are built from the `Graph` values defined here, so the
graph is written exactly once. This module is ROS-free: it imports neither rclpy nor `launch`.

Data model: a `Graph` declares launch arguments (`LaunchArg`) and nodes (`NodeSpec`); `resolve()` validates
the caller's argument values and returns a `ResolvedGraph` of concrete `ResolvedNode`s (absolute parameter
files, typed inline parameters, remappings) in start order. Shutdown runs in reverse start order.

Templates: node names, parameter-file paths and inline parameter values are `str.format` templates over the
argument values plus `{item}` for nodes repeated per entry of a list argument (`NodeSpec.for_each`).
Adding a graph means adding data: build a `Graph` and `register_graph()` it.
"""
from __future__ import annotations

import dataclasses
import re
import string
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from deploy.bags import lockstep
from deploy.errors import ConfigError
from deploy.lists import comma_list

PACKAGE = "deploy"

# Topic names, in ONE place. Nodes use the private names on the left; the graph remaps them here.
# Cartesian chunks are MultiDOFJointTrajectory, joint-space chunks JointTrajectory.
TOPICS = {
    "policy_chunk": "/policy/chunk",  # policy's proposed action chunks (written by the policy only)
    "policy_joint_chunk": "/policy/joint_chunk",
    "controller_chunk": "/controller/chunk",  # chunks the controller executes (written by intervention only)
    "controller_joint_chunk": "/controller/joint_chunk",
    "joint_states": "/proprio/joint_states",  # proprioception at its configured rate (+ gripper width)
    "ee_pose": "/proprio/ee_pose",
    "ee_wrench": "/proprio/ee_wrench",  # external wrench on the end effector, when the robot measures one
    "cube_pose": "/sim/cube_pose",  # privileged sim state (the scripted expert, the push checkpoints)
    "intervention_active": "/intervention/active",  # Bool every tick: the operator has authority
    "intervention_deadman": "/intervention/deadman",  # Bool every tick: the operator asks for authority (deadman)
}
# Observation state key -> the topic it is read from (policy node, scripted operator, replay-test).
STATE_TOPICS = {"ee_pose": TOPICS["ee_pose"], "gripper_width": TOPICS["joint_states"],
                "joint_positions": TOPICS["joint_states"], "cube_pose": TOPICS["cube_pose"]}

# The DDS transport every node of a graph gets (runner, launch files, test harness): the package's Fast DDS
# profile (loopback-only UDPv4 with 4 MB socket buffers) and the discovery range under which rmw_fastrtps
# applies it. Under LOCALHOST rmw_fastrtps adds its own transports (512 KB shared memory, system-size UDP
# buffers) and 2 x 640x480 frames at 30 Hz lose ~65 %; measured in bench/camera_transport.py, README "DDS".
DDS_PROFILE_FILE = "fastdds_localhost.xml"

ARG_KINDS = ("str", "int", "bool", "list", "map")
_ROS_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class Condition:
    """Holds when launch argument `arg` has one of `values` (a node exists / an argument applies)."""

    arg: str
    values: tuple[str, ...]

    def holds(self, args: dict[str, str]) -> bool:
        return args[self.arg] in self.values


@dataclass(frozen=True)
class LaunchArg:
    """One declared launch argument; values always arrive as strings (`name:=value`).

    `sets` makes the argument a parameter override: a non-empty value sets parameter `sets[1]` of node
    `sets[0]` (typed by `kind`), over the YAML files; empty keeps the YAML's value. `applies`: a non-empty
    value is refused unless it holds (robot_ip means nothing to the sim)."""

    name: str
    default: str
    description: str
    choices: tuple[str, ...] | None = None  # allowed values; None = any value of `kind`
    kind: str = "str"  # "str" | "int" | "bool" (true|false) | "list" (comma-separated ROS names)
    # | "map" (comma-separated NAME:VALUE, NAME a ROS name)
    sets: tuple[str, str] | None = None  # (node name, parameter name)
    applies: Condition | None = None

    def __post_init__(self):
        if self.kind not in ARG_KINDS:
            raise ConfigError(f"launch argument '{self.name}': unknown kind '{self.kind}' "
                              f"(choose {'|'.join(ARG_KINDS)})")
        if self.kind == "bool" and self.choices is None:
            object.__setattr__(self, "choices", ("", "true", "false") if self.sets else ("true", "false"))


@dataclass(frozen=True)
class Implication:
    """When `if_arg` equals `equals`, argument `then_arg` is forced to `then_value` (e.g. lockstep → sim time)."""

    if_arg: str
    equals: str
    then_arg: str
    then_value: str


@dataclass(frozen=True)
class InlineParam:
    """A parameter set on the command line (`-p name:=value`); `template` is formatted, then typed by `kind`."""

    name: str
    template: str
    kind: str = "str"  # "str" | "int" | "float" | "bool"


@dataclass(frozen=True)
class NodeSpec:
    """One node (or one per list entry, with `for_each`) of a graph."""

    name: str  # template, e.g. "camera_{item}"
    executable: str  # console script installed in lib/deploy, e.g. "controller_node"
    module: str  # importable module with `main()`, run as `python -m <module>`
    params_files: tuple[str, ...] = ()  # templates, relative to the graph's config dir
    parameters: tuple[InlineParam, ...] = ()
    remappings: tuple[tuple[str, str], ...] = ()  # (from, to) templates
    required: bool = False  # when it exits on its own, the whole graph stops
    condition: Condition | None = None
    for_each: str | None = None  # name of a "list" launch argument: one node per entry, `{item}` = entry
    device_map: str | None = None  # a "map" launch argument: its `{item}` entry picks the device (camera_source)


@dataclass(frozen=True)
class Graph:
    """A node graph: declared launch arguments and nodes in start order (shutdown is the reverse)."""

    name: str
    description: str
    args: tuple[LaunchArg, ...]
    nodes: tuple[NodeSpec, ...]
    implications: tuple[Implication, ...] = ()
    common_parameters: tuple[InlineParam, ...] = ()  # given to every node (e.g. use_sim_time)
    config_dir: str | None = None  # None = the package's config dir, see `config_dir()`

    def arg(self, name: str) -> LaunchArg:
        return {a.name: a for a in self.args}[name]


@dataclass(frozen=True)
class ResolvedNode:
    name: str
    executable: str
    module: str
    params_files: tuple[Path, ...]  # absolute, checked to exist and to have the ros__parameters shape
    parameters: tuple[tuple[str, Any], ...]  # (name, typed value), common parameters first
    remappings: tuple[tuple[str, str], ...]
    required: bool


@dataclass(frozen=True)
class ResolvedGraph:
    name: str
    args: dict[str, str]  # every declared argument's final value (defaults and implications applied)
    nodes: tuple[ResolvedNode, ...]  # start order

    def node(self, name: str) -> ResolvedNode:
        for node in self.nodes:
            if node.name == name:
                return node
        raise KeyError(name)


def config_dir() -> Path:
    """The installed share/deploy/config when ament_index finds the package, else the checkout's config/."""
    try:
        from ament_index_python.packages import get_package_share_directory

        installed = Path(get_package_share_directory(PACKAGE)) / "config"
        if installed.is_dir():
            return installed
    except (ImportError, LookupError, OSError, ValueError):
        pass
    return Path(__file__).resolve().parents[2] / "config"


DDS_ENV_DEFAULTS = {
    "ROS_AUTOMATIC_DISCOVERY_RANGE": "SYSTEM_DEFAULT",  # under LOCALHOST the rmw adds its own transports
    "FASTDDS_DEFAULT_PROFILES_FILE": str(config_dir() / DDS_PROFILE_FILE),
}


def dds_environment() -> dict[str, str]:
    """DDS_ENV_DEFAULTS once the profile is known to exist: SYSTEM_DEFAULT without the profile would be Fast
    DDS's stock discovery, multicast on every interface."""
    profile = Path(DDS_ENV_DEFAULTS["FASTDDS_DEFAULT_PROFILES_FILE"])
    if not profile.is_file():
        raise ConfigError(f"Fast DDS profile not found: {profile} (the package's config/{DDS_PROFILE_FILE})")
    return dict(DDS_ENV_DEFAULTS)


# ----------------------------------------------------------------------------------------------- graphs ---
_REAL_ROBOT_ARGS = (
    LaunchArg("robot", "sim", "robot backend", choices=("sim", "franka", "ur", "external")),
    LaunchArg("policy", "", "policy checkpoint path; empty = the package's demo policy"),
    LaunchArg("cameras", "wrist,front", "comma-separated camera names; one camera node each", kind="list"),
    LaunchArg("use_sim_time", "false", "use /clock instead of wall time (forced true by sim_mode:=lockstep)",
              kind="bool"),
    LaunchArg("sim_mode", "realtime", "sim pacing; lockstep steps the sim with the graph and implies sim time",
              choices=("realtime", "lockstep")),
    LaunchArg("seed", "0", "random seed of the sim and the policy", kind="int"),
    LaunchArg("record", "false", "record the session's topics to a rosbag2 MCAP (deploy record)", kind="bool"),
    LaunchArg("bag", "", "bag directory for record:=true; empty = runs/bags/<UTC date-time>"),
    # Bring-up on a real arm: each overrides one node parameter; empty keeps the config file's value.
    LaunchArg("robot_ip", "", "the arm's address (franka: the FCI address, ur: the controller); "
              "empty = robot_params.ip in config/controller_<robot>.yaml",
              sets=("controller", "robot_params.ip"), applies=Condition("robot", ("franka", "ur"))),
    LaunchArg("realtime", "", "franka: true = require a PREEMPT_RT kernel (libfranka kEnforce), false = run "
              "without one (kIgnore); empty = the config's (unset: true)", kind="bool",
              sets=("controller", "robot_params.realtime"), applies=Condition("robot", ("franka",))),
    LaunchArg("gripper", "", "franka: true = drive the Franka Hand, false = arm only; empty = the config's "
              "(unset: true)", kind="bool",
              sets=("controller", "robot_params.gripper"), applies=Condition("robot", ("franka",))),
    LaunchArg("camera_serials", "", "each camera's device, NAME:VALUE,...: a RealSense serial, /dev/videoN or N "
              "(OpenCV), a .mp4/.avi/.mkv video or a RealSense .db3/.bag recording; empty = the config's", kind="map"),
    LaunchArg("params_file", "", "your YAML (<node>: ros__parameters: ...) layered over the shipped config "
              "files, e.g. controller: impedance gains; empty = none"),
)

_RECORDER = NodeSpec("recorder", "recorder_node", "deploy.nodes.recorder_node",
                     parameters=(InlineParam("output", "{bag}"),))

_REAL_ROBOT_NODES = (
    dataclasses.replace(_RECORDER, condition=Condition("record", ("true",))),  # first: stops last
    NodeSpec("sim", "sim_node", "deploy.nodes.sim_node", ("sim.yaml",),
             parameters=(InlineParam("seed", "{seed}", "int"), InlineParam("mode", "{sim_mode}"),
                         InlineParam("cameras", "{cameras}")),
             required=True, condition=Condition("robot", ("sim",))),
    NodeSpec("controller", "controller_node", "deploy.nodes.controller_node", ("controller_{robot}.yaml",),
             remappings=(("~/chunk", TOPICS["controller_chunk"]),
                         ("~/joint_chunk", TOPICS["controller_joint_chunk"])), required=True),
    NodeSpec("camera_{item}", "camera_node", "deploy.nodes.camera_node", ("cameras_{robot}.yaml",),
             parameters=(InlineParam("camera_name", "{item}"),), for_each="cameras", device_map="camera_serials"),
    NodeSpec("proprioception", "proprioception_node", "deploy.nodes.proprioception_node",
             ("proprioception.yaml",)),
    NodeSpec("policy", "policy_node", "deploy.nodes.policy_node", ("policy.yaml",),
             parameters=(InlineParam("checkpoint", "{policy}"), InlineParam("seed", "{seed}", "int")),
             remappings=(("~/chunk", TOPICS["policy_chunk"]), ("~/joint_chunk", TOPICS["policy_joint_chunk"]))),
    NodeSpec("intervention", "intervention_node", "deploy.nodes.intervention_node", ("intervention.yaml",),
             remappings=(("~/policy_chunk", TOPICS["policy_chunk"]),
                         ("~/policy_joint_chunk", TOPICS["policy_joint_chunk"]),
                         ("~/chunk", TOPICS["controller_chunk"]),
                         ("~/joint_chunk", TOPICS["controller_joint_chunk"])),
             required=True),  # the only writer of /controller/chunk: its death stops the graph, naming it
)

REAL_ROBOT = Graph(
    name="real_robot",
    description="policy → intervention → impedance controller on a robot (or the MuJoCo sim), with cameras",
    args=_REAL_ROBOT_ARGS,
    nodes=_REAL_ROBOT_NODES,
    implications=(Implication("sim_mode", "lockstep", "use_sim_time", "true"),),
    common_parameters=(InlineParam("use_sim_time", "{use_sim_time}", "bool"),),
)


def with_fixed_arg(graph: Graph, name: str, arg: str, value: str, description: str) -> Graph:
    """A copy of `graph` named `name` whose argument `arg` can only be `value`; arguments that then never
    apply (robot_ip once robot is sim) are dropped."""
    args = tuple(dataclasses.replace(a, default=value, choices=(value,)) if a.name == arg else a
                 for a in graph.args
                 if a.applies is None or a.applies.arg != arg or value in a.applies.values)
    return dataclasses.replace(graph, name=name, description=description, args=args)


SIM = with_fixed_arg(REAL_ROBOT, "sim", "robot", "sim", "real_robot with robot:=sim (the MuJoCo sim process)")

GRAPHS: dict[str, Graph] = {}


def register_graph(graph: Graph) -> None:
    """Make `graph` resolvable by name (also the hook tests use to run their own graphs)."""
    GRAPHS[graph.name] = graph


# The hardware side alone (robot or sim, controller, cameras, proprioception): for users who stream their own
# chunks to /controller/chunk, and for controller tests.
ROBOT = dataclasses.replace(
    REAL_ROBOT, name="robot", description="robot (or sim), controller, cameras and proprioception; no policy",
    args=tuple(a for a in REAL_ROBOT.args if a.name != "policy"),
    nodes=tuple(n for n in REAL_ROBOT.nodes if n.name not in ("policy", "intervention")),
)

# The demo: the sim graph plus a recorder that saves the front camera as an MP4 and a PNG strip.
DEMO = dataclasses.replace(
    SIM, name="demo", description="the sim graph, recording the front camera for a person to look at",
    args=SIM.args + (LaunchArg("video", "runs/demo/front.mp4", "where the front-camera MP4 is written"),),
    nodes=SIM.nodes + (NodeSpec("frame_recorder", "frame_recorder_node", "deploy.nodes.frame_recorder_node",
                                parameters=(InlineParam("camera_name", "front"), InlineParam("output_path", "{video}"))),),
)

# The teleop correction session on the sim: an operator (default: the scripted operator, in the intervention
# node; a device: its operator node publishing the operator topics, deploy/teleop/mapping.py), the episode
# runner + operator console logging every step, and the learner fine-tuning the policy from that log and swapping
# its weights into the running policy (deploy/learning). The policy is required here too (the intervention node
# already is, in every graph): either one's death stops the session with one line naming it.
_SESSION_DEVICES = ("none", "scripted", "keyboard", "gamepad", "spacemouse", "external")
_STARTED_OPERATORS = ("gamepad", "spacemouse")  # keyboard: no terminal in a graph, see operator_note()
_SESSION_REQUIRED = ("policy",)
TELEOP_SESSION = dataclasses.replace(
    SIM, name="teleop_session",
    description="sim graph + operator device + episode runner/console + online learner from corrections",
    args=SIM.args + (
        LaunchArg("device", "scripted", "operator: scripted, none, our keyboard/gamepad/spacemouse node, or "
                  "external (listen only: joy_node, spacenav)", choices=_SESSION_DEVICES),
        LaunchArg("mapping", "operator_deploy.yaml", "operator input mapping YAML (config dir name or path): "
                  "operator_joy.yaml for joy_node, operator_spacenav.yaml for spacenav"),
        LaunchArg("session", "runs/session", "folder for the correction log (episodes/) and the learner"),
        LaunchArg("demos", "", "episode log of demonstrations the learner also trains on; empty = none"),
        LaunchArg("episodes", "0", "stop after this many episodes; 0 = until Ctrl-C", kind="int"),
        LaunchArg("learn", "true", "run the learner (false: log corrections only)", kind="bool"),
        LaunchArg("publish_period", "30.0", "seconds between weight versions the learner swaps in")),
    nodes=tuple(dataclasses.replace(n, required=n.required or n.name in _SESSION_REQUIRED,
                                    parameters=n.parameters + ((InlineParam("device", "{device}"),
                                                                InlineParam("mapping", "{mapping}"))
                                                               if n.name == "intervention" else ()))
                for n in SIM.nodes) + (
        NodeSpec("operator", "operator_node", "deploy.nodes.operator_node",
                 parameters=(InlineParam("device", "{device}"),), condition=Condition("device", _STARTED_OPERATORS),
                 required=True),  # an absent or lost device ends the session with its one line
        NodeSpec("episodes", "episode_node", "deploy.nodes.episode_node", required=True,
                 parameters=(InlineParam("output", "{session}/episodes"), InlineParam("episodes", "{episodes}", "int"),
                             InlineParam("cameras", "{cameras}"))),
        NodeSpec("learner", "learner_node", "deploy.nodes.learner_node", condition=Condition("learn", ("true",)),
                 parameters=(InlineParam("checkpoint", "{policy}"), InlineParam("demos", "{demos}"),
                             InlineParam("log", "{session}/episodes"), InlineParam("workdir", "{session}/learner"),
                             InlineParam("publish_period_s", "{publish_period}", "float")))),
)


def operator_note(graph: ResolvedGraph, domain_id: int | None = None) -> str | None:
    """device:=keyboard starts no keyboard node (a graph's nodes have no terminal): the line telling the user
    what to run in another terminal. None when the graph needs no such step."""
    if graph.args.get("device") != "keyboard":
        return None
    domain = f" --domain-id {domain_id}" if domain_id is not None else ""
    return (f"deploy: device:=keyboard: start the keyboard in another terminal: deploy operator keyboard{domain}  "
            f"(on a ROS 2 distro, same ROS_DOMAIN_ID: ros2 run deploy keyboard_operator)")


register_graph(REAL_ROBOT)
register_graph(SIM)
register_graph(DEMO)
register_graph(TELEOP_SESSION)
register_graph(ROBOT)


# Bags (deploy.bags): record, replay into the policy on bag time, deterministic replay testing.
_POLICY = next(n for n in _REAL_ROBOT_NODES if n.name == "policy")
_ON_BAG_TIME = (InlineParam("use_sim_time", "true", "bool"),)  # the replay publishes /clock
_BAG_ARG = LaunchArg("bag", "", "rosbag2 directory")
_REPLAY_ARGS = (
    LaunchArg("rate", "1.0", "playback speed (2.0 = twice as fast)"),
    LaunchArg("start_offset", "0.0", "seconds of the bag to skip"),
    LaunchArg("loop", "false", "replay again and again (time goes on)", kind="bool"),
)
_QOS_OVERRIDE_ARG = LaunchArg("qos_override", "", "rosbag2 QoS override YAML for the replayed topics "
                              "(as ros2 bag play --qos-profile-overrides-path)")
_REPLAY_PARAMS = (InlineParam("bag", "{bag}"), InlineParam("rate", "{rate}", "float"),
                  InlineParam("start_offset_s", "{start_offset}", "float"), InlineParam("loop", "{loop}", "bool"),
                  InlineParam("topics", "{topics}"), InlineParam("qos_override", "{qos_override}"))
_REPLAY = NodeSpec("replay", "replay_node", "deploy.nodes.replay_node", required=True)

RECORD = Graph(
    name="record", description="the recorder alone: selected topics of a running graph to a rosbag2 MCAP",
    args=(dataclasses.replace(_BAG_ARG, description="bag directory; empty = runs/bags/<UTC date-time>"),
          LaunchArg("topics", "", "comma-separated topics or * patterns; empty = the preset's"),
          LaunchArg("preset", "stack", "topic set when topics is empty", choices=("stack", "observations")),
          LaunchArg("use_sim_time", "false", "log times from /clock", kind="bool")),
    nodes=(dataclasses.replace(_RECORDER, parameters=_RECORDER.parameters + (
        InlineParam("topics", "{topics}"), InlineParam("preset", "{preset}"))),),
    common_parameters=(InlineParam("use_sim_time", "{use_sim_time}", "bool"),),
)

BAG_PLAY = Graph(
    name="bag_play", description="the replay alone: a bag's topics with their recorded timing and /clock",
    args=(_BAG_ARG, *_REPLAY_ARGS, LaunchArg("topics", "", "comma-separated topics or * patterns; empty = all"),
          LaunchArg("clock", "true", "publish /clock from bag time", kind="bool"),
          LaunchArg("wait_for_subscribers", "false", "start once every replayed topic has a subscriber",
                    kind="bool"), _QOS_OVERRIDE_ARG),
    nodes=(dataclasses.replace(_REPLAY, required=False, parameters=_REPLAY_PARAMS + (
        InlineParam("clock", "{clock}", "bool"),
        InlineParam("wait_for_subscribers", "{wait_for_subscribers}", "bool"))),),
)

REPLAY = Graph(
    name="replay", description="a bag's observations and /clock into the policy, which runs on bag time; no robot",
    args=(_BAG_ARG, LaunchArg("policy", "", "policy checkpoint path; empty = the package's demo policy"),
          *_REPLAY_ARGS, LaunchArg("topics", "", "comma-separated topics or * patterns; empty = the observations"),
          LaunchArg("seed", "0", "random seed of the policy", kind="int"), _QOS_OVERRIDE_ARG),
    nodes=(dataclasses.replace(_REPLAY, parameters=_REPLAY_PARAMS + (
               InlineParam("preset", "observations"), InlineParam("policy", "{policy}"))),
           dataclasses.replace(_POLICY, parameters=_POLICY.parameters + _ON_BAG_TIME)),
)

# deploy replay-test: the replay feeds the policy one observation set at a time (deploy/bags/lockstep.py).
REPLAY_TEST = Graph(
    name="replay_test", description="deterministic lockstep replay of a bag's observations into a checkpoint",
    args=(_BAG_ARG, LaunchArg("policy", "", "policy checkpoint directory"),
          LaunchArg("output", "", "bag the policy's chunks are written to"),
          LaunchArg("image_max_age", str(lockstep.DEFAULT_IMAGE_MAX_AGE_S), "the policy's image_max_age_s [s]"),
          LaunchArg("state_max_age", str(lockstep.DEFAULT_STATE_MAX_AGE_S), "the policy's state_max_age_s [s]"),
          LaunchArg("seed", "0", "random seed of the policy", kind="int"), _QOS_OVERRIDE_ARG),
    nodes=(dataclasses.replace(_POLICY, parameters=_POLICY.parameters + _ON_BAG_TIME + (
               InlineParam("trigger", lockstep.POLICY_TRIGGER),
               InlineParam("image_max_age_s", "{image_max_age}", "float"),
               InlineParam("state_max_age_s", "{state_max_age}", "float"), InlineParam("rtc_prefix", "false", "bool"))),
           dataclasses.replace(_REPLAY, parameters=(
               InlineParam("bag", "{bag}"), InlineParam("mode", "lockstep"), InlineParam("policy", "{policy}"),
               InlineParam("output", "{output}"), InlineParam("image_max_age_s", "{image_max_age}", "float"),
               InlineParam("state_max_age_s", "{state_max_age}", "float"),
               InlineParam("qos_override", "{qos_override}")))),
)

for _graph in (RECORD, BAG_PLAY, REPLAY, REPLAY_TEST):
    register_graph(_graph)


# ----------------------------------------------------------------------------------------------- resolve ---
PARAMS_FILE_ARG = "params_file"  # a graph declaring it layers the named user YAML over its config files
VIDEO_FILE_SUFFIXES = (".mp4", ".avi", ".mkv")


def resolve(graph_name: str, args: dict[str, str]) -> ResolvedGraph:
    """Validate `args` (name → string value) for graph `graph_name` and return its concrete nodes."""
    graph = GRAPHS.get(graph_name)
    if graph is None:
        raise ConfigError(f"unknown graph '{graph_name}' (choose {'|'.join(sorted(GRAPHS))})")
    values = _argument_values(graph, args)
    lists = {a.name: _split_list(a, values[a.name]) for a in graph.args if a.kind == "list"}
    maps = {a.name: _split_map(a, values[a.name]) for a in graph.args if a.kind == "map"}
    overrides = _argument_overrides(graph, values)
    conf = Path(graph.config_dir) if graph.config_dir is not None else config_dir()
    nodes: list[ResolvedNode] = []
    templates_of: dict[str, dict[str, str]] = {}  # node → inline parameter → its template
    for spec in graph.nodes:
        if spec.condition is not None and not spec.condition.holds(values):
            continue
        items = lists[spec.for_each] if spec.for_each is not None else [None]
        if spec.device_map is not None:
            stray = sorted(set(maps[spec.device_map]) - set(items))
            if stray:
                raise ConfigError(f"launch argument '{spec.device_map}' names '{stray[0]}', which is not in "
                                  f"{spec.for_each}:={values[spec.for_each]}")
        for item in items:
            node, templates = _resolve_node(graph, spec, values, item, conf)
            extra = dict(overrides.get(node.name, {}))
            if spec.device_map is not None and item in maps[spec.device_map]:
                extra.update(camera_source(maps[spec.device_map][item]))
            nodes.append(dataclasses.replace(node, parameters=node.parameters + tuple(extra.items())))
            templates_of[node.name] = templates
    names = [n.name for n in nodes]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ConfigError(f"graph '{graph.name}' has two nodes named '{duplicates[0]}'")
    missing = sorted(set(overrides) - set(names))
    if missing:
        raise ConfigError(f"graph '{graph.name}': a launch argument sets a parameter of node '{missing[0]}', "
                          "which the graph does not start")
    if values.get(PARAMS_FILE_ARG):
        path = Path(values[PARAMS_FILE_ARG]).expanduser().resolve()
        values[PARAMS_FILE_ARG] = str(path)
        nodes = _layer_params_file(graph, path, nodes, templates_of)
    return ResolvedGraph(graph.name, values, tuple(nodes))


def _argument_values(graph: Graph, args: dict[str, str]) -> dict[str, str]:
    known = [a.name for a in graph.args]
    for name in args:
        if name not in known:
            raise ConfigError(f"unknown launch argument '{name}' for graph '{graph.name}' "
                              f"(known: {', '.join(known)})")
    values = {a.name: str(args.get(a.name, a.default)) for a in graph.args}
    for rule in graph.implications:
        if values[rule.if_arg] == rule.equals:
            values[rule.then_arg] = rule.then_value
    for arg in graph.args:
        value = values[arg.name]
        if arg.choices is not None and value not in arg.choices:
            shown = "|".join(c or "''" for c in arg.choices)
            raise ConfigError(f"unknown {arg.name} '{value}' (choose {shown})")
        if arg.kind == "int" and not re.fullmatch(r"[+-]?\d+", value.strip()):
            raise ConfigError(f"launch argument '{arg.name}' must be an integer, got '{value}'")
        if value and arg.applies is not None and not arg.applies.holds(values):
            raise ConfigError(f"launch argument '{arg.name}' does not apply to {arg.applies.arg}:="
                              f"{values[arg.applies.arg]} (only to {arg.applies.arg}:="
                              f"{'|'.join(arg.applies.values)})")
    return values


def _argument_overrides(graph: Graph, values: dict[str, str]) -> dict[str, dict[str, Any]]:
    """node → parameter → typed value, for every non-empty argument with `sets`."""
    out: dict[str, dict[str, Any]] = {}
    for arg in graph.args:
        if arg.sets is None or not values[arg.name]:
            continue
        node, parameter = arg.sets
        kind = arg.kind if arg.kind in ("int", "bool") else "str"
        value = _typed(InlineParam(parameter, "", kind), values[arg.name], f"launch argument '{arg.name}'")
        out.setdefault(node, {})[parameter] = value
    return out


def _split_list(arg: LaunchArg, value: str) -> list[str]:
    items = list(comma_list(value))
    for item in items:
        if not _ROS_NAME.match(item):
            raise ConfigError(f"launch argument '{arg.name}': '{item}' is not a valid name (letters, digits, _)")
    if len(set(items)) != len(items):
        raise ConfigError(f"launch argument '{arg.name}' lists a name twice: '{value}'")
    return items


def _split_map(arg: LaunchArg, value: str) -> dict[str, str]:
    """'front:123,wrist:/dev/video2' → {'front': '123', 'wrist': '/dev/video2'} (split at the first ':')."""
    out: dict[str, str] = {}
    for entry in comma_list(value):
        name, sep, item = (part.strip() for part in entry.partition(":"))
        if not sep or not item or not _ROS_NAME.match(name):
            raise ConfigError(f"launch argument '{arg.name}': '{entry}' must be NAME:VALUE (e.g. front:123456789012)")
        if name in out:
            raise ConfigError(f"launch argument '{arg.name}' gives '{name}' twice: '{value}'")
        out[name] = item
    return out


def camera_source(value: str) -> dict[str, Any]:
    """The camera node parameters (kind + device|path|serial) for one device given on the command line.

    `x.db3|.bag` → a RealSense recording (pyrealsense2 2.59's recorder writes .db3); `/dev/videoN` or a bare
    index 0..99 → an OpenCV device; `x.mp4|.avi|.mkv`
    → a video file played as a camera; anything else → a RealSense serial, kept as a string (leading zeros).
    A recording plays at its own size and rate: width/height/fps 0, whatever the config asks of a device."""
    lower = value.lower()
    own_format = {"width": 0, "height": 0, "fps": 0.0}
    if lower.endswith((".db3", ".bag")):
        return {"kind": "realsense", "path": _existing_file(value), **own_format}
    if value.startswith("/dev/video") or re.fullmatch(r"\d{1,2}", value):
        return {"kind": "opencv", "device": value}
    if lower.endswith(VIDEO_FILE_SUFFIXES):
        return {"kind": "opencv", "path": _existing_file(value), **own_format}
    return {"kind": "realsense", "serial": value}


def _existing_file(value: str) -> str:
    path = Path(value).expanduser().resolve()
    if not path.is_file():
        raise ConfigError(f"camera recording not found: {path}")
    return str(path)


def _format(template: str, values: dict[str, str], item: str | None, where: str) -> str:
    fields = {f for _, f, _, _ in string.Formatter().parse(template) if f is not None}
    missing = sorted(fields - set(values) - ({"item"} if item is not None else set()))
    if missing:
        raise ConfigError(f"{where}: template '{template}' references unknown argument '{missing[0]}'")
    return template.format(**values, **({"item": item} if item is not None else {}))


def _typed(param: InlineParam, text: str, where: str) -> Any:
    try:
        if param.kind == "bool":
            if text not in ("true", "false"):
                raise ValueError
            return text == "true"
        if param.kind == "int":
            return int(text)
        if param.kind == "float":
            return float(text)
    except ValueError:
        raise ConfigError(f"{where}: parameter '{param.name}' must be a {param.kind}, got '{text}'") from None
    return text


def _resolve_node(graph: Graph, spec: NodeSpec, values: dict[str, str], item: str | None,
                  conf: Path) -> tuple[ResolvedNode, dict[str, str]]:
    """The node, and where each inline parameter comes from (its template)."""
    where = f"graph '{graph.name}', node '{spec.name}'"
    name = _format(spec.name, values, item, where)
    files = []
    for template in spec.params_files:
        path = conf / _format(template, values, item, where)
        check_params_file(path, name)
        files.append(path)
    inline = graph.common_parameters + spec.parameters
    parameters = tuple((p.name, _typed(p, _format(p.template, values, item, where), f"node '{name}'"))
                       for p in inline)
    remappings = tuple((_format(a, values, item, where), _format(b, values, item, where))
                       for a, b in spec.remappings)
    node = ResolvedNode(name, spec.executable, spec.module, tuple(files), parameters, remappings, spec.required)
    return node, {p.name: p.template for p in inline}


def _layer_params_file(graph: Graph, path: Path, nodes: list[ResolvedNode],
                       templates_of: dict[str, dict[str, str]]) -> list[ResolvedNode]:
    """Append the user's file to the parameter files of every node one of its sections names, after the
    shipped files, so its values win (rcl: later files win, `-p` wins over files; so robot_ip:= etc. win
    over it, as a command line should). A section naming no node, or a parameter the graph always sets
    inline (it would hide the file's value), is refused by name."""
    layered: dict[str, ResolvedNode] = {n.name: n for n in nodes}
    for section, line, params in params_sections(path):
        matched = [n for n in nodes if section in _section_keys(n.name)]
        if not matched:
            raise ConfigError(f"{path}:{line}: section '{section}' names no node of graph '{graph.name}' "
                              f"(nodes: {', '.join(n.name for n in nodes)}; '/**' = every node)")
        for node in matched:
            taken = sorted(set(params) & set(templates_of[node.name]))
            if taken:
                raise ConfigError(f"{path}:{line}: parameter '{taken[0]}' of node '{node.name}' is set by the "
                                  f"graph ({taken[0]}:={templates_of[node.name][taken[0]]}), which would hide "
                                  "this value")
            current = layered[node.name]
            if path not in current.params_files:
                layered[node.name] = dataclasses.replace(current, params_files=current.params_files + (path,))
    return [layered[n.name] for n in nodes]


def _section_keys(node_name: str) -> set[str]:
    """The section names in a ros__parameters file that apply to node `node_name` (root namespace)."""
    return {node_name, "/" + node_name, "/**", "/**/" + node_name}


def check_params_file(path: Path, node_name: str) -> None:
    """Raise ConfigError unless `path` is YAML of shape `<node_name or /**>: ros__parameters: {...}`."""
    sections = params_sections(path, f" (for node '{node_name}')")
    if not any(section in _section_keys(node_name) for section, _, _ in sections):
        raise ConfigError(f"{path}:1: no '{node_name}:' or '/**:' section with ros__parameters")


def params_sections(path: Path, for_whom: str = "") -> list[tuple[str, int, dict[str, Any]]]:
    """(section, line, {parameter: value}) of a ros__parameters YAML file, nested namespaces joined with '.'.

    Every problem is one ConfigError naming the file and line."""
    if not path.is_file():
        raise ConfigError(f"parameter file not found: {path}{for_whom}")
    text = path.read_text()
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        yaml.safe_load(text)  # construction errors (bad tags, ...) too
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{path}{line}: invalid YAML: {problem}") from None
    if not isinstance(root, yaml.MappingNode):
        line = root.start_mark.line + 1 if root is not None else 1
        raise ConfigError(f"{path}:{line}: expected '<node name>: ros__parameters:' at the top level")
    sections = []
    for key, value in root.value:
        where = f"{path}:{key.start_mark.line + 1}"
        if not isinstance(value, yaml.MappingNode) or [k.value for k, _ in value.value] != ["ros__parameters"]:
            raise ConfigError(f"{where}: section '{key.value}' must contain exactly 'ros__parameters:'")
        params = value.value[0][1]
        if not isinstance(params, yaml.MappingNode):
            line = params.start_mark.line + 1
            raise ConfigError(f"{path}:{line}: '{key.value}: ros__parameters' must be a mapping")
        sections.append((key.value, key.start_mark.line + 1,
                         _flatten(yaml.safe_load(yaml.serialize(params)) or {})))
    return sections


def _flatten(params: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in params.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{name}."))
        else:
            out[f"{prefix}{name}"] = value
    return out


def effective_parameters(node: ResolvedNode) -> dict[str, Any]:
    """The parameter values `node` starts with, as rcl layers them: its files in order (the sections that
    apply to it), then its inline parameters. For tools that act as the node would (`deploy check`)."""
    out: dict[str, Any] = {}
    for path in node.params_files:
        for section, _, params in params_sections(path):
            if section in _section_keys(node.name):
                out.update(params)
    out.update(dict(node.parameters))
    return out


def parse_launch_args(tokens: list[str]) -> dict[str, str]:
    """`["robot:=franka", "seed:=3"]` → `{"robot": "franka", "seed": "3"}` (the `ros2 launch` syntax)."""
    out: dict[str, str] = {}
    for token in tokens:
        name, sep, value = token.partition(":=")
        if not sep or not name:
            raise ConfigError(f"launch argument '{token}' must be written name:=value")
        out[name] = value
    return out


__all__ = [
    "Condition", "DDS_ENV_DEFAULTS", "DDS_PROFILE_FILE", "GRAPHS", "Graph", "Implication", "InlineParam", "LaunchArg", "NodeSpec",
    "PARAMS_FILE_ARG", "ResolvedGraph", "ResolvedNode", "STATE_TOPICS", "TOPICS", "camera_source", "check_params_file",
    "config_dir", "dds_environment", "effective_parameters", "operator_note", "params_sections", "parse_launch_args",
    "register_graph", "resolve", "with_fixed_arg",
]
