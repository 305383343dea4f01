"""Checkpoint IO: a directory with `config.json` (policy type, config, metadata, versions) and
`model.safetensors` (every parameter and the normalisation stats). No pickle anywhere.

Every way a checkpoint can be wrong ends in one ConfigError naming the file and the problem, before a
policy with half-loaded weights can exist. `load_weights` is the hot-swap path of the running policy.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path

import safetensors
import safetensors.torch
import torch

from deploy.errors import ConfigError
from deploy.files import write_atomic
from deploy.policies.act import ACTPolicy
from deploy.policies.base import PolicyMetadata
from deploy.policies.flow import FlowPolicy
from deploy.policies.learned import LearnedPolicy

FORMAT_VERSION = 1
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
POLICY_TYPES: dict[str, type[LearnedPolicy]] = {"act": ACTPolicy, "flow": FlowPolicy}
CONFIG_KEYS = ("format_version", "policy_type", "weight_version", "metadata", "config")


def save_checkpoint(policy: LearnedPolicy, path: str | os.PathLike, weight_version: str) -> Path:
    """Write `path/config.json` and `path/model.safetensors` (each atomically: temp file + rename)."""
    policy_type = next((name for name, cls in POLICY_TYPES.items() if type(policy) is cls), None)
    if policy_type is None:
        raise ConfigError(f"cannot save a {type(policy).__name__}: not one of {sorted(POLICY_TYPES)}")
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    with policy.weights_lock:
        tensors = {name: t.detach().contiguous().clone() for name, t in policy.state_dict().items()}
    write_atomic(path / WEIGHTS_FILE, safetensors.torch.save(tensors))
    document = {"format_version": FORMAT_VERSION, "policy_type": policy_type, "weight_version": weight_version,
                "metadata": dataclasses.asdict(policy.metadata), "config": dataclasses.asdict(policy.config)}
    write_atomic(path / CONFIG_FILE, json.dumps(document, indent=2).encode())
    return path


def load_checkpoint(path: str | os.PathLike, expected_action_space: str | None = None,
                    seed: int | None = None) -> LearnedPolicy:
    """Build the policy a checkpoint describes; `seed` overrides the stored sampling seed."""
    path = Path(path)
    if not path.is_dir():
        raise ConfigError(f"checkpoint '{path}': no such directory")
    for name in (CONFIG_FILE, WEIGHTS_FILE):
        if not (path / name).is_file():
            raise ConfigError(f"checkpoint '{path}': missing {name}")
    document = _read_config(path / CONFIG_FILE)
    policy_cls = POLICY_TYPES[document["policy_type"]]
    try:
        fields = dict(document["metadata"])
        fields.update({k: tuple(fields[k]) for k in ("image_keys", "image_size_hw", "state_keys") if k in fields})
        metadata = PolicyMetadata(**fields)
        config = policy_cls.config_class(**document["config"])
    except (ConfigError, TypeError, ValueError) as error:
        raise ConfigError(f"{path / CONFIG_FILE}: {error}") from error
    if expected_action_space is not None and metadata.action_space != expected_action_space:
        raise ConfigError(f"checkpoint '{path}' acts in '{metadata.action_space}' space but the robot expects "
                          f"'{expected_action_space}'")
    if seed is not None:
        config = dataclasses.replace(config, seed=seed)
    policy = policy_cls(config, metadata)
    policy.load_state_dict(_read_weights(path / WEIGHTS_FILE, (path / WEIGHTS_FILE).read_bytes(), policy))
    policy.weight_version = document["weight_version"]
    policy.reset()
    return policy


def load_weights(policy: LearnedPolicy, safetensors_path: str | os.PathLike,
                 expected_sha256: str | None = None) -> str:
    """Verify a weights file and swap it into `policy` between two inferences; all-or-nothing.

    -> the file's sha256, which becomes `policy.weight_version`. On any error the old weights stay.
    """
    safetensors_path = Path(safetensors_path)
    if not safetensors_path.is_file():
        raise ConfigError(f"weights file '{safetensors_path}' does not exist")
    data = safetensors_path.read_bytes()  # read once: the hash and the tensors describe the same bytes
    digest = hashlib.sha256(data).hexdigest()
    if expected_sha256 is not None and digest != expected_sha256:
        raise ConfigError(f"{safetensors_path}: sha256 {digest} does not match the expected {expected_sha256}")
    tensors = _read_weights(safetensors_path, data, policy)
    with policy.weights_lock:
        policy.load_state_dict(tensors)  # validated above: names, shapes, dtypes all match, so this cannot fail
        policy.weight_version = digest
    return digest


def weights_sha256(path: str | os.PathLike) -> str:
    """Hex sha256 of a weights file: the version name of the weights it holds."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _read_config(config_path: Path) -> dict:
    try:
        document = json.loads(config_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ConfigError(f"{config_path}: not valid JSON ({error})") from error
    if not isinstance(document, dict):
        raise ConfigError(f"{config_path}: expected a JSON object, got {type(document).__name__}")
    missing = [key for key in CONFIG_KEYS if key not in document]
    if missing:
        raise ConfigError(f"{config_path}: missing {missing}")
    if document["format_version"] != FORMAT_VERSION:
        raise ConfigError(f"{config_path}: format_version {document['format_version']} is not supported "
                          f"(this package reads {FORMAT_VERSION})")
    if document["policy_type"] not in POLICY_TYPES:
        raise ConfigError(f"{config_path}: unknown policy type '{document['policy_type']}' "
                          f"(known: {', '.join(sorted(POLICY_TYPES))})")
    return document


def _read_weights(path: Path, data: bytes, policy: LearnedPolicy) -> dict[str, torch.Tensor]:
    """Parse and check safetensors bytes against `policy`'s parameters; ConfigError names the first problem."""
    try:
        tensors = safetensors.torch.load(data)
    except (safetensors.SafetensorError, ValueError) as error:
        raise ConfigError(f"{path}: corrupt or truncated safetensors file ({error})") from error
    expected = policy.state_dict()
    missing, unexpected = sorted(set(expected) - set(tensors)), sorted(set(tensors) - set(expected))
    if missing or unexpected:
        raise ConfigError(f"{path}: tensors missing {missing[:5]}{' ...' if len(missing) > 5 else ''}, "
                          f"unexpected {unexpected[:5]}{' ...' if len(unexpected) > 5 else ''}")
    for name, tensor in tensors.items():
        want = expected[name]
        if tensor.shape != want.shape:
            raise ConfigError(f"{path}: tensor '{name}' has shape {tuple(tensor.shape)} but the policy expects "
                              f"{tuple(want.shape)}")
        if tensor.dtype != want.dtype:
            raise ConfigError(f"{path}: tensor '{name}' has dtype {tensor.dtype} but the policy expects {want.dtype}")
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise ConfigError(f"{path}: tensor '{name}' contains NaN or inf")
    return tensors
