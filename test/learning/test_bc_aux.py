"""The auxiliary position loss of pixel BC (`deploy.learning.bc`): its head, the tap on the image encoder, its
gradient reaching the encoder only, and the config refusing what cannot work."""
import pytest
import torch

from deploy.errors import ConfigError
from deploy.learning.bc import AuxiliaryHead, BCConfig, image_features_tap
from deploy.policies.act import ACTConfig, ACTPolicy
from deploy.policies.base import PolicyMetadata

METADATA = PolicyMetadata(action_space="cartesian", dt_s=0.05, horizon=4, image_keys=("front", "wrist"),
                          image_size_hw=(16, 16), state_keys=("ee_pose", "gripper_width"))


def small_policy() -> ACTPolicy:
    return ACTPolicy(ACTConfig(d_model=16, n_heads=2, dim_feedforward=32, vision_channels=(4, 4), n_keypoints=4,
                               n_encoder_layers=1, n_decoder_layers=1, use_vae=False, dropout=0.0), METADATA)


def batch(b: int = 5) -> dict:
    generator = torch.Generator().manual_seed(0)
    state = torch.cat([torch.rand(b, 3, generator=generator), torch.tensor([[1.0, 0, 0, 0]]).expand(b, -1),
                       torch.rand(b, 1, generator=generator) * 0.04], dim=1)
    return {"images": torch.rand(b, 2, 3, 16, 16, generator=generator), "state": state,
            "actions": torch.rand(b, 4, 8, generator=generator)}


def test_the_head_standardises_its_targets_so_predicting_their_mean_costs_one_per_unit_variance():
    targets = torch.tensor([[0.5, -0.1, 0.02], [0.6, 0.1, 0.02], [0.55, 0.0, 0.03]])
    head = AuxiliaryHead(n_cameras=2, d_model=16, n_targets=3)
    head.fit(targets)
    assert torch.allclose(head.mean, targets.mean(0))
    for layer in (head.net[0], head.net[2]):  # a head that outputs exactly zero = the targets' mean
        torch.nn.init.zeros_(layer.weight)
        torch.nn.init.zeros_(layer.bias)
    loss = head.loss(torch.randn(3, 2, 16), targets)
    expected = (((targets - targets.mean(0)) / targets.std(0)) ** 2).mean()
    assert torch.isclose(loss, expected)
    assert 0.6 < loss.item() < 0.7  # (n - 1) / n of unit variance, n = 3


def test_the_tap_holds_the_image_features_of_the_last_loss_call_and_detaches_cleanly():
    policy = small_policy()
    policy.normalizer.fit(batch()["state"].numpy(), batch()["actions"].numpy())
    tap, handle = image_features_tap(policy)
    policy.loss(batch(5))
    assert tap["features"].shape == (5, 2, 16)  # (B, cameras, d_model)
    handle.remove()
    tap.clear()
    policy.loss(batch(3))
    assert tap == {}


def test_the_auxiliary_gradient_reaches_the_image_encoder_and_nothing_else():
    policy = small_policy()
    data = batch()
    policy.normalizer.fit(data["state"].numpy(), data["actions"].numpy())
    tap, handle = image_features_tap(policy)
    policy.loss(data)
    head = AuxiliaryHead(2, 16, 3)
    head.fit(torch.rand(5, 3))
    head.loss(tap["features"], torch.rand(5, 3)).backward()
    handle.remove()
    image_grads = [p.grad for p in policy.observation_encoder.images.parameters()]
    assert all(g is not None for g in image_grads) and sum(g.abs().sum() for g in image_grads) > 0
    others = [p for name, p in policy.named_parameters() if not name.startswith("observation_encoder.images.")]
    assert others and all(p.grad is None for p in others)


def test_a_few_steps_on_the_auxiliary_loss_alone_lower_it():
    torch.manual_seed(0)
    policy = small_policy()
    data = batch(16)
    policy.normalizer.fit(data["state"].numpy(), data["actions"].numpy())
    # the target is where the bright pixel is in the front image: a thing the encoder can see
    images = torch.zeros(16, 2, 3, 16, 16)
    where = torch.randint(2, 14, (16, 2))
    images[torch.arange(16), 0, :, where[:, 0], where[:, 1]] = 1.0
    data["images"] = images
    targets = where.float()
    head = AuxiliaryHead(2, 16, 2)
    head.fit(targets)
    tap, handle = image_features_tap(policy)
    optimizer = torch.optim.Adam([*policy.observation_encoder.images.parameters(), *head.parameters()], lr=3e-3)
    losses = []
    for _ in range(60):
        policy.loss(data)
        loss = head.loss(tap["features"], targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    handle.remove()
    assert sum(losses[-5:]) / 5 < 0.5 * sum(losses[:5]) / 5


@pytest.mark.parametrize("kwargs, message", [
    ({"aux_positions": ("cube_pos",)}, r"aux_positions \['cube_pos'\]: not state keys"),
    ({"aux_positions": ("cube_pose",), "cameras": ()}, r"aux_positions \['cube_pose'\] need cameras"),
    ({"aux_weight": -1.0}, r"aux_weight -1.0 must be >= 0"),
])
def test_the_config_refuses_an_auxiliary_target_that_cannot_work_naming_it(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        BCConfig(**kwargs)

