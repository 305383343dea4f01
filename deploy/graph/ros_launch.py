"""Translate a graph description into genuine ROS 2 launch actions (used by `launch/*.launch.py`).

`launch` and `launch_ros` are imported inside the functions: they exist only on a ROS 2 distro, and this
module must stay importable (and testable) without them. The runner (`deploy.graph.runner`) starts the very
same `ResolvedNode`s, so a launch file and `deploy launch` cannot drift apart.
"""
from __future__ import annotations

import tempfile

import yaml

from deploy.errors import ConfigError
from deploy.graph.description import GRAPHS, ResolvedNode, dds_environment, operator_note, resolve


def declare_arguments(graph_name: str) -> list:
    """`DeclareLaunchArgument` for every argument of the graph, plus the package's DDS environment defaults."""
    from launch.actions import DeclareLaunchArgument, SetEnvironmentVariable
    from launch.substitutions import EnvironmentVariable

    graph = GRAPHS.get(graph_name)
    if graph is None:
        raise ConfigError(f"unknown graph '{graph_name}' (choose {'|'.join(sorted(GRAPHS))})")
    actions = []
    for arg in graph.args:
        kwargs = {"default_value": arg.default, "description": arg.description}
        if arg.choices is not None:
            kwargs["choices"] = list(arg.choices)
        actions.append(DeclareLaunchArgument(arg.name, **kwargs))
    for name, value in dds_environment().items():  # keep the caller's value when set
        actions.append(SetEnvironmentVariable(name, EnvironmentVariable(name, default_value=value)))
    return actions


def launch_nodes(context, graph_name: str) -> list:
    """OpaqueFunction body: resolve the graph with the context's argument values and emit one Node each (and the
    line telling the user to start the keyboard in their own terminal, when the graph asks for it)."""
    from launch.actions import LogInfo

    graph = GRAPHS[graph_name]
    args = {a.name: context.launch_configurations[a.name] for a in graph.args
            if a.name in context.launch_configurations}
    resolved = resolve(graph_name, args)
    note = operator_note(resolved)
    return ([LogInfo(msg=note)] if note else []) + [node_action(node) for node in resolved.nodes]


class _QuotedStrings(yaml.SafeDumper):
    """Every string double-quoted: rcl types a plain scalar itself, so a plain 012345678901 is read as a double."""


_QuotedStrings.add_representer(str, lambda dumper, text: dumper.represent_scalar("tag:yaml.org,2002:str", text,
                                                                                  style='"'))


def inline_params_file(node: ResolvedNode) -> str:
    """The node's inline parameters as a params file (what `-p` gives under `deploy launch`). Not a dict handed to
    launch_ros: it writes strings unquoted when PyYAML sees no other type, and rcl then reads a RealSense serial
    with a leading zero as a double (measured with launch_ros 0.28: '012345678901' arrived as 12345678901.0)."""
    with tempfile.NamedTemporaryFile("w", prefix=f"deploy_{node.name}_", suffix=".yaml", delete=False) as file:
        yaml.dump({node.name: {"ros__parameters": dict(node.parameters)}}, file, Dumper=_QuotedStrings,
                  sort_keys=False)
    return file.name


def node_action(node: ResolvedNode):
    """One `launch_ros.actions.Node` for a resolved node; a required node's exit shuts the launch down."""
    from launch.actions import Shutdown
    from launch_ros.actions import Node

    parameters: list = [str(path) for path in node.params_files]
    if node.parameters:
        parameters.append(inline_params_file(node))
    kwargs = {}
    if node.required:
        kwargs["on_exit"] = [Shutdown(reason=f"required node '{node.name}' exited")]
    return Node(package="deploy", executable=node.executable, name=node.name, parameters=parameters,
                remappings=list(node.remappings), output="screen", **kwargs)
