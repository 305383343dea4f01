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
}
# Observation state key -> the topic it is read from (policy node, scripted operator, replay-test).
STATE_TOPICS = {"ee_pose": TOPICS["ee_pose"], "gripper_width": TOPICS["joint_states"],
                "joint_positions": TOPICS["joint_states"], "cube_pose": TOPICS["cube_pose"]}

# The DDS transport every node of a graph gets (runner, launch files, test harness): the package's Fast DDS
# profile (loopback-only UDPv4 with 4 MB socket buffers) and the discovery range under which rmw_fastrtps
# applies it. Under LOCALHOST rmw_fastrtps adds its own transports (512 KB shared memory, system-size UDP
# buffers) and 2 x 640x480 frames at 30 Hz lose ~65 %; measured in bench/camera_transport.py, README "DDS".
DDS_PROFILE_FILE = "fastdds_localhost.xml"

ARG_KINDS = ("str", "int", "bool", "list")
_ROS_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class LaunchArg:
    """One declared launch argument; values always arrive as strings (`name:=value`)."""

    name: str
    default: str
    description: str
    choices: tuple[str, ...] | None = None  # allowed values; None = any value of `kind`
    kind: str = "str"  # "str" | "int" | "bool" (true|false) | "list" (comma-separated ROS names)

    def __post_init__(self):
        if self.kind not in ARG_KINDS:
            raise ConfigError(f"launch argument '{self.name}': unknown kind '{self.kind}' "
                              f"(choose {'|'.join(ARG_KINDS)})")
        if self.kind == "bool" and self.choices is None:
            object.__setattr__(self, "choices", ("true", "false"))


@dataclass(frozen=True)
class Condition:
    """The node exists only when launch argument `arg` has one of `values`."""

    arg: str
    values: tuple[str, ...]

    def holds(self, args: dict[str, str]) -> bool:
        return args[self.arg] in self.values


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
             parameters=(InlineParam("camera_name", "{item}"),), for_each="cameras"),
    NodeSpec("proprioception", "proprioception_node", "deploy.nodes.proprioception_node",
             ("proprioception.yaml",)),
    NodeSpec("policy", "policy_node", "deploy.nodes.policy_node", ("policy.yaml",),
             parameters=(InlineParam("checkpoint", "{policy}"), InlineParam("seed", "{seed}", "int")),
             remappings=(("~/chunk", TOPICS["policy_chunk"]), ("~/joint_chunk", TOPICS["policy_joint_chunk"]))),
    NodeSpec("intervention", "intervention_node", "deploy.nodes.intervention_node", ("intervention.yaml",),
             remappings=(("~/policy_chunk", TOPICS["policy_chunk"]),
                         ("~/policy_joint_chunk", TOPICS["policy_joint_chunk"]),
                         ("~/chunk", TOPICS["controller_chunk"]),
                         ("~/joint_chunk", TOPICS["controller_joint_chunk"]))),
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
    """A copy of `graph` named `name` whose argument `arg` can only be `value`."""
    args = tuple(dataclasses.replace(a, default=value, choices=(value,)) if a.name == arg else a
                 for a in graph.args)
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

# The teleop correction session on the sim: an operator device (default: the scripted operator) in the
# intervention node, the episode runner + operator console logging every step, and the learner fine-tuning the
# policy from that log and swapping its weights into the running policy (deploy/learning).
_SESSION_DEVICES = ("none", "scripted", "keyboard", "gamepad", "spacemouse")
TELEOP_SESSION = dataclasses.replace(
    SIM, name="teleop_session",
    description="sim graph + operator device + episode runner/console + online learner from corrections",
    args=SIM.args + (
        LaunchArg("device", "scripted", "operator device in the intervention node", choices=_SESSION_DEVICES),
        LaunchArg("session", "runs/session", "folder for the correction log (episodes/) and the learner"),
        LaunchArg("demos", "", "episode log of demonstrations the learner also trains on; empty = none"),
        LaunchArg("episodes", "0", "stop after this many episodes; 0 = until Ctrl-C", kind="int"),
        LaunchArg("learn", "true", "run the learner (false: log corrections only)", kind="bool"),
        LaunchArg("publish_period", "30.0", "seconds between weight versions the learner swaps in")),
    nodes=tuple(dataclasses.replace(n, parameters=n.parameters + (InlineParam("device", "{device}"),))
                if n.name == "intervention" else n for n in SIM.nodes) + (
        NodeSpec("episodes", "episode_node", "deploy.nodes.episode_node", required=True,
                 parameters=(InlineParam("output", "{session}/episodes"), InlineParam("episodes", "{episodes}", "int"),
                             InlineParam("cameras", "{cameras}"))),
        NodeSpec("learner", "learner_node", "deploy.nodes.learner_node", condition=Condition("learn", ("true",)),
                 parameters=(InlineParam("checkpoint", "{policy}"), InlineParam("demos", "{demos}"),
                             InlineParam("log", "{session}/episodes"), InlineParam("workdir", "{session}/learner"),
                             InlineParam("publish_period_s", "{publish_period}", "float")))),
)

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
def resolve(graph_name: str, args: dict[str, str]) -> ResolvedGraph:
    """Validate `args` (name → string value) for graph `graph_name` and return its concrete nodes."""
    graph = GRAPHS.get(graph_name)
    if graph is None:
        raise ConfigError(f"unknown graph '{graph_name}' (choose {'|'.join(sorted(GRAPHS))})")
    values = _argument_values(graph, args)
    lists = {a.name: _split_list(a, values[a.name]) for a in graph.args if a.kind == "list"}
    conf = Path(graph.config_dir) if graph.config_dir is not None else config_dir()
    nodes: list[ResolvedNode] = []
    for spec in graph.nodes:
        if spec.condition is not None and not spec.condition.holds(values):
            continue
        items = lists[spec.for_each] if spec.for_each is not None else [None]
        for item in items:
            nodes.append(_resolve_node(graph, spec, values, item, conf))
    names = [n.name for n in nodes]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ConfigError(f"graph '{graph.name}' has two nodes named '{duplicates[0]}'")
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
            raise ConfigError(f"unknown {arg.name} '{value}' (choose {'|'.join(arg.choices)})")
        if arg.kind == "int" and not re.fullmatch(r"[+-]?\d+", value.strip()):
            raise ConfigError(f"launch argument '{arg.name}' must be an integer, got '{value}'")
    return values


def _split_list(arg: LaunchArg, value: str) -> list[str]:
    items = list(comma_list(value))
    for item in items:
        if not _ROS_NAME.match(item):
            raise ConfigError(f"launch argument '{arg.name}': '{item}' is not a valid name (letters, digits, _)")
    if len(set(items)) != len(items):
        raise ConfigError(f"launch argument '{arg.name}' lists a name twice: '{value}'")
    return items


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
                  conf: Path) -> ResolvedNode:
    where = f"graph '{graph.name}', node '{spec.name}'"
    name = _format(spec.name, values, item, where)
    files = []
    for template in spec.params_files:
        path = conf / _format(template, values, item, where)
        check_params_file(path, name)
        files.append(path)
    parameters = tuple((p.name, _typed(p, _format(p.template, values, item, where), f"node '{name}'"))
                       for p in graph.common_parameters + spec.parameters)
    remappings = tuple((_format(a, values, item, where), _format(b, values, item, where))
                       for a, b in spec.remappings)
    return ResolvedNode(name, spec.executable, spec.module, tuple(files), parameters, remappings, spec.required)


def check_params_file(path: Path, node_name: str) -> None:
    """Raise ConfigError unless `path` is YAML of shape `<node_name or /**>: ros__parameters: {...}`."""
    if not path.is_file():
        raise ConfigError(f"parameter file not found: {path} (for node '{node_name}')")
    try:
        root = yaml.compose(path.read_text(), Loader=yaml.SafeLoader)
        yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{path}{line}: invalid YAML: {problem}") from None
    if not isinstance(root, yaml.MappingNode):
        line = root.start_mark.line + 1 if root is not None else 1
        raise ConfigError(f"{path}:{line}: expected '<node name>: ros__parameters:' at the top level")
    matches = {node_name, "/" + node_name, "/**", "/**/" + node_name}
    found = False
    for key, value in root.value:
        where = f"{path}:{key.start_mark.line + 1}"
        if not isinstance(value, yaml.MappingNode) or [k.value for k, _ in value.value] != ["ros__parameters"]:
            raise ConfigError(f"{where}: section '{key.value}' must contain exactly 'ros__parameters:'")
        params = value.value[0][1]
        if not isinstance(params, yaml.MappingNode):
            line = params.start_mark.line + 1
            raise ConfigError(f"{path}:{line}: '{key.value}: ros__parameters' must be a mapping")
        found = found or key.value in matches
    if not found:
        raise ConfigError(f"{path}:1: no '{node_name}:' or '/**:' section with ros__parameters")


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
    "ResolvedGraph", "ResolvedNode", "STATE_TOPICS", "TOPICS", "check_params_file", "config_dir", "dds_environment",
    "parse_launch_args",
    "register_graph", "resolve", "with_fixed_arg",
]
