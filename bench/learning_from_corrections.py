"""The learning result: fine-tuning a weak policy from a scripted operator's corrections, against HG-DAgger.

1. RL from corrections: `deploy launch teleop_session` with the weak checkpoint, the scripted operator and the
   learner (chunk actor-critic, weights swapped into the running policy every --publish-period seconds), for
   --episodes episodes. Per block of --block episodes: success (with the operator's help), autonomous success
   (success with no operator step), intervention rate (fraction of steps under the operator).
2. HG-DAgger baseline on the same corrections: `deploy train-bc` on the demonstrations (if any) plus every
   operator-controlled step of the session's log.
3. `deploy eval` (no operator) of the weak checkpoint, the learner's last weights and the DAgger policy.
Writes OUTPUT/report.json, OUTPUT/report.md and OUTPUT/learning.png.

    python bench/learning_from_corrections.py --weak checkpoints/push_weak --episodes 40 --output runs/bench_learning
"""
from __future__ import annotations

import argparse
import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from deploy.data.episodes import list_episodes
from deploy.policies.checkpoint import CONFIG_FILE, WEIGHTS_FILE


def deploy(*args: str, log: Path) -> None:
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "deploy.cli", *args], stdout=out, stderr=subprocess.STDOUT)
        try:
            code = proc.wait()
        except KeyboardInterrupt:  # let the graph stop its nodes (a killed runner would orphan them)
            proc.send_signal(signal.SIGINT)
            proc.wait()
            raise
    if code != 0:
        sys.exit(f"bench: `deploy {' '.join(args)}` failed with exit code {code}; see {log}")


def blocks(log_root: Path, size: int) -> list[dict]:
    outcomes = [s.outcome for s in list_episodes(log_root) if s.complete]
    rows = []
    for start in range(0, len(outcomes), size):
        block = outcomes[start:start + size]
        rows.append({"episodes": f"{start + 1}-{start + len(block)}",
                     "success": float(np.mean([o["success"] for o in block])),
                     "autonomous_success": float(np.mean([o["success"] and o["intervention_fraction"] == 0
                                                          for o in block])),
                     "intervention_rate": float(np.mean([o["intervention_fraction"] for o in block]))})
    return rows


def evaluate(checkpoint: Path, output: Path, episodes: int, domain_id: int) -> float:
    deploy("eval", "--policy", str(checkpoint), "--episodes", str(episodes), "--output", str(output),
           "--domain-id", str(domain_id), log=output.with_suffix(".log"))
    return json.loads((output / "summary.json").read_text())["success_rate"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weak", required=True, help="the starting checkpoint")
    parser.add_argument("--demos", default="", help="episode log of the demonstrations the weak policy saw")
    parser.add_argument("--episodes", type=int, default=40)
    parser.add_argument("--block", type=int, default=10)
    parser.add_argument("--eval-episodes", type=int, default=20)
    parser.add_argument("--publish-period", type=float, default=20.0)
    parser.add_argument("--output", default="runs/bench_learning")
    parser.add_argument("--domain-id", type=int, default=91)
    parser.add_argument("--reuse-session", action="store_true",
                        help="keep OUTPUT's session and only redo the baseline and the evaluations")
    ns = parser.parse_args()
    out = Path(ns.output)
    start = out / "start"
    started = time.monotonic()
    if not ns.reuse_session:
        if out.exists():
            shutil.rmtree(out)
        out.mkdir(parents=True)
        shutil.copytree(ns.weak, start)
        deploy("launch", "teleop_session", f"policy:={start.resolve()}", f"demos:={ns.demos}",
               f"session:={out / 'rl'}", f"episodes:={ns.episodes}", f"publish_period:={ns.publish_period}",
               "--domain-id", str(ns.domain_id), log=out / "session.log")
        (out / "session_minutes.txt").write_text(f"{(time.monotonic() - started) / 60:.2f}\n")
    session_minutes = float((out / "session_minutes.txt").read_text())
    for folder in ("learned", "dagger"):
        shutil.rmtree(out / folder, ignore_errors=True)
    rows = blocks(out / "rl" / "episodes", ns.block)

    learned = out / "learned"  # the weak checkpoint's config with the learner's last weights
    learned.mkdir()
    shutil.copy(start / CONFIG_FILE, learned / CONFIG_FILE)
    weights = sorted((out / "rl" / "learner" / "weights").glob("*.safetensors"))
    shutil.copy(weights[-1] if weights else start / WEIGHTS_FILE, learned / WEIGHTS_FILE)
    config = json.loads((start / CONFIG_FILE).read_text())
    demos = [ns.demos] if ns.demos else []
    deploy("train-bc", *demos, "--corrections", str(out / "rl" / "episodes"), "--output", str(out / "dagger"),
           "--cameras", ",".join(config["metadata"]["image_keys"]),
           "--state", ",".join(config["metadata"]["state_keys"]), "--steps", "1000",
           "--arch", json.dumps({k: config["config"][k] for k in ("d_model", "dim_feedforward", "n_encoder_layers",
                                                                    "n_decoder_layers", "use_vae")}),
           log=out / "dagger.log")
    evals = {name: evaluate(path, out / f"eval_{name}", ns.eval_episodes, ns.domain_id)
             for name, path in (("weak", start), ("rl", learned), ("dagger", out / "dagger"))}
    report = {"blocks": rows, "eval_success": evals, "session_minutes": session_minutes,
              "weight_versions": len(weights), "episodes": ns.episodes}
    (out / "report.json").write_text(json.dumps(report, indent=1))
    lines = ["| episodes | success (with operator) | autonomous success | intervention rate |", "|---|---|---|---|"]
    lines += [f"| {r['episodes']} | {r['success']:.0%} | {r['autonomous_success']:.0%} | {r['intervention_rate']:.0%} |"
              for r in rows]
    lines += ["", f"eval without operator ({ns.eval_episodes} seeded episodes): weak {evals['weak']:.0%}, "
              f"after RL from corrections {evals['rl']:.0%}, HG-DAgger on the same corrections {evals['dagger']:.0%}",
              f"session: {ns.episodes} episodes in {session_minutes:.1f} min wall time, {len(weights)} weight versions"]
    (out / "report.md").write_text("\n".join(lines) + "\n")
    plot(rows, evals, out / "learning.png")
    print("\n".join(lines))
    return 0


def plot(rows: list[dict], evals: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = np.arange(1, len(rows) + 1)
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(x, [r["success"] for r in rows], "o-", label="success (with operator)")
    ax.plot(x, [r["autonomous_success"] for r in rows], "s-", label="autonomous success")
    ax.plot(x, [r["intervention_rate"] for r in rows], "^-", label="intervention rate")
    for name, style in (("weak", ":"), ("rl", "--"), ("dagger", "-.")):
        ax.axhline(evals[name], linestyle=style, color="gray", label=f"eval {name}: {evals[name]:.0%}")
    ax.set_xlabel("block of episodes")
    ax.set_ylim(-0.05, 1.05)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
