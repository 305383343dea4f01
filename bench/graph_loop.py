"""Controller loop rate and jitter at 1 kHz with the whole sim graph running (cameras, policy, ...).

    python bench/graph_loop.py [--seconds 30] [graph launch args, e.g. sim_mode:=lockstep]

Reads the controller's /diagnostics (rate on the robot clock, p99 |period - 1 ms|, missed deadlines) once a
second and prints medians over the run.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "test"))

from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402

from harness import GraphProcess, Probe, fresh_domain_id  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("args", nargs="*", help="launch arguments for the sim graph")
    args = parser.parse_args()
    domain = fresh_domain_id()
    probe = Probe(domain)
    diagnostics = probe.collect(DiagnosticArray, "/diagnostics", 10)
    graph = GraphProcess(["sim", *args.args], domain)
    try:
        deadline = time.monotonic() + 120
        while not any(s.name == "controller: loop" for _, m in diagnostics for s in m.status):
            if time.monotonic() > deadline:
                raise SystemExit("no controller diagnostics:\n" + graph.output[-2000:])
            time.sleep(0.5)
        time.sleep(5.0)  # let start-up transients pass
        start = time.monotonic()
        time.sleep(args.seconds)
        rows = []
        for t, msg in diagnostics:
            for status in msg.status:
                if status.name == "controller: loop" and t >= start:
                    rows.append({kv.key: kv.value for kv in status.values})
    finally:
        graph.interrupt()
        probe.close()
    for key in ("rate_hz", "jitter_p99_ms", "missed_deadline_pct"):
        print(f"{key}: median {statistics.median(float(r[key]) for r in rows):.2f} over {len(rows)} reports")


if __name__ == "__main__":
    main()
