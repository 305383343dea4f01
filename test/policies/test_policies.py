import numpy as np
import pytest
import torch

from deploy.errors import ConfigError, DeployError
from deploy.policies import checkpoint  # noqa: F401  (registers "act" and "flow")
from deploy.policies.act import ACTConfig
from deploy.policies.base import PolicyMetadata, make_policy
from deploy.policies.flow import FlowConfig
from deploy.policies.learned import batch_from_observations

from policy_helpers import SMALL, fit_normalizer, make, metadata, observation

KINDS = ["act", "flow"]


@pytest.mark.parametrize("kind, overrides", [("act", {}), ("act", {"use_vae": False}), ("flow", {})])
def test_chunk_shape_and_unit_quaternions(kind, overrides):
    policy = make(kind, **overrides)
    fit_normalizer(policy)
    chunk = policy.predict_chunk(observation())
    assert chunk.shape == (8, 8) and chunk.dtype == np.float64 and np.isfinite(chunk).all()
    np.testing.assert_allclose(np.linalg.norm(chunk[:, 3:7], axis=1), 1.0, atol=1e-6)


@pytest.mark.parametrize("kind", KINDS)
def test_deterministic_with_seed(kind):
    a, b = make(kind, seed=3), make(kind, seed=3)
    obs = observation()
    first = a.predict_chunk(obs)
    a.reset()
    np.testing.assert_array_equal(a.predict_chunk(obs), first)  # same seed, same episode start
    np.testing.assert_array_equal(b.predict_chunk(obs), first)  # same seed, built separately


@pytest.mark.parametrize("kind, config_cls", [("act", ACTConfig), ("flow", FlowConfig)])
def test_registered(kind, config_cls):
    policy = make_policy(kind, config=config_cls(**SMALL), metadata=metadata())
    assert policy.predict_chunk(observation()).shape == (8, 8)


def test_flow_noise_advances_within_an_episode_and_seed_matters():
    policy, other = make("flow", seed=0), make("flow", seed=0)
    other.generator.manual_seed(1)
    obs = observation()
    first = policy.predict_chunk(obs)
    assert not np.array_equal(policy.predict_chunk(obs), first)
    assert not np.array_equal(other.predict_chunk(obs), first)


@pytest.mark.parametrize("d", [1, 3, 8])
def test_flow_inpainting_keeps_committed_prefix(d):
    policy = make("flow")
    fit_normalizer(policy)
    obs = observation()
    free = policy.predict_chunk(obs)
    policy.reset()
    prefix = free[:d] + np.array([0.02, -0.01, 0.03, 0, 0, 0, 0, 0.01])  # controller's frozen points
    chunk = policy.predict_chunk(obs, committed_prefix=prefix)
    np.testing.assert_allclose(chunk[:d], prefix, atol=1e-6)
    if d < 8:
        assert not np.allclose(chunk[d:], free[d:])  # the rest was re-generated around the prefix


def test_act_ignores_prefix():
    policy = make("act")
    obs = observation()
    np.testing.assert_array_equal(policy.predict_chunk(obs, np.zeros((2, 8))), policy.predict_chunk(obs))


def test_bad_prefix_shape():
    with pytest.raises(DeployError, match="committed_prefix"):
        make("flow").predict_chunk(observation(), np.zeros((9, 8)))


def test_batch_from_observations_resizes_and_scales():
    obs = observation()
    obs.values["camera front"][:] = 255
    batch = batch_from_observations([obs, observation(1)], metadata(size_hw=(24, 20)))
    assert batch["images"].shape == (2, 2, 3, 24, 20) and batch["images"].dtype == torch.float32
    assert batch["images"].min() >= 0 and batch["images"].max() <= 1
    assert torch.all(batch["images"][0, 1] == 1.0)  # camera order follows image_keys
    assert batch["state"].shape == (2, 8) and batch["state"][0, 7] == pytest.approx(0.04)


def test_missing_observation_key_named():
    obs = observation()
    del obs.values["camera wrist"]
    with pytest.raises(DeployError, match="camera wrist"):
        make("act").predict_chunk(obs)


@pytest.mark.parametrize("field, value", [("d_model", 30), ("dropout", 1.0), ("n_keypoints", 0),
                                          ("vision_channels", ()), ("n_decoder_layers", 0)])
def test_config_validation_names_field(field, value):
    for config_cls in (ACTConfig, FlowConfig):
        with pytest.raises(ConfigError, match=field):
            config_cls(**{field: value})
    with pytest.raises(ConfigError, match="n_steps"):
        FlowConfig(n_steps=20)


def test_unknown_state_key_named():
    meta = PolicyMetadata("joint", 0.05, 8, state_keys=("wrench",))
    with pytest.raises(ConfigError, match="wrench"):
        make_policy("act", config=ACTConfig(), metadata=meta)


@pytest.mark.parametrize("kind, overrides", [("act", {}), ("act", {"use_vae": False}), ("flow", {})])
def test_training_smoke_loss_decreases(kind, overrides):
    torch.manual_seed(0)
    policy = make(kind, dropout=0.0, **overrides)
    fit_normalizer(policy)
    rng = np.random.default_rng(0)
    batch = batch_from_observations([observation(i) for i in range(8)], policy.metadata)
    batch["actions"] = torch.from_numpy(np.concatenate(
        [0.45 + 0.05 * rng.standard_normal((8, 8, 3)), np.tile([1.0, 0, 0, 0], (8, 8, 1)),
         rng.uniform(0, 0.08, (8, 8, 1))], axis=-1)).float()

    def seeded_loss():
        torch.manual_seed(123)
        return policy.loss(batch).item()

    policy.train()
    before = seeded_loss()
    optimizer = torch.optim.AdamW(policy.parameters(), lr=1e-3)
    for _ in range(20):
        loss = policy.loss(batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert seeded_loss() < 0.8 * before
    assert np.isfinite(policy.predict_chunk(observation())).all() and policy.training  # mode restored
