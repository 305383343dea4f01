"""The whole correction loop on the sim: `deploy launch teleop_session` with a random-weight policy, the scripted
operator taking over, every step logged, and the learner's weights swapped into the running policy — the new
weight version shows up in the chunks the policy publishes next."""
import hashlib
import subprocess
import sys

import numpy as np

from deploy.data.episodes import list_episodes, read_episode
from deploy.policies.runtime import write_random_checkpoint
from harness import ros_environment


def test_corrections_are_logged_and_learned_weights_reach_the_running_policy(tmp_path, domain_id):
    checkpoint = write_random_checkpoint(tmp_path / "start", state_keys=("ee_pose", "gripper_width", "cube_pose"),
                                         d_model=32, dim_feedforward=64, n_encoder_layers=1, n_decoder_layers=1,
                                         use_vae=False)
    session = tmp_path / "session"
    result = subprocess.run(
        [sys.executable, "-m", "deploy.cli", "launch", "teleop_session", f"policy:={checkpoint}",
         f"session:={session}", "episodes:=2", "publish_period:=3", "--domain-id", str(domain_id)],
        env=ros_environment(domain_id), capture_output=True, text=True, timeout=280)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    assert output.count("[episodes] episode ") == 2  # the operator console, one line per episode

    episodes = [read_episode(s.path) for s in list_episodes(session / "episodes")]
    assert len(episodes) == 2 and all(e.complete for e in episodes)
    steps = np.concatenate([e.steps["intervention"] for e in episodes])
    assert steps.max() == 1.0 and steps.min() == 0.0  # the operator took over a random policy, and handed back
    for episode in episodes:  # what the operator commanded is logged while it drives ...
        driving = episode.steps["intervention"] == 1.0
        takeover = np.flatnonzero(driving & ~np.concatenate([[False], driving[:-1]]))
        settled = driving.copy()
        for start in takeover:  # ... once its first command has arrived (the flag goes out just before it)
            settled[start:start + 5] = False
        commanded = np.isfinite(episode.steps["human_action"]).all(axis=1)
        # On a starved machine the operator's measured state can go stale for a second: it then commands nothing
        # (the arm holds, the log says so with NaN, the node says why). That is the exception, not the rule: CI's
        # loaded 2-core machine logged a command on more than 80 % of such steps, a quiet one on all of them.
        blocked = [line for line in output.splitlines() if "cannot command" in line]
        assert commanded[settled].mean() > 0.5, (np.flatnonzero(settled & ~commanded), blocked)

    weights = sorted((session / "learner" / "weights").glob("*.safetensors"))
    assert weights, output[-3000:]
    learned = {hashlib.sha256(w.read_bytes()).hexdigest()[:12] for w in weights}
    versions = [v for e in episodes for v in e.steps["weight_version"]]
    assert versions[0] not in learned  # the episodes started on the checkpoint's weights ...
    assert learned & set(versions), (learned, set(versions))  # ... and chunks later carried the learner's
