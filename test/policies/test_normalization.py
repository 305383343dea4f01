import numpy as np
import pytest
import torch

from deploy.errors import ConfigError
from deploy.policies.normalization import FeatureNormalizer


def quaternion_dataset(n=200, seed=0):
    rng = np.random.default_rng(seed)
    q = np.array([1.0, 0, 0, 0]) + 1e-4 * rng.standard_normal((n, 4))  # orientation barely varies
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    xyz = rng.normal([0.4, 0.0, 0.3], [0.05, 0.1, 0.02], (n, 3))
    gripper = np.full((n, 1), 0.04)  # never moved
    return np.concatenate([xyz, q, gripper], axis=1)  # (N, 8)


def test_round_trip_and_stats():
    data = quaternion_dataset()
    norm = FeatureNormalizer(8, (slice(3, 7),))
    norm.fit(data, "action")
    x = torch.from_numpy(data).float()
    z = norm.normalize(x)
    assert torch.allclose(z[:, :3].mean(0), torch.zeros(3), atol=1e-5)
    assert torch.allclose(z[:, :3].std(0, unbiased=False), torch.ones(3), atol=1e-4)
    assert torch.allclose(norm.unnormalize(z), x, atol=1e-6)


def test_quaternions_unscaled_and_unit_after_unnormalise():
    norm = FeatureNormalizer(8, (slice(3, 7),))
    norm.fit(quaternion_dataset(), "action")
    assert norm.mean[3:7].tolist() == [0, 0, 0, 0] and norm.std[3:7].tolist() == [1, 1, 1, 1]
    raw = norm.unnormalize(torch.randn(5, 16, 8))  # arbitrary network output
    assert torch.allclose(raw[..., 3:7].norm(dim=-1), torch.ones(5, 16), atol=1e-6)


def test_constant_dimension_is_not_blown_up():
    norm = FeatureNormalizer(8, (slice(3, 7),))
    norm.fit(quaternion_dataset(), "action")
    assert norm.std[7] > 0 and torch.isfinite(norm.normalize(torch.zeros(8))).all()


@pytest.mark.parametrize("data", [np.zeros((10, 7)), np.full((10, 8), np.nan), np.zeros((0, 8))])
def test_bad_data_named(data):
    with pytest.raises(ConfigError, match="normalizer.action"):
        FeatureNormalizer(8).fit(data, "action")
