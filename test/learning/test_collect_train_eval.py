"""`deploy collect-demos` through the real sim graph, `deploy train-bc` on what it logged, and the loaded
checkpoint producing chunks; `deploy eval` refusing a bad checkpoint in one line."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from deploy.data.episodes import list_episodes, read_episode
from deploy.learning.bc import BCConfig, train_bc
from deploy.policies.checkpoint import load_checkpoint
from deploy.policies.runtime import dummy_observation
from harness import ros_environment


def deploy_cli(*args, domain_id, timeout_s=240.0):
    return subprocess.run([sys.executable, "-m", "deploy.cli", *args, "--domain-id", str(domain_id)],
                          env=ros_environment(domain_id), capture_output=True, text=True, timeout=timeout_s)


@pytest.fixture(scope="module")
def demo_log(tmp_path_factory):
    from harness import fresh_domain_id

    root = tmp_path_factory.mktemp("demos")
    result = deploy_cli("collect-demos", "--episodes", "1", "--seed", "4", "--output", str(root),
                        domain_id=fresh_domain_id())
    assert result.returncode == 0, result.stdout + result.stderr
    return root


def test_collect_demos_logs_a_successful_expert_episode_with_every_field(demo_log):
    [summary] = list_episodes(demo_log)
    assert summary.complete and summary.outcome["success"], summary.outcome
    episode = read_episode(summary.path)
    assert episode.meta["seed"] == 5 and episode.meta["policy"] == "scripted:push_expert"
    steps = episode.steps
    assert episode.num_steps > 40  # ≥ 2 s at 20 Hz: the cube had to travel ≥ 8 cm
    stamps = steps["stamp_s"]
    assert np.all(np.diff(stamps) > 0)
    # 20 Hz on an absolute schedule: a late step is caught up at once, so the mean step is the period (the median
    # is not: a loaded machine logged bursts, median 35 ms), and a slow machine can only stretch it.
    assert 0.045 < (stamps[-1] - stamps[0]) / (len(stamps) - 1) < 0.25
    for name in ("ee_pose", "executed_action", "cube_pose", "joint_positions"):
        assert np.isfinite(steps[name][-10:]).all(), name
    assert set(steps["weight_version"]) == {"scripted-push-expert"}
    assert steps["success"][-1] == 1.0 and steps["success"][0] == 0.0 and steps["intervention"].max() == 0.0
    assert np.isnan(steps["human_action"]).all()  # nobody intervened
    cube_start, cube_end = steps["cube_pose"][0, :2], steps["cube_pose"][-1, :2]
    assert np.linalg.norm(cube_end - [0.55, 0.2]) < 0.06 < np.linalg.norm(cube_start - [0.55, 0.2])
    for camera in ("front", "wrist"):
        frames = episode.frames(camera)
        assert frames.shape == (episode.num_steps, 128, 128, 3)
        assert np.abs(frames[0].astype(int) - frames[-1].astype(int)).mean() > 1.0  # the scene changed


def test_train_bc_on_the_logged_episode_writes_a_loadable_checkpoint(demo_log, tmp_path):
    config = BCConfig(steps=30, batch_size=8, cameras=("front",), image_size=32,
                      architecture={"d_model": 32, "dim_feedforward": 64, "n_encoder_layers": 1,
                                    "n_decoder_layers": 1, "use_vae": False, "vision_channels": [8, 8]})
    path = train_bc([demo_log], tmp_path / "ckpt", config, progress=False)
    losses = np.loadtxt(tmp_path / "ckpt" / "loss.csv", delimiter=",", skiprows=1)[:, 1]
    assert len(losses) == 30 and losses[-5:].mean() < losses[:5].mean()
    assert (tmp_path / "ckpt" / "loss.png").stat().st_size > 1000
    policy = load_checkpoint(path)
    assert policy.metadata.image_keys == ("front",) and policy.metadata.horizon == 16
    chunk = policy.predict_chunk(dummy_observation(policy.metadata))
    assert chunk.shape == (16, 8) and np.isfinite(chunk).all()
    # trained on pushes near the table: the chunk lies inside the demonstrated workspace
    assert 0.3 < chunk[:, 0].mean() < 0.7 and 0.0 < chunk[:, 2].mean() < 0.5


def test_eval_renders_only_the_cameras_the_checkpoint_reads(tmp_path):
    from harness import fresh_domain_id

    weak = Path(__file__).resolve().parents[2] / "checkpoints" / "push_weak"
    assert load_checkpoint(weak).metadata.image_keys == ()  # a state-only policy
    result = deploy_cli("eval", "--policy", str(weak), "--episodes", "1", "--timeout", "3", "--output",
                        str(tmp_path), domain_id=fresh_domain_id())
    assert result.returncode == 0, result.stdout + result.stderr
    [summary] = list_episodes(tmp_path)
    episode = read_episode(summary.path)
    assert episode.num_steps > 20 and episode.cameras == {}
    assert np.isfinite(episode.steps["ee_pose"][-1]).all()


def test_eval_refuses_a_missing_checkpoint_in_one_line(tmp_path):
    result = deploy_cli("eval", "--policy", str(tmp_path / "nope"), "--episodes", "1", domain_id=1, timeout_s=60)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "nope" in lines[0], result.stderr


def test_train_bc_without_successful_episodes_says_so(tmp_path):
    result = subprocess.run([sys.executable, "-m", "deploy.cli", "train-bc", str(tmp_path), "--output",
                             str(tmp_path / "out")], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and str(tmp_path) in result.stderr and len(result.stderr.strip().splitlines()) == 1
