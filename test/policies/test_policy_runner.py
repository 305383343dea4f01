"""The policy runner without ROS: chunks stamped with the observation they came from, skips with their reason,
the worker started by a trigger and the next reference sample, the RTC prefix, and weight swaps that keep the
old weights when the new file is bad. A fake clock drives it; chunks are caught by the publish callback."""
import logging
import threading
import time

import numpy as np
import pytest
import torch

from deploy.errors import ConfigError
from deploy.policies.base import Policy, PolicyMetadata, make_policy, register
from deploy.policies.checkpoint import load_checkpoint, weights_sha256
from deploy.policies.runner import OK, WARN, PolicyRunner, PolicyRunnerConfig
from deploy.policies.runtime import write_random_checkpoint
from deploy.sensing.observation import Observation

POSE = np.array([0.45, 0.0, 0.25, 1.0, 0.0, 0.0, 0.0])
TINY = dict(d_model=32, n_heads=2, dim_feedforward=64, n_encoder_layers=1, n_decoder_layers=1,
            n_vae_encoder_layers=1)


@register("test_time_line")
class TimeLinePolicy(Policy):
    """x of each point = its absolute time, so a resampled prefix is exact; records the prefixes it was given.
    Raises on a call after `fail_calls` is set, to stand for a failing model."""

    def __init__(self):
        self.metadata = PolicyMetadata(action_space="cartesian", dt_s=0.1, horizon=8)
        self.prefixes, self.resets, self.fail_calls = [], 0, False

    def reset(self):
        self.resets += 1

    def predict_chunk(self, observation, committed_prefix=None):
        if self.fail_calls:
            raise RuntimeError("model exploded")
        self.prefixes.append(committed_prefix)
        actions = np.tile([0.0, 0.0, 0.25, 1.0, 0.0, 0.0, 0.0, 0.04], (8, 1))
        actions[:, 0] = observation.stamp_s + 0.1 * np.arange(1, 9)
        return actions


class Outputs:
    """What the runner hands the node: chunks and announced weight versions."""

    def __init__(self):
        self.chunks, self.versions, self.published = [], [], threading.Event()

    def publish_chunk(self, chunk):
        self.chunks.append(chunk)
        self.published.set()
        return True


class FakeClock:
    """The node's clock [s], moved by the test."""

    def __init__(self, now_s: float = 10.0):
        self.now_s = now_s

    def __call__(self) -> float:
        return self.now_s


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
def start(clock):
    """-> (runner, outputs) for a config; every runner's worker is stopped at teardown."""
    runners = []

    def make(**config):
        outputs = Outputs()
        runner = PolicyRunner(PolicyRunnerConfig(**config), clock, logging.getLogger("policy runner test"),
                              outputs.publish_chunk, outputs.versions.append)
        runners.append(runner)
        return runner, outputs

    yield make
    for runner in runners:
        runner.close()


def wait_for(condition, timeout_s=10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def active(start, **config):
    runner, outputs = start(**config)
    runner.configure()
    runner.activate()
    return runner, outputs


def test_a_chunk_carries_the_reference_samples_stamp_and_the_weight_version(start):
    runner, outputs = active(start)  # the demo policy: scripted:circle, reads ee_pose
    runner.observe({"ee_pose": POSE}, stamp_s=9.95)
    assert runner.infer_once()
    chunk, = outputs.chunks
    assert chunk.stamp_s == 9.95 and chunk.weight_version == "scripted-circle"
    np.testing.assert_allclose(chunk.times_s, 0.05 * np.arange(1, 17))
    reference = make_policy("circle").predict_chunk(Observation(9.95, {"ee_pose": POSE}, {"ee_pose": 9.95}))
    np.testing.assert_array_equal(chunk.actions, reference)
    assert outputs.versions == ["scripted-circle"]


def test_missing_then_stale_input_is_skipped_with_the_reason_said_once(start, clock, caplog):
    runner, outputs = active(start)
    with caplog.at_level(logging.INFO):
        assert not runner.infer_once() and not runner.infer_once()
        assert runner.skipped == 2 and runner.last_reason == "missing: ee_pose"
        health = runner.health("active", clock())
        assert (health.level, health.message) == (WARN, "missing: ee_pose")
        assert health.values["skipped_observations"] == "2"
        runner.observe({"ee_pose": POSE}, stamp_s=9.5)  # 500 ms old, state_max_age_s is 100 ms
        assert not runner.infer_once() and runner.last_reason == "stale: ee_pose 500 ms old"
        runner.observe({"ee_pose": POSE}, stamp_s=9.99)
        assert runner.infer_once() and len(outputs.chunks) == 1
    assert [record.getMessage() for record in caplog.records] == [
        "not inferring: missing: ee_pose", "not inferring: stale: ee_pose 500 ms old", "inferring again"]
    health = runner.health("active", clock())
    assert (health.level, health.message, health.values["chunks"]) == (OK, "ok", "1")


def test_nothing_is_published_while_inactive(start):
    runner, outputs = start()
    runner.configure()
    runner.observe({"ee_pose": POSE}, stamp_s=9.99)
    assert not runner.infer_once()
    runner.activate()
    assert runner.infer_once()
    runner.deactivate()
    assert not runner.infer_once()
    assert len(outputs.chunks) == 1
    assert runner.health("inactive", 10.0).message == "inactive"


def test_the_worker_infers_on_the_first_reference_sample_after_a_rate_tick(start):
    runner, outputs = active(start)
    runner.on_rate_tick()  # arms: the next ee_pose sample starts an inference
    runner.observe({"ee_pose": POSE}, stamp_s=9.97)
    assert outputs.published.wait(timeout=10.0)
    assert outputs.chunks[0].stamp_s == 9.97
    assert runner.health("active", 10.0).values["receipt_to_publish_p50_ms"] == "0.0"  # fake clock: no time passed


def test_the_chunk_status_triggers_inference_once_the_chunk_is_half_executed(start):
    runner, outputs = active(start, trigger="executed_fraction", execute_fraction=0.5)
    runner.on_chunk_status({"lag_s": 0.01, "steps_remaining": 16.0, "exhausted": 0.0})  # none executed: wait
    runner.observe({"ee_pose": POSE}, stamp_s=9.96)
    runner.on_chunk_status({"lag_s": 0.01, "steps_remaining": 8.0, "exhausted": 0.0})  # half: armed
    runner.observe({"ee_pose": POSE}, stamp_s=9.98)
    assert outputs.published.wait(timeout=10.0)
    assert [chunk.stamp_s for chunk in outputs.chunks] == [9.98]


def test_a_failing_model_is_reported_and_the_worker_keeps_going(start):
    runner, outputs = active(start, checkpoint="scripted:test_time_line")
    runner.policy.fail_calls = True
    runner.on_rate_tick()
    runner.observe({"ee_pose": POSE}, stamp_s=9.99)
    assert wait_for(lambda: runner.skipped == 1)
    assert runner.last_reason == "inference failed: RuntimeError: model exploded"
    runner.policy.fail_calls = False
    runner.on_rate_tick()
    runner.observe({"ee_pose": POSE}, stamp_s=10.0)
    assert wait_for(lambda: runner.last_reason == "") and len(outputs.chunks) == 1


def test_the_rtc_prefix_is_the_previous_chunk_up_to_when_the_new_one_lands(start, clock):
    runner, outputs = active(start, checkpoint="scripted:test_time_line", state_max_age_s=1.0)
    policy = runner.policy
    policy.prefixes.clear()  # the warm-up inference's
    clock.now_s = 10.05
    runner.observe({"ee_pose": POSE}, stamp_s=10.0)
    assert runner.infer_once()  # previous chunk: x = 10.1 .. 10.8; stamp -> publish latency 50 ms
    clock.now_s = 10.42  # lands at ~10.47: the new grid's points 10.35 and 10.45 are committed
    runner.observe({"ee_pose": POSE}, stamp_s=10.25)
    assert runner.infer_once()
    first, second = policy.prefixes
    assert first is None
    np.testing.assert_allclose(second[:, 0], [10.35, 10.45])
    resets = policy.resets
    runner.on_intervention(True)
    runner.on_intervention(False)  # handed back: the policy restarts with no prefix from the stale chunk
    assert policy.resets == resets + 1
    assert runner.infer_once() and policy.prefixes[-1] is None


def test_no_rtc_prefix_when_turned_off(start):
    runner, _ = active(start, checkpoint="scripted:test_time_line", state_max_age_s=1.0, rtc_prefix=False)
    runner.policy.prefixes.clear()  # the warm-up inference's
    for stamp_s in (10.0, 10.25):
        runner.observe({"ee_pose": POSE}, stamp_s=stamp_s)
        assert runner.infer_once()
    assert runner.policy.prefixes == [None, None]


def test_a_bad_weights_file_is_refused_and_the_old_weights_keep_running(start, tmp_path):
    first, second = (write_random_checkpoint(tmp_path / name, "act", seed=seed, **TINY)
                     for name, seed in (("first", 1), ("second", 2)))
    v1, v2 = (weights_sha256(path / "model.safetensors") for path in (first, second))
    runner, outputs = active(start, checkpoint=str(first), torch_threads=torch.get_num_threads())  # leaves torch as is
    assert outputs.versions == [v1[:12]]
    samples = {"ee_pose": POSE, "gripper_width": np.array([0.04])}
    runner.observe(samples, stamp_s=9.99)
    assert runner.infer_once()

    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(b"not a safetensors file at all")
    accepted, reason = runner.change_parameters([("weights_path", str(corrupt))])
    assert not accepted and "corrupt or truncated" in reason and str(corrupt) in reason
    assert runner.config.weights_path == "" and runner.version == v1[:12] and outputs.versions == [v1[:12]]
    assert runner.infer_once()
    before, after_refusal = outputs.chunks
    assert after_refusal.weight_version == v1[:12]
    np.testing.assert_array_equal(after_refusal.actions, before.actions)

    assert runner.change_parameters([("weights_path", str(second / "model.safetensors"))]) == (True, "")
    assert outputs.versions == [v1[:12], v2[:12]]
    assert runner.infer_once()
    swapped = outputs.chunks[-1]
    assert swapped.weight_version == v2[:12]
    observation = Observation(9.99, samples, {key: 9.99 for key in samples})
    np.testing.assert_array_equal(swapped.actions, load_checkpoint(second, seed=0).predict_chunk(observation))


def test_weights_path_set_before_configure_is_verified_by_configure(start):
    runner, outputs = start()
    assert runner.reload("w.safetensors") == (False, "policy node is not configured: no policy to load weights "
                                                     "into")
    assert runner.change_parameters([("weights_path", "w.safetensors")]) == (True, "")
    assert runner.config.weights_path == "w.safetensors"
    with pytest.raises(ConfigError, match="the running policy \\(demo\\) is scripted and has no weights"):
        runner.configure()
    assert runner.policy is None and outputs.versions == []


def test_a_scripted_policy_refuses_weights_and_run_time_changes_of_startup_parameters(start):
    runner, outputs = active(start)
    assert runner.reload("") == (False, "weights_path is empty")
    assert runner.reload("w.safetensors") == (False, "weights_path 'w.safetensors': the running policy (demo) is "
                                                     "scripted and has no weights")
    assert runner.change_parameters([("seed", 3)]) == (False, "parameter 'seed' is read at startup only")
    assert runner.change_parameters([("seed", 0), ("use_sim_time", True)]) == (True, "")  # unchanged; not ours
    assert outputs.versions == ["scripted-circle"]
