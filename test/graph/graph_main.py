"""`deploy` CLI with a test-only graph registered: `python graph_main.py launch heartbeat_test ...`.

The graph's nodes run `graph_heartbeat_node` (this directory must be on PYTHONPATH, for the children too).
Uses the production runner and CLI unchanged; only the graph is the test's own, via `register_graph`.
"""
import sys
from pathlib import Path

from deploy import cli
from deploy.graph.description import Graph, InlineParam, LaunchArg, NodeSpec, register_graph

HEARTBEAT_TEST = Graph(
    name="heartbeat_test",
    description="test graph: heartbeat nodes, one per name, plus a required one",
    args=(
        LaunchArg("names", "a,b", "one hb_<name> node each", kind="list"),
        LaunchArg("tag", "t0", "inline parameter given to the hb_<name> nodes"),
        LaunchArg("fail_after", "0", "the required node exits with code 3 after this many seconds (0 = never)"),
        LaunchArg("stubborn", "false", "hb_<name> nodes ignore SIGINT", kind="bool"),
    ),
    nodes=(
        NodeSpec("hb_required", "heartbeat_node", "graph_heartbeat_node", ("heartbeat.yaml",),
                 parameters=(InlineParam("exit_after_s", "{fail_after}", "float"),),
                 remappings=(("~/heartbeat", "/custom/heartbeat"),), required=True),
        NodeSpec("hb_{item}", "heartbeat_node", "graph_heartbeat_node", ("heartbeat.yaml",),
                 parameters=(InlineParam("tag", "{tag}"), InlineParam("ignore_sigint", "{stubborn}", "bool")),
                 for_each="names"),
    ),
    common_parameters=(InlineParam("use_sim_time", "false", "bool"),),
    config_dir=str(Path(__file__).resolve().parent / "config"),
)
register_graph(HEARTBEAT_TEST)

if __name__ == "__main__":
    sys.exit(cli.main(sys.argv[1:]))
