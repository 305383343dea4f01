"""The chunk actor-critic learner on a real (small) episode log and a real checkpoint: rewards and penalties
land where the log says, batches mix human and online data 50/50, published weights load into a policy, and
a learner that is killed resumes from its folder with the same weights, counters and replay."""
import numpy as np
import pytest
import torch

from deploy.data.episodes import EpisodeWriter
from deploy.learning.learner import Learner, LearnerConfig, episode_transitions
from deploy.policies.checkpoint import load_checkpoint, load_weights
from deploy.policies.runtime import write_random_checkpoint

STATE_KEYS = ("ee_pose", "gripper_width", "cube_pose")


HORIZON = 16
OPERATOR_DT = 0.01  # the operator commands at 100 Hz, on its own time grid


def write_episode(root, n=40, takeover_at=None, hand_back_at=None, success_at=None, dt=0.05):
    """Steps as the episode node logs them: the policy proposes +x at 0.04 m/s (chunks at its dt spacing),
    the operator commands +y at 0.1 m/s (chunks at 100 Hz spacing, stamped when commanded)."""
    k = np.arange(1, HORIZON + 1)[:, None]
    with EpisodeWriter(root, {"seed": 1}) as writer:
        for i in range(n):
            intervening = takeover_at is not None and takeover_at <= i < (hand_back_at or n)
            x, stamp = 0.45 + 0.002 * i, 100.0 + i * dt
            pose = np.array([x, 0.0, 0.1, 1, 0, 0, 0, 0.0])
            writer.add_step({"stamp_s": stamp, "ee_pose": pose[:7],
                             "gripper_width": np.array([0.0]), "cube_pose": np.array([0.5, 0, 0.02, 0, 0, 0, 1]),
                             "executed_action": pose,
                             "policy_chunk": pose + k * [0.002, 0, 0, 0, 0, 0, 0, 0], "policy_chunk_stamp_s": stamp,
                             "human_chunk": pose + k * [0, 0.1 * OPERATOR_DT, 0, 0, 0, 0, 0, 0],
                             "human_chunk_times_s": OPERATOR_DT * k[:, 0], "human_chunk_stamp_s": stamp,
                             "intervention": float(intervening),
                             "success": float(success_at is not None and i >= success_at)})
        writer.close({"success": success_at is not None})


@pytest.fixture
def checkpoint(tmp_path):
    return write_random_checkpoint(tmp_path / "ckpt", state_keys=STATE_KEYS, d_model=32, dim_feedforward=64,
                                   n_encoder_layers=1, n_decoder_layers=1, use_vae=False)


def test_rewards_penalties_and_terminals_follow_the_log(tmp_path, checkpoint):
    policy = load_checkpoint(checkpoint)
    write_episode(tmp_path / "log", takeover_at=20, hand_back_at=28, success_at=38)
    t = episode_transitions(tmp_path / "log" / "episode_000000", policy, penalty=0.5)
    # a chunk is 16 x 0.05 s = 16 logged steps: step i's window is (i, i + 16]
    assert len(t.rewards) == 40
    assert t.rewards[3] == 0.0 and t.rewards[4] == -0.5 and t.rewards[19] == -0.5  # takeover at 20 in the window
    assert t.rewards[20] == 0.0  # the operator's own chunks are not penalised
    assert t.rewards[21] == 0.0 and t.rewards[22] == 1.0 and t.done[22] == 1.0 and t.done[21] == 0.0
    assert t.rewards[37] == 1.0 and t.done[39] == 1.0
    assert t.human[20:28].all() and not t.human[:20].any() and not t.human[28:].any()
    # labels: what the writer in authority commanded, on the step's grid of dt = 0.05 s
    np.testing.assert_allclose(t.chunks[0, :, 0], 0.45 + 0.002 * np.arange(1, 17))  # the policy's chunk
    np.testing.assert_allclose(t.chunks[0, :, 1], 0.0)
    operator_y = 0.1 * np.minimum(0.05 * np.arange(1, 17), OPERATOR_DT * HORIZON)  # its end point held after 0.16 s
    np.testing.assert_allclose(t.chunks[20, :, 1], operator_y)  # the operator's own chunk, not the executed one
    np.testing.assert_allclose(t.chunks[20, :, 0], 0.45 + 0.002 * 20)


def test_batches_mix_human_and_online_half_and_half(tmp_path, checkpoint):
    write_episode(tmp_path / "demos", success_at=30)
    write_episode(tmp_path / "log", takeover_at=5, hand_back_at=8)
    learner = Learner(checkpoint, tmp_path / "work", LearnerConfig(batch_size=32))
    learner.ingest(tmp_path / "demos", demonstrations=True)
    learner.ingest(tmp_path / "log")
    human = learner.replay.human[learner.sample_indices()]
    assert human.sum() == 16


def test_updates_publish_loadable_weights_and_a_killed_learner_resumes(tmp_path, checkpoint):
    write_episode(tmp_path / "demos", success_at=30)
    write_episode(tmp_path / "log", takeover_at=5, hand_back_at=15, success_at=38)
    config = LearnerConfig(batch_size=16, actor_lr=1e-3)
    learner = Learner(checkpoint, tmp_path / "work", config)
    assert learner.ingest(tmp_path / "demos", demonstrations=True) == 40
    assert learner.ingest(tmp_path / "log") == 40
    assert learner.ingest(tmp_path / "log") == 0  # seen already
    before = {k: v.clone() for k, v in learner.actor.state_dict().items()}
    losses = learner.update(6)
    assert np.isfinite(list(losses.values())).all() and {"critic", "actor", "bc"} <= set(losses)
    assert any(not torch.equal(before[k], v) for k, v in learner.actor.state_dict().items())
    weights = learner.publish()
    assert weights.name == "000001.safetensors"
    fresh = load_checkpoint(checkpoint)
    version = load_weights(fresh, weights)
    for k, v in learner.actor.state_dict().items():
        assert torch.equal(fresh.state_dict()[k], v), k
    assert fresh.weight_version == version

    del learner  # "killed": only the folder survives
    resumed = Learner(checkpoint, tmp_path / "work", config)
    assert resumed.steps == 6 and resumed.version == 1 and len(resumed.replay.rewards) == 80
    for k, v in resumed.actor.state_dict().items():
        assert torch.equal(fresh.state_dict()[k], v), k
    resumed.update(2)  # optimiser moments restored: continues without error
    assert resumed.publish().name == "000002.safetensors"


def test_an_unreadable_learner_folder_is_one_clear_error(tmp_path, checkpoint):
    (tmp_path / "work").mkdir()
    (tmp_path / "work" / "learner.json").write_text("{not json")
    with pytest.raises(Exception, match="learner state in .*work.* is unreadable"):
        Learner(checkpoint, tmp_path / "work", LearnerConfig())
