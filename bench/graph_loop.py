"""Controller loop rate and jitter at 1 kHz with the whole sim graph running (cameras, policy, ...).

    python bench/graph_loop.py [--seconds 30] [--runner process|thread|both] [graph launch args, e.g. sim_mode:=lockstep]

Starts the sim graph with the production runner, the controller's `loop_runner` set as asked (the loop thread
in a child process of its own, or a thread of the node's process), reads the controller's /diagnostics
(rate on the robot clock, p99 |period - 1 ms|, missed deadlines, tick compute p99) once a second and prints
medians over the run, robot time per wall second (the report stamps against their arrival: 1.0 in real time, the
speed of `sim_mode:=lockstep`), and the load average.
"""
from __future__ import annotations

import argparse
import dataclasses
import io
import os
import statistics
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "test"))

from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402

from deploy.graph.description import parse_launch_args, resolve  # noqa: E402
from deploy.graph.runner import GraphRunner, child_environment  # noqa: E402
from harness import Probe, fresh_domain_id  # noqa: E402

KEYS = ("rate_hz", "jitter_p99_ms", "missed_deadline_pct", "skipped_sample_pct", "tick_p99_ms")


def with_controller_parameter(graph, name: str, value):
    nodes = tuple(dataclasses.replace(n, parameters=n.parameters + ((name, value),)) if n.name == "controller" else n
                  for n in graph.nodes)
    return dataclasses.replace(graph, nodes=nodes)


def measure(runner_kind: str, seconds: float, launch_args: list[str]) -> dict[str, float]:
    domain = fresh_domain_id()
    graph = with_controller_parameter(resolve("sim", parse_launch_args(launch_args)), "loop_runner", runner_kind)
    output = io.StringIO()
    runner = GraphRunner(graph, child_environment(os.environ, domain), out=output, err=output)
    thread = threading.Thread(target=runner.run, daemon=True)
    probe = Probe(domain)
    diagnostics = probe.collect(DiagnosticArray, "/diagnostics", 10)
    thread.start()
    try:
        deadline = time.monotonic() + 120
        while not any(s.name == "controller: loop" for _, m in diagnostics for s in m.status):
            if time.monotonic() > deadline or not thread.is_alive():
                raise SystemExit("no controller diagnostics:\n" + output.getvalue()[-2000:])
            time.sleep(0.5)
        time.sleep(5.0)  # let start-up transients pass
        start = time.monotonic()
        time.sleep(seconds)
        load = os.getloadavg()
        rows = [{kv.key: kv.value for kv in s.values} for t, m in diagnostics for s in m.status
                if s.name == "controller: loop" and t >= start]
        stamps = [(t, m.header.stamp.sec + 1e-9 * m.header.stamp.nanosec) for t, m in diagnostics
                  for s in m.status if s.name == "controller: loop" and t >= start]
    finally:
        runner.request_stop()
        thread.join(timeout=60)
        probe.close()
    medians = {key: statistics.median(float(r[key]) for r in rows) for key in KEYS}
    # robot time per wall second (1.0 in real time; lockstep runs as fast as the graph answers)
    medians["robot_time_per_wall"] = (stamps[-1][1] - stamps[0][1]) / (stamps[-1][0] - stamps[0][0])
    print(f"runner={runner_kind}: " + "  ".join(f"{k} {v:.2f}" for k, v in medians.items())
          + f"  (median of {len(rows)} reports; load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f})", flush=True)
    return medians


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--runner", default="process", choices=("process", "thread", "both"))
    parser.add_argument("args", nargs="*", help="launch arguments for the sim graph")
    args = parser.parse_args()
    for kind in ("process", "thread") if args.runner == "both" else (args.runner,):
        measure(kind, args.seconds, args.args)


if __name__ == "__main__":
    main()
