"""The learning result: fine-tuning a weak policy from a scripted operator's corrections, against HG-DAgger.

1. RL from corrections: `deploy launch teleop_session` with the weak checkpoint, the scripted operator and the
   learner (chunk actor-critic, weights swapped into the running policy every --publish-period seconds), for
   --episodes episodes. Per block of --block episodes: success (with the operator's help), autonomous success
   (success with no operator step), intervention rate (fraction of steps under the operator).
2. HG-DAgger baseline on the same corrections: `deploy train-bc` on the demonstrations (if any) plus every
   operator-controlled step of the session's log.
3. `deploy eval` (no operator) of the weak checkpoint, the learner's last weights and the DAgger policy, and with
   --block-evals N of the weights the policy ran at the end of each block (the learning curve without help).
Writes OUTPUT/report.json, OUTPUT/report.md and OUTPUT/learning.png. --reuse-session keeps what OUTPUT has.

    python bench/learning_from_corrections.py --weak checkpoints/push_weak --demos runs/demos_weak --episodes 40 \
        --block-evals 10 --output runs/bench_learning
"""
from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from deploy.data.episodes import list_episodes, read_episode
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
    """Success rate of `checkpoint` without the operator on seeded episodes (kept from an earlier run that
    finished all of them: an interrupted eval writes the episodes it ran)."""
    summary = output / "summary.json"
    if not summary.is_file() or json.loads(summary.read_text())["episodes"] != episodes:
        shutil.rmtree(output, ignore_errors=True)
        deploy("eval", "--policy", str(checkpoint), "--episodes", str(episodes), "--output", str(output),
               "--domain-id", str(domain_id), log=output.with_suffix(".log"))
    return json.loads(summary.read_text())["success_rate"]


def with_weights(start: Path, weights: Path, output: Path) -> Path:
    """A checkpoint folder: the starting checkpoint's config with other weights (the learner's)."""
    output.mkdir(parents=True, exist_ok=True)
    shutil.copy(start / CONFIG_FILE, output / CONFIG_FILE)
    shutil.copy(weights, output / WEIGHTS_FILE)
    return output


def block_end_weights(log_root: Path, size: int, start: Path, weight_files: list[Path]) -> list[Path]:
    """The weights the policy ran at the end of each block of episodes (the log names them by their sha256's
    first 12 hex digits)."""
    by_digest = {hashlib.sha256(p.read_bytes()).hexdigest()[:12]: p for p in [start / WEIGHTS_FILE, *weight_files]}
    finished = [s for s in list_episodes(log_root) if s.complete]
    ends = [finished[min(i + size, len(finished)) - 1] for i in range(0, len(finished), size)]
    return [by_digest.get(read_episode(s.path).steps["weight_version"][-1][:12], start / WEIGHTS_FILE) for s in ends]


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
    parser.add_argument("--block-evals", type=int, default=0,
                        help="also evaluate the weights in use at the end of each block on this many episodes")
    parser.add_argument("--reuse-session", action="store_true",
                        help="keep OUTPUT's session and whatever baseline and evaluations it already has")
    ns = parser.parse_args()
    out = Path(ns.output)
    start = out / "start"
    config = json.loads((Path(ns.weak) / CONFIG_FILE).read_text())
    started = time.monotonic()
    if not ns.reuse_session:
        if out.exists():
            shutil.rmtree(out)
        out.mkdir(parents=True)
        shutil.copytree(ns.weak, start)
        cameras = ",".join(config["metadata"]["image_keys"])  # render only what the policy reads
        deploy("launch", "teleop_session", f"policy:={start.resolve()}", f"demos:={ns.demos}", f"cameras:={cameras}",
               f"session:={out / 'rl'}", f"episodes:={ns.episodes}", f"publish_period:={ns.publish_period}",
               "--domain-id", str(ns.domain_id), log=out / "session.log")
        (out / "session_minutes.txt").write_text(f"{(time.monotonic() - started) / 60:.2f}\n")
    session_minutes = float((out / "session_minutes.txt").read_text())
    rows = blocks(out / "rl" / "episodes", ns.block)
    weights = sorted((out / "rl" / "learner" / "weights").glob("*.safetensors"))
    learned = with_weights(start, weights[-1] if weights else start / WEIGHTS_FILE, out / "learned")
    demos = [ns.demos] if ns.demos else []
    if not (out / "dagger" / WEIGHTS_FILE).is_file():
        deploy("train-bc", *demos, "--corrections", str(out / "rl" / "episodes"), "--output", str(out / "dagger"),
               "--cameras", ",".join(config["metadata"]["image_keys"]),
               "--state", ",".join(config["metadata"]["state_keys"]), "--steps", "1000",
               "--arch", json.dumps({k: config["config"][k] for k in ("d_model", "dim_feedforward", "n_encoder_layers",
                                                                        "n_decoder_layers", "use_vae")}),
               log=out / "dagger.log")
    evals = {name: evaluate(path, out / f"eval_{name}", ns.eval_episodes, ns.domain_id)
             for name, path in (("weak", start), ("rl", learned), ("dagger", out / "dagger"))}
    if ns.block_evals:
        for i, (row, block_weights) in enumerate(zip(rows, block_end_weights(out / "rl" / "episodes", ns.block,
                                                                             start, weights))):
            checkpoint = with_weights(start, block_weights, out / f"block_{i + 1}")
            row["eval_success"] = evaluate(checkpoint, out / f"eval_block_{i + 1}", ns.block_evals, ns.domain_id)
    report = {"blocks": rows, "eval_success": evals, "session_minutes": session_minutes,
              "weight_versions": len(weights), "episodes": ns.episodes}
    (out / "report.json").write_text(json.dumps(report, indent=1))
    lines = ["| episodes | success (with operator) | autonomous success | intervention rate | weights at block end, "
             f"eval without operator ({ns.block_evals} episodes) |", "|---|---|---|---|---|"]
    lines += [f"| {r['episodes']} | {r['success']:.0%} | {r['autonomous_success']:.0%} | {r['intervention_rate']:.0%} "
              f"| {format(r['eval_success'], '.0%') if 'eval_success' in r else '-'} |" for r in rows]
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
    if all("eval_success" in r for r in rows):
        ax.plot(x, [r["eval_success"] for r in rows], "D-", label="eval without operator, weights at block end")
    for name, style in (("weak", ":"), ("rl", "--"), ("dagger", "-.")):
        ax.axhline(evals[name], linestyle=style, color="gray", label=f"eval {name}: {evals[name]:.0%}")
    ax.set_xticks(x, [r["episodes"] for r in rows])
    ax.set_xlabel("episodes")
    ax.set_ylim(-0.05, 1.05)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
