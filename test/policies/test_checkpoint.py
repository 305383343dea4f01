import json
import threading

import numpy as np
import pytest
import safetensors.torch
import torch

from deploy.errors import ConfigError
from deploy.policies.checkpoint import load_checkpoint, load_weights, save_checkpoint, weights_sha256

from policy_helpers import fit_normalizer, make, observation

KINDS = ["act", "flow"]


@pytest.fixture(params=KINDS)
def saved(request, tmp_path):
    """(policy, checkpoint dir) for each architecture, normaliser fitted."""
    policy = make(request.param, seed=5)
    fit_normalizer(policy)
    return policy, save_checkpoint(policy, tmp_path / "ckpt", weight_version="bc-v1")


def test_round_trip_is_bit_exact(saved):
    policy, path = saved
    loaded = load_checkpoint(path, expected_action_space="cartesian")
    assert loaded.weight_version == "bc-v1" and loaded.metadata == policy.metadata and loaded.config == policy.config
    assert torch.equal(loaded.normalizer.action.std, policy.normalizer.action.std)
    policy.reset()
    obs = observation()
    np.testing.assert_array_equal(loaded.predict_chunk(obs), policy.predict_chunk(obs))
    keys = safetensors.torch.load_file(path / "model.safetensors").keys()
    assert {"normalizer.action.mean", "normalizer.state.std"} <= set(keys)


def test_seed_override_changes_flow_noise_only(saved):
    policy, path = saved
    reseeded = load_checkpoint(path, seed=11)
    assert reseeded.config.seed == 11 and reseeded.weight_version == "bc-v1"
    for name, tensor in policy.state_dict().items():
        assert torch.equal(reseeded.state_dict()[name], tensor), name


def test_no_pickle_in_checkpoint(saved):
    _, path = saved
    assert sorted(p.name for p in path.iterdir()) == ["config.json", "model.safetensors"]
    json.loads((path / "config.json").read_text())


def rewrite_config(path, **changes):
    document = json.loads((path / "config.json").read_text())
    for key, value in changes.items():
        section, _, field = key.partition("__")
        if field:
            document[section][field] = value
        else:
            document[section] = value
    (path / "config.json").write_text(json.dumps(document))


def test_missing_directory(tmp_path):
    with pytest.raises(ConfigError, match="no such directory"):
        load_checkpoint(tmp_path / "nope")


@pytest.mark.parametrize("name", ["config.json", "model.safetensors"])
def test_missing_file(saved, name):
    _, path = saved
    (path / name).unlink()
    with pytest.raises(ConfigError, match=f"missing {name}"):
        load_checkpoint(path)


def test_bad_json(saved):
    _, path = saved
    (path / "config.json").write_text('{"policy_type": "act",')
    with pytest.raises(ConfigError, match="config.json: not valid JSON"):
        load_checkpoint(path)


@pytest.mark.parametrize("changes, match", [
    ({"policy_type": "diffusion"}, "unknown policy type 'diffusion'"),
    ({"format_version": 7}, "format_version 7"),
    ({"config__d_model": 33}, "d_model"),
    ({"config__warp_drive": True}, "warp_drive"),
    ({"metadata__action_space": "joint-ish"}, "action_space"),
])
def test_bad_config_named(saved, changes, match):
    _, path = saved
    rewrite_config(path, **changes)
    with pytest.raises(ConfigError, match=match):
        load_checkpoint(path)


def test_action_space_mismatch(saved):
    _, path = saved
    rewrite_config(path, metadata__action_space="joint")
    with pytest.raises(ConfigError, match="acts in 'joint' space but the robot expects 'cartesian'"):
        load_checkpoint(path, expected_action_space="cartesian")


def test_truncated_safetensors(saved):
    _, path = saved
    weights = path / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])
    with pytest.raises(ConfigError, match="corrupt or truncated"):
        load_checkpoint(path)


def edit_tensors(path, edit):
    tensors = safetensors.torch.load_file(path)
    edit(tensors)
    safetensors.torch.save_file(tensors, path)


def test_wrong_shape_tensor_named_with_both_shapes(saved):
    _, path = saved
    edit_tensors(path / "model.safetensors", lambda t: t.update({"action_head.weight" if "action_head.weight" in t
                 else "velocity_out.weight": torch.zeros(7, 32)}))
    with pytest.raises(ConfigError, match=r"tensor '(action_head|velocity_out)\.weight' has shape \(7, 32\) but "
                                          r"the policy expects \(8, 32\)"):
        load_checkpoint(path)


def test_missing_and_unexpected_tensors_named(saved):
    _, path = saved
    edit_tensors(path / "model.safetensors", lambda t: (t.pop("normalizer.action.mean"), t.update(extra=torch.ones(1))))
    with pytest.raises(ConfigError, match=r"missing \['normalizer.action.mean'\], unexpected \['extra'\]"):
        load_checkpoint(path)


def test_load_weights_swaps_and_returns_hash(saved, tmp_path):
    policy, _ = saved
    kind = "act" if type(policy).__name__ == "ACTPolicy" else "flow"
    donor = make(kind, seed=5)  # same sampling noise as `policy`, different weights:
    with torch.no_grad():
        for parameter in donor.parameters():
            parameter.add_(0.1 * torch.randn_like(parameter))
    fit_normalizer(donor, seed=1)
    new_path = save_checkpoint(donor, tmp_path / "new", "bc-v2") / "model.safetensors"
    obs = observation()
    policy.reset()
    before = policy.predict_chunk(obs)
    version = load_weights(policy, new_path, expected_sha256=weights_sha256(new_path))
    assert version == weights_sha256(new_path) == policy.weight_version and len(version) == 64
    policy.reset()
    after = policy.predict_chunk(obs)
    assert not np.allclose(after, before)
    np.testing.assert_array_equal(after, donor.predict_chunk(obs))


@pytest.mark.parametrize("damage", ["truncate", "shape", "nan", "missing", "hash"])
def test_bad_weights_leave_old_weights_working(saved, tmp_path, damage):
    policy, path = saved
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes((path / "model.safetensors").read_bytes())
    name = next(iter(safetensors.torch.load_file(bad)))
    if damage == "truncate":
        bad.write_bytes(bad.read_bytes()[:-10])
    elif damage == "shape":
        edit_tensors(bad, lambda t: t.update({name: torch.zeros(3)}))
    elif damage == "nan":
        edit_tensors(bad, lambda t: t[name].view(-1).__setitem__(0, float("nan")))
    elif damage != "hash":
        bad.unlink()
    policy.reset()
    obs = observation()
    before = policy.predict_chunk(obs)
    with pytest.raises(ConfigError):
        load_weights(policy, bad, expected_sha256="0" * 64 if damage == "hash" else None)
    policy.reset()
    np.testing.assert_array_equal(policy.predict_chunk(obs), before)
    assert policy.weight_version == "init"


def test_swap_during_inference_gives_old_or_new_chunks_never_a_mix(tmp_path):
    old, new = make("act", seed=1), make("act", seed=2)
    new_path = save_checkpoint(new, tmp_path / "new", "v2") / "model.safetensors"
    obs = observation()
    expected = [old.predict_chunk(obs), new.predict_chunk(obs)]
    chunks, stop = [], threading.Event()

    def infer():
        while not stop.is_set():
            chunks.append(old.predict_chunk(obs))

    worker = threading.Thread(target=infer)
    worker.start()
    for _ in range(3):
        load_weights(old, new_path)
    stop.set()
    worker.join()
    assert chunks and all(any(np.array_equal(c, e) for e in expected) for c in chunks)
